//! Group chats across two nodes on Redis: create, messages, refer, depart, rejoin, and the
//! refusals that must change nothing.

use serde_json::{json, Value};

use redb::ReadableTableMetadata;
use webchat::{
    config::AuthMode,
    domain::{now_millis, GroupId, MsgId, UserId},
    groups::{GroupStore, RedisGroupStore},
    inbox::{
        claims::{SendState, STALE_AFTER_MS},
        send_claim_key, shared_body, shared_body_key, DedupeKey,
    },
    storage::{
        embedded::{internal, EmbeddedDb, INBOX, SHARED_BODIES},
        redis::{user_key, RedisHandles},
    },
};
use webchat_loadgen::client::{ClientOptions, SioClient};

use crate::helpers::*;

fn list(body: &Value) -> Vec<String> {
    let mut members: Vec<String> = serde_json::from_str(body.as_str().expect("Body is a string"))
        .expect("Body is a JSON list");
    members.sort();
    members
}

fn sorted(uids: &[&User]) -> Vec<String> {
    let mut v: Vec<String> = uids.iter().map(|u| u.uid.clone()).collect();
    v.sort();
    v
}

async fn a_group_spans_nodes_and_an_offline_member_gets_notify_then_messages_in_order_on(
    backend: Backend,
) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let dan = nodes[0].signup("dan").await;
    let mut a = nodes[0].connect(&alice).await;
    let mut b = nodes[1].connect(&bob).await;

    let ack = a
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!([bob.uid, dan.uid]).to_string()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let gid = ack["Group"]
        .as_str()
        .expect("Group in the create ack")
        .to_owned();
    assert!(gid.starts_with("group_"));
    let everyone = sorted(&[&alice, &bob, &dan]);
    for client in [&mut a, &mut b] {
        let notify = client.next_chat_acked().await;
        assert_eq!(notify.data["EvtType"], "notify");
        assert_eq!(notify.data["From"], gid.as_str());
        assert_eq!(notify.data["Originated"], alice.uid.as_str());
        assert_eq!(list(&notify.data["Body"]), everyone);
    }

    for i in 0..5 {
        let ack = a
            .chat(json!({"EvtType":"message","To":gid,"MsgID":format!("g{i}"),"Body":format!("hello {i}")}))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // Re-sending is acknowledged but not delivered twice.
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"g4","Body":"hello 4"}))
        .await;
    for i in 0..5 {
        let m = b.next_chat_acked().await;
        assert_eq!(m.data["EvtType"], "message");
        assert_eq!(m.data["From"], gid.as_str());
        assert_eq!(m.data["Originated"], alice.uid.as_str());
        assert_eq!(m.data["MsgID"], format!("g{i}"));
    }

    // Dan was offline for all of it.
    let mut d = nodes[1].connect(&dan).await;
    let notify = d.next_chat_acked().await;
    assert_eq!(notify.data["EvtType"], "notify");
    assert_eq!(list(&notify.data["Body"]), everyone);
    for i in 0..5 {
        assert_eq!(d.next_chat_acked().await.data["MsgID"], format!("g{i}"));
    }
    a.send(&dan.uid, "sentinel", "no duplicate before me").await;
    assert_eq!(d.next_chat_acked().await.data["MsgID"], "sentinel");
    // The sender got no copy of its own group messages in its inbox.
    bob_says_sentinel(&b, &alice).await;
    assert_eq!(a.next_chat_acked().await.data["MsgID"], "from-bob");
}

#[tokio::test]
async fn a_group_spans_nodes_and_an_offline_member_gets_notify_then_messages_in_order() {
    a_group_spans_nodes_and_an_offline_member_gets_notify_then_messages_in_order_on(Backend::Redis)
        .await;
}

#[tokio::test]
async fn a_group_spans_nodes_and_an_offline_member_gets_notify_then_messages_in_order_on_redis_cluster(
) {
    a_group_spans_nodes_and_an_offline_member_gets_notify_then_messages_in_order_on(
        Backend::RedisCluster,
    )
    .await;
}

async fn bob_says_sentinel(b: &TestClient, alice: &User) {
    b.send(&alice.uid, "from-bob", "x").await;
}

async fn refer_depart_and_rejoin_follow_the_contract_on(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let carol = nodes[0].signup("carol").await;
    let erin = nodes[0].signup("erin").await;
    let mallory = nodes[0].signup("mallory").await;
    let mut a = nodes[0].connect(&alice).await;
    let mut b = nodes[1].connect(&bob).await;
    let mut c = nodes[0].connect(&carol).await;
    let gid = format!("group_{}", unique("g"));
    let ack = a
        .chat(json!({"EvtType":"create","To":gid,"Body":json!([bob.uid, carol.uid]).to_string()}))
        .await;
    assert_eq!(ack["Group"], gid.as_str(), "{ack}");
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.next_chat_acked().await.data["EvtType"], "notify");
    }

    // Bob refers erin, who is offline: members hear `join`, erin gets `notify` later.
    let ack = b
        .chat(json!({"EvtType":"refer","To":gid,"Body":json!([erin.uid, carol.uid]).to_string()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    for client in [&mut a, &mut b, &mut c] {
        let join = client.next_chat_acked().await;
        assert_eq!(join.data["EvtType"], "join");
        assert_eq!(join.data["Originated"], bob.uid.as_str());
        assert_eq!(
            list(&join.data["Body"]),
            vec![erin.uid.clone()],
            "only the new member"
        );
    }
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"after-refer","Body":"welcome"}))
        .await;

    // Carol departs: every member, carol included, hears it; then carol gets nothing more.
    let ack = c.chat(json!({"EvtType":"depart","To":gid})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(c.next_chat_acked().await.data["MsgID"], "after-refer");
    let gone = c.next_chat_acked().await;
    assert_eq!(gone.data["EvtType"], "depart");
    assert_eq!(gone.data["Originated"], carol.uid.as_str());
    for client in [&mut a, &mut b] {
        let e = client.next_chat_acked().await;
        if e.data["MsgID"] == "after-refer" {
            assert_eq!(client.next_chat_acked().await.data["EvtType"], "depart");
        } else {
            assert_eq!(e.data["EvtType"], "depart");
        }
    }
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"after-depart","Body":"bye"}))
        .await;
    a.send(&carol.uid, "direct", "only this").await;
    assert_eq!(
        c.next_chat_acked().await.data["MsgID"],
        "direct",
        "no group traffic after departing"
    );
    let refused = c
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"x","Body":"still here?"}))
        .await;
    assert_eq!(refused["error"]["code"], "forbidden");

    // Erin comes online: notify (full list, without carol), then the messages since.
    let mut e = nodes[1].connect(&erin).await;
    let notify = e.next_chat_acked().await;
    assert_eq!(notify.data["EvtType"], "notify");
    assert_eq!(
        list(&notify.data["Body"]),
        sorted(&[&alice, &bob, &carol, &erin]),
        "list when referred"
    );
    assert_eq!(e.next_chat_acked().await.data["MsgID"], "after-refer");
    assert_eq!(e.next_chat_acked().await.data["EvtType"], "depart");
    assert_eq!(e.next_chat_acked().await.data["MsgID"], "after-depart");

    // Rejoin: members get the current list; outsiders are refused and learn nothing.
    let ack = e.chat(json!({"EvtType":"rejoin","To":gid})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let current = e.next_chat_acked().await;
    assert_eq!(current.data["EvtType"], "notify");
    assert_eq!(list(&current.data["Body"]), sorted(&[&alice, &bob, &erin]));
    let m = nodes[0].connect(&mallory).await;
    for (event, code) in [
        (json!({"EvtType":"rejoin","To":gid}), "forbidden"),
        (
            json!({"EvtType":"refer","To":gid,"Body":json!([mallory.uid]).to_string()}),
            "forbidden",
        ),
        (json!({"EvtType":"depart","To":gid}), "forbidden"),
        (
            json!({"EvtType":"message","To":gid,"MsgID":"m","Body":"hi"}),
            "forbidden",
        ),
        (
            json!({"EvtType":"message","To":"group_nosuchgroup","MsgID":"m","Body":"hi"}),
            "not_found",
        ),
        (
            json!({"EvtType":"create","To":"","Body":"[]"}),
            "bad_request",
        ),
        (
            json!({"EvtType":"create","To":"","Body":json!([unique("ghost")]).to_string()}),
            "not_found",
        ),
        (
            json!({"EvtType":"create","To":gid,"Body":json!([alice.uid]).to_string()}),
            "bad_request",
        ),
    ] {
        let ack = m.chat(event.clone()).await;
        assert_eq!(ack["error"]["code"], code, "{event} → {ack}");
    }
    // None of that changed the group.
    let again = e.chat(json!({"EvtType":"rejoin","To":gid})).await;
    assert_eq!(again["ok"], true);
    assert_eq!(
        list(&e.next_chat_acked().await.data["Body"]),
        sorted(&[&alice, &bob, &erin])
    );
}

#[tokio::test]
async fn refer_depart_and_rejoin_follow_the_contract() {
    refer_depart_and_rejoin_follow_the_contract_on(Backend::Redis).await;
}

#[tokio::test]
async fn refer_depart_and_rejoin_follow_the_contract_on_redis_cluster() {
    refer_depart_and_rejoin_follow_the_contract_on(Backend::RedisCluster).await;
}

#[tokio::test]
async fn the_last_member_leaving_deletes_the_group_and_the_size_limit_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.max_group_size = 3;
    let app = spawn_with(s).await;
    let users = [
        app.signup("u0").await,
        app.signup("u1").await,
        app.signup("u2").await,
        app.signup("u3").await,
    ];
    let c = app.connect(&users[0]).await;
    let too_big = c
        .chat(json!({"EvtType":"create","To":"","Body":json!([users[1].uid, users[2].uid, users[3].uid]).to_string()}))
        .await;
    assert_eq!(too_big["error"]["code"], "bad_request", "{too_big}");
    let ack = c
        .chat(json!({"EvtType":"create","To":"","Body":json!([users[1].uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    let c1 = app.connect(&users[1]).await;
    assert_eq!(
        c.chat(json!({"EvtType":"depart","To":gid})).await["ok"],
        true
    );
    assert_eq!(
        c1.chat(json!({"EvtType":"depart","To":gid})).await["ok"],
        true
    );
    let gone = c.chat(json!({"EvtType":"rejoin","To":gid})).await;
    assert_eq!(gone["error"]["code"], "not_found", "{gone}");
}

async fn group_receipts_count_each_member_once_and_never_below_zero_on(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let members = [
        nodes[0].signup("bob").await,
        nodes[0].signup("carol").await,
        nodes[0].signup("dan").await,
    ];
    let outsider = nodes[0].signup("eve").await;
    let mut a = nodes[0].connect(&alice).await;
    let ack = a
        .chat(json!({"EvtType":"create","To":"","Body":json!(members.iter().map(|m| &m.uid).collect::<Vec<_>>()).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    assert_eq!(a.next_chat_acked().await.data["EvtType"], "notify");
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"r1","Body":"read me"}))
        .await;

    let mut clients = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let mut c = nodes[i % 2].connect(m).await;
        assert_eq!(c.next_chat_acked().await.data["EvtType"], "notify");
        let msg = c.next_chat_acked().await;
        assert_eq!(msg.data["MsgID"], "r1");
        clients.push((c, msg.data["Seq"].as_u64().expect("seq")));
    }
    let receipt = |kind: &str, seq: u64| json!({"EvtType": kind, "From": gid, "To": alice.uid, "MsgID": "r1", "Seq": seq});
    // (who, kind, Unread the sender then sees); a repeated display is not forwarded again.
    let steps = [
        (0, "delivery", 3),
        (0, "display", 2),
        (0, "display", 2),
        (1, "display", 1),
        (2, "delivery", 1),
        (2, "display", 0),
        (2, "display", 0),
    ];
    let mut last_forwarded: Option<(String, String)> = None;
    for (who, kind, unread) in steps {
        let (client, seq) = &clients[who];
        let ack = client.chat(receipt(kind, *seq)).await;
        assert_eq!(ack["ok"], true, "{ack}");
        let key = (members[who].uid.clone(), kind.to_owned());
        if last_forwarded.as_ref() == Some(&key) {
            continue; // the duplicate: nothing new reaches alice
        }
        last_forwarded = Some(key);
        let got = a.next_chat_acked().await;
        assert_eq!(got.data["EvtType"], kind);
        assert_eq!(got.data["From"], gid.as_str());
        assert_eq!(got.data["Originated"], members[who].uid.as_str());
        assert_eq!(got.data["MsgID"], "r1");
        assert_eq!(
            got.data["Unread"], unread,
            "after {} {kind}",
            members[who].uid
        );
    }
    let e = nodes[0].connect(&outsider).await;
    let refused = e.chat(receipt("display", 1)).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
}

#[tokio::test]
async fn group_receipts_count_each_member_once_and_never_below_zero() {
    group_receipts_count_each_member_once_and_never_below_zero_on(Backend::Redis).await;
}

#[tokio::test]
async fn group_receipts_count_each_member_once_and_never_below_zero_on_redis_cluster() {
    group_receipts_count_each_member_once_and_never_below_zero_on(Backend::RedisCluster).await;
}

#[tokio::test]
async fn a_one_to_one_delivery_after_the_display_reports_nothing_unread() {
    let app = spawn_app(Backend::Embedded).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let mut a = app.connect(&alice).await;
    let mut b = app.connect(&bob).await;
    a.send(&bob.uid, "m1", "hi").await;
    b.next_chat_acked().await;
    b.chat(json!({"EvtType":"display","To":alice.uid,"MsgID":"m1"}))
        .await;
    b.chat(json!({"EvtType":"delivery","To":alice.uid,"MsgID":"m1"}))
        .await;
    let display = a.next_chat_acked().await;
    assert_eq!(
        (
            display.data["EvtType"].as_str(),
            display.data["Unread"].as_u64()
        ),
        (Some("display"), Some(0))
    );
    let delivery = a.next_chat_acked().await;
    assert_eq!(
        (
            delivery.data["EvtType"].as_str(),
            delivery.data["Unread"].as_u64()
        ),
        (Some("delivery"), Some(0))
    );
}

async fn dormancy_then_restart(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(backend, dir.path().to_path_buf());
    s.group_idle_secs = 1;
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let mut a = app.connect(&alice).await;
    let ack = a
        .chat(json!({"EvtType":"create","To":"","Body":json!([bob.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    a.next_chat_acked().await; // notify
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"hot","Body":"x"}))
        .await;
    // Let the group go idle for longer than its idle time: this waits for time itself to
    // pass, the behaviour under test, not for another task.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    a.chat(json!({"EvtType":"message","To":gid,"MsgID":"cold","Body":"y"}))
        .await;

    let mut b = app.connect(&bob).await; // offline until now: nothing sent to a dormant group is lost
    let kinds: Vec<(String, String)> = [
        b.next_chat_acked().await,
        b.next_chat_acked().await,
        b.next_chat_acked().await,
        b.next_chat_acked().await,
    ]
    .iter()
    .map(|e| {
        (
            e.data["EvtType"].as_str().unwrap_or("").to_owned(),
            e.data["MsgID"].as_str().unwrap_or("").to_owned(),
        )
    })
    .collect();
    assert_eq!(kinds[0].0, "notify");
    assert_eq!(
        kinds[1],
        ("message".into(), "hot".into()),
        "no restart while the group is hot"
    );
    assert_eq!(
        kinds[2].0, "restart",
        "{backend:?}: restart before the first message after idling"
    );
    assert_eq!(kinds[3], ("message".into(), "cold".into()));
    let restart = a.next_chat_acked().await;
    assert_eq!(
        restart.data["EvtType"], "restart",
        "the sender is a member too"
    );
    assert_eq!(list(&restart.data["Body"]), sorted(&[&alice, &bob]));
}

#[tokio::test]
async fn a_dormant_group_restarts_on_its_next_message_embedded() {
    dormancy_then_restart(Backend::Embedded).await;
}

#[tokio::test]
async fn a_dormant_group_restarts_on_its_next_message_redis() {
    dormancy_then_restart(Backend::Redis).await;
}

#[tokio::test]
async fn a_dormant_group_restarts_on_its_next_message_redis_cluster() {
    dormancy_then_restart(Backend::RedisCluster).await;
}

#[tokio::test]
async fn a_member_list_larger_than_a_message_frame_is_read_and_answered() {
    let app = spawn_app(Backend::Embedded).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let a = app.connect(&alice).await;
    // 10,000 uids of 24 characters: a ~300 KB frame, over the 8 × Body + 4 KiB a message
    // needs and within the 1 MiB default frame limit. They are unknown, so the create is
    // refused, with an answer, on a connection that stays open.
    let mut members: Vec<String> = (0..10_000)
        .map(|i| format!("nobody-{i:05}-padpadpadpad"))
        .collect();
    members.push(bob.uid.clone());
    let ack = a
        .chat(json!({"EvtType": "create", "To": "", "Body": json!(members).to_string()}))
        .await;
    assert_eq!(ack["error"]["code"], "not_found", "{ack}");
    let ack = a
        .send(&bob.uid, "still-here", "the socket is still open")
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
}

/// Breaks `user`'s Seq counter, so that Redis refuses their appends; returns what it held,
/// for [`repair_seq`].
async fn break_seq(backend: Backend, user: &User) -> String {
    let seq_key = user_key(&user.uid, "seq");
    let held = redis_cli(backend, &["GET", &seq_key]).await;
    redis_cli(backend, &["SET", &seq_key, "not a number"]).await;
    held
}

async fn repair_seq(backend: Backend, user: &User, held: &str) {
    redis_cli(backend, &["SET", &user_key(&user.uid, "seq"), held]).await;
}

/// `ack` is the `unavailable` of a group send that missed `how_many` (say "1 of 2 members").
fn assert_not_everyone_got_it(ack: &Value, how_many: &str) {
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    let expected = format!("{how_many} did not get the message");
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&expected)),
        "{ack}"
    );
}

/// A new group of alice (online on node 0), bob (online on node 1) and carol (offline),
/// on two Redis nodes; alice and bob have taken their `notify`.
struct ThreeMembers {
    nodes: Vec<TestApp>,
    alice: User,
    bob: User,
    carol: User,
    a: TestClient,
    b: TestClient,
    gid: String,
}

async fn three_members_on_two_nodes() -> ThreeMembers {
    let nodes = spawn_nodes(Backend::Redis, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let carol = nodes[0].signup("carol").await;
    let mut a = nodes[0].connect(&alice).await;
    let mut b = nodes[1].connect(&bob).await;
    let ack = a
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!([bob.uid, carol.uid]).to_string()}))
        .await;
    let gid = ack["Group"]
        .as_str()
        .expect("Group in the create ack")
        .to_owned();
    for client in [&mut a, &mut b] {
        assert_eq!(client.next_chat_acked().await.data["EvtType"], "notify");
    }
    ThreeMembers {
        nodes,
        alice,
        bob,
        carol,
        a,
        b,
        gid,
    }
}

#[tokio::test]
async fn a_group_message_keeps_one_claim_and_a_partial_send_is_completed_without_duplicates() {
    let backend = Backend::Redis;
    let ThreeMembers {
        nodes,
        alice,
        bob,
        carol,
        a,
        mut b,
        gid,
    } = three_members_on_two_nodes().await;

    // One record of the send, under the sender; no key per recipient.
    let ack = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"one"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(b.next_chat_acked().await.data["MsgID"], "g1");
    for member in [&bob, &carol] {
        let keys = redis_cli(backend, &["KEYS", &user_key(&member.uid, "dd:*")]).await;
        assert_eq!(keys, "", "idempotency keys in {}'s slot", member.uid);
    }
    let claims = redis_cli(backend, &["KEYS", &user_key(&alice.uid, "sc:*")]).await;
    assert_eq!(claims.lines().count(), 1, "one claim per send: {claims:?}");

    // Carol's Seq counter is broken, so her append fails and only bob gets the message (bob's
    // append, queued first, shares its script call with hers: it stays stored, and is not
    // stored again by the re-send).
    let carol_seq = break_seq(backend, &carol).await;
    let partial = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g2","Body":"two"}))
        .await;
    assert_not_everyone_got_it(&partial, "1 of 2 members");
    let first = b.next_chat_acked().await;
    assert_eq!(first.data["MsgID"], "g2");

    // Repaired, the re-send completes the send for carol alone, with the first SentAt.
    repair_seq(backend, &carol, &carol_seq).await;
    let completed = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g2","Body":"two"}))
        .await;
    assert_eq!(completed["ok"], true, "{completed}");
    assert_eq!(completed["SentAt"], first.data["SentAt"], "{completed}");
    // Delivered now: another re-send is acked again and reaches no one.
    let again = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g2","Body":"two"}))
        .await;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["SentAt"], first.data["SentAt"], "{again}");
    let ack = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g3","Body":"three"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        b.next_chat_acked().await.data["MsgID"],
        "g3",
        "bob got g2 once"
    );

    let mut c = nodes[1].connect(&carol).await;
    let mut replayed = Vec::new();
    for _ in 0..4 {
        let event = c.next_chat_acked().await;
        replayed.push((
            event.data["EvtType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            event.data["MsgID"].as_str().unwrap_or_default().to_owned(),
            event.data["SentAt"].clone(),
        ));
    }
    let kinds: Vec<(&str, &str)> = replayed
        .iter()
        .map(|(t, m, _)| (t.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("notify", "c1"),
            ("message", "g1"),
            ("message", "g2"),
            ("message", "g3")
        ]
    );
    assert_eq!(
        replayed[2].2, first.data["SentAt"],
        "carol's g2 has the first SentAt"
    );
    a.send(&carol.uid, "sentinel", "no duplicate before me")
        .await;
    assert_eq!(c.next_chat_acked().await.data["MsgID"], "sentinel");
}

#[tokio::test]
async fn a_group_send_refused_for_everyone_leaves_no_claim_and_its_re_send_is_a_first_send() {
    let backend = Backend::Redis;
    let nodes = spawn_nodes(backend, 1).await;
    let alice = nodes[0].signup("alice").await;
    let carol = nodes[0].signup("carol").await;
    let mut a = nodes[0].connect(&alice).await;
    let ack = a
        .chat(
            json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!([carol.uid]).to_string()}),
        )
        .await;
    let gid = ack["Group"]
        .as_str()
        .expect("Group in the create ack")
        .to_owned();
    assert_eq!(a.next_chat_acked().await.data["EvtType"], "notify");

    let carol_seq = break_seq(backend, &carol).await;
    let refused = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"one"}))
        .await;
    assert_not_everyone_got_it(&refused, "1 of 1 members");
    // Surely stored nowhere: no record is kept, so the re-send is a first send again.
    let claims = redis_cli(backend, &["KEYS", &user_key(&alice.uid, "sc:*")]).await;
    assert_eq!(claims, "", "a send that stored nothing keeps no claim");

    repair_seq(backend, &carol, &carol_seq).await;
    let ack = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"one"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let claims = redis_cli(backend, &["KEYS", &user_key(&alice.uid, "sc:*")]).await;
    assert_eq!(claims.lines().count(), 1, "{claims:?}");
    let mut c = nodes[0].connect(&carol).await;
    assert_eq!(c.next_chat_acked().await.data["EvtType"], "notify");
    let message = c.next_chat_acked().await;
    assert_eq!(message.data["MsgID"], "g1");
    assert_eq!(message.data["SentAt"], ack["SentAt"]);
    a.send(&carol.uid, "sentinel", "no duplicate before me")
        .await;
    assert_eq!(c.next_chat_acked().await.data["MsgID"], "sentinel");
}

/// Connects to `url` in open auth mode as `uid` (`join` with the bare uid).
async fn join_open(url: &str, uid: &str) -> TestClient {
    let (client, events) = SioClient::connect(url, None, ClientOptions::default())
        .await
        .expect("connect");
    let ack = client
        .emit_with_ack("join", &json!(uid), PATIENCE)
        .await
        .expect("join acked");
    assert_eq!(ack["ok"], true, "{ack}");
    TestClient {
        client,
        events,
        uid: uid.to_owned(),
    }
}

/// A `notify` as a client must see it: the whole member list as Body, no internal fields.
fn assert_notify_lists(event: &Value, expected: &[String]) {
    assert_eq!(event["EvtType"], "notify", "{event}");
    assert_eq!(list(&event["Body"]), expected);
    assert!(
        event.get("BodyRef").is_none(),
        "an internal field reached a client"
    );
}

async fn a_member_list_for_every_member_is_stored_once_on(backend: Backend) {
    // Open mode: members need no accounts, so the list can be long (over the size from which
    // bodies are shared) without signing up hundreds of users. On Redis: node 0 for alice,
    // node 1 for bob, and two nodes no member used before, which read the body from the
    // store, not from their cache. The embedded store is one node's alone.
    let node_count = if matches!(backend, Backend::Embedded) {
        1
    } else {
        4
    };
    let dirs: Vec<_> = (0..node_count)
        .map(|_| tempfile::tempdir().expect("dir"))
        .collect();
    let mut nodes = Vec::new();
    for dir in &dirs {
        let mut s = settings(backend, dir.path().to_path_buf());
        s.auth = AuthMode::Open;
        nodes.push(spawn_with(s).await);
    }
    let url = |i: usize| nodes[i.min(node_count - 1)].url.clone();
    let (alice, bob, carol) = (unique("alice"), unique("bob"), unique("carol"));
    let mut members: Vec<String> = (0..1_000).map(|i| unique(&format!("m{i}"))).collect();
    let (dave, erin) = (members[0].clone(), members[1].clone());
    members.extend([bob.clone(), carol.clone()]);
    let mut expected = members.clone();
    expected.push(alice.clone());
    expected.sort();
    let list_json = json!(expected).to_string();
    assert!(shared_body::worth_sharing(&list_json, expected.len()));

    let mut a = join_open(&url(0), &alice).await;
    let mut b = join_open(&url(1), &bob).await;
    let ack = a
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!(members).to_string()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let gid = ack["Group"].as_str().expect("Group").to_owned();
    for client in [&mut a, &mut b] {
        assert_notify_lists(&client.next_chat_acked().await.data, &expected);
    }

    // Offline during the create, carol reads the whole list from her inbox.
    let mut c = join_open(&url(2), &carol).await;
    assert_notify_lists(&c.next_chat_acked().await.data, &expected);
    assert_eq!(
        nodes[0].metric("webchat_shared_bodies_stored_total").await,
        1
    );

    if matches!(backend, Backend::Embedded) {
        let dir = nodes.pop().expect("node").stop().await;
        let (bodies, entry) = EmbeddedDb::open(&dir)
            .expect("db")
            .read(move |txn| {
                let bodies = txn.open_table(SHARED_BODIES).map_err(internal)?;
                let inbox = txn.open_table(INBOX).map_err(internal)?;
                let entry = inbox
                    .get((dave.as_str(), 1))
                    .map_err(internal)?
                    .map(|e| e.value().to_vec());
                Ok((bodies.len().map_err(internal)?, entry))
            })
            .await
            .expect("read");
        assert_eq!(bodies, 1, "the list, stored once");
        let entry: Value =
            serde_json::from_slice(&entry.expect("dave's notify")).expect("stored JSON");
        assert_eq!(entry["Body"], "", "{entry}");
        assert!(entry["BodyRef"].is_string(), "{entry}");
        return;
    }

    // The members who never connected: each entry names one stored list instead of holding
    // a copy of it (read before anyone acks them: a confirm would drop them).
    let mut refs = Vec::new();
    for member in [&dave, &erin] {
        let entries = inbox_entries(backend, member).await;
        let [stored] = entries.as_slice() else {
            panic!("one entry in {member}'s inbox: {entries:?}");
        };
        assert_eq!(stored["Body"], "", "{stored}");
        refs.push(stored["BodyRef"].as_str().expect("BodyRef").to_owned());
    }
    assert_eq!(refs[0], refs[1], "one list for every member");
    let shared = redis_cli(backend, &["GET", &shared_body_key(&refs[0])]).await;
    assert_eq!(list(&json!(shared.trim())), expected);

    // Erin reads the list through a node that caches it, leaves without acking it, and
    // goes. Then the stored list is lost (say, on a Redis Cluster shard that failed over
    // before replicating it): it is rebuilt from the group's current members.
    let mut e = join_open(&url(2), &erin).await;
    assert_notify_lists(&e.next_chat().await.data, &expected);
    let ack = e
        .chat(json!({"EvtType":"depart","To":gid,"MsgID":"d1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    e.close().await;
    redis_cli(backend, &["DEL", &shared_body_key(&refs[0])]).await;
    let now: Vec<String> = expected.iter().filter(|m| **m != erin).cloned().collect();
    let mut d = join_open(&url(3), &dave).await;
    assert_notify_lists(&d.next_chat_acked().await.data, &now);
    assert_eq!(
        nodes[3].metric("webchat_shared_bodies_missing_total").await,
        1,
        "counted once for the node"
    );
    // Erin, no longer a member, is not shown who is in the group now: her replayed notify
    // lists nobody, and her depart follows.
    let mut e = join_open(&url(3), &erin).await;
    assert_notify_lists(&e.next_chat_acked().await.data, &[]);
    assert_eq!(e.next_chat_acked().await.data["EvtType"], "depart");
    assert_eq!(
        nodes[3].metric("webchat_shared_bodies_missing_total").await,
        1
    );
}

#[tokio::test]
async fn a_member_list_for_every_member_is_stored_once_redis() {
    a_member_list_for_every_member_is_stored_once_on(Backend::Redis).await;
}

#[tokio::test]
async fn a_member_list_for_every_member_is_stored_once_redis_cluster() {
    a_member_list_for_every_member_is_stored_once_on(Backend::RedisCluster).await;
}

#[tokio::test]
async fn a_member_list_for_every_member_is_stored_once_embedded() {
    a_member_list_for_every_member_is_stored_once_on(Backend::Embedded).await;
}

/// The stored forms of `user`'s inbox entries (Redis), as the append script wrote them.
async fn inbox_entries(backend: Backend, user: &str) -> Vec<Value> {
    let entries = redis_cli(backend, &["XRANGE", &user_key(user, "inbox"), "-", "+"]).await;
    entries
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|json| serde_json::from_str(json).expect("stored JSON"))
        .collect()
}

/// The Redis key of the claim of `sender`'s group message `msg_id` to `gid`.
fn claim_key(sender: &User, gid: &str, msg_id: &str) -> String {
    send_claim_key(&DedupeKey {
        sender: UserId::parse(&sender.uid).expect("uid"),
        kind: "message",
        msg_id: MsgId::parse(msg_id).expect("MsgID"),
        group: Some(GroupId::parse(gid).expect("gid")),
    })
}

#[tokio::test]
async fn a_send_left_sending_by_a_stopped_node_is_taken_over_and_reaches_everyone_once() {
    let backend = Backend::Redis;
    let ThreeMembers {
        nodes,
        alice,
        bob,
        carol,
        a,
        mut b,
        gid,
    } = three_members_on_two_nodes().await;

    // A node claimed g1 a minute ago and stopped before it stored anything: its claim is
    // still `sending`, past the staleness bound.
    let first_sent_at = now_millis() - STALE_AFTER_MS - 5_000;
    let abandoned = SendState::Sending {
        sent_at: first_sent_at,
        claimed_at: first_sent_at,
    };
    let key = claim_key(&alice, &gid, "g1");
    redis_cli(backend, &["SET", &key, &abandoned.encode(), "EX", "600"]).await;

    // The re-send takes it over: every member gets g1, with the first send's SentAt.
    let ack = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"one"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["SentAt"], first_sent_at, "{ack}");
    let got = b.next_chat_acked().await;
    assert_eq!(got.data["MsgID"], "g1");
    assert_eq!(got.data["SentAt"], first_sent_at);
    let recorded = redis_cli(backend, &["GET", &key]).await;
    assert_eq!(
        SendState::decode(recorded.trim()),
        Some(SendState::Delivered {
            sent_at: first_sent_at
        }),
        "the takeover records its end: {recorded:?}"
    );

    // Delivered now: a later re-send reaches no one.
    let again = a
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"one"}))
        .await;
    assert_eq!(again["SentAt"], first_sent_at, "{again}");
    a.send(&bob.uid, "sentinel", "no duplicate before me").await;
    assert_eq!(b.next_chat_acked().await.data["MsgID"], "sentinel");
    let mut c = nodes[1].connect(&carol).await;
    assert_eq!(c.next_chat_acked().await.data["EvtType"], "notify");
    let replayed = c.next_chat_acked().await;
    assert_eq!(replayed.data["MsgID"], "g1");
    assert_eq!(replayed.data["SentAt"], first_sent_at);
    a.send(&carol.uid, "sentinel", "no duplicate before me")
        .await;
    assert_eq!(c.next_chat_acked().await.data["MsgID"], "sentinel");
}

#[tokio::test]
async fn group_and_one_to_one_appends_batched_together_each_arrive_once_in_seq_order() {
    // A group message's members carry no idempotency key in the append script, a 1:1
    // message's receiver does: batches that mix both must still pair every event with its
    // own receiver's keys.
    let backend = Backend::Redis;
    let nodes = spawn_nodes(backend, 1).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let carol = nodes[0].signup("carol").await;
    let a = nodes[0].connect(&alice).await;
    let ack = a
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!([bob.uid, carol.uid]).to_string()}))
        .await;
    let gid = ack["Group"]
        .as_str()
        .expect("Group in the create ack")
        .to_owned();
    let mut senders = Vec::new();
    for i in 0..8 {
        let user = nodes[0].signup(&format!("s{i}")).await;
        senders.push(nodes[0].connect(&user).await);
    }
    const ROUNDS: usize = 6;
    let group_sends = async {
        for r in 0..ROUNDS {
            let ack = a
                .chat(json!({"EvtType":"message","To":gid,"MsgID":format!("g{r}"),"Body":"g"}))
                .await;
            assert_eq!(ack["ok"], true, "{ack}");
        }
    };
    let direct_sends = futures_util::future::join_all(senders.iter().enumerate().map(|(i, s)| {
        let (bob, carol) = (bob.uid.clone(), carol.uid.clone());
        async move {
            for r in 0..ROUNDS {
                for to in [&bob, &carol] {
                    let ack = s.send(to, &format!("d{i}-{r}"), "d").await;
                    assert_eq!(ack["ok"], true, "{ack}");
                }
            }
            // A re-send is not stored again.
            let ack = s.send(&bob, &format!("d{i}-0"), "d").await;
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }));
    tokio::join!(group_sends, direct_sends);

    let expected = ROUNDS + senders.len() * ROUNDS;
    for member in [&bob, &carol] {
        let mut m = nodes[0].connect(member).await;
        assert_eq!(m.next_chat_acked().await.data["EvtType"], "notify");
        let mut seqs = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..expected {
            let event = m.next_chat_acked().await;
            seqs.push(
                event.data["Seq"]
                    .as_u64()
                    .expect("a stored event has a Seq"),
            );
            let id = event.data["MsgID"].as_str().unwrap_or_default().to_owned();
            assert!(ids.insert(id.clone()), "{} got {id} twice", member.uid);
        }
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{}'s Seqs are consecutive: {seqs:?}",
            member.uid
        );
        a.send(&member.uid, "sentinel", "nothing more before me")
            .await;
        assert_eq!(m.next_chat_acked().await.data["MsgID"], "sentinel");
    }
}

async fn member_set_read_in_pages_is_whole_and_sorted_on(backend: Backend) {
    let url = match backend {
        Backend::RedisCluster => redis_cluster_url(),
        _ => redis_url(),
    };
    let pool = RedisHandles::connect(&url)
        .await
        .expect("connect to Redis")
        .pool;
    let whole = RedisGroupStore::new(pool.clone(), 60);
    let paged = RedisGroupStore::new(pool, 60).with_members_per_scan(16);
    let gid = GroupId::parse(&format!("group_{}", unique("pages"))).expect("gid");
    // Past Redis's compact set encodings (128 members), where a scan ignores COUNT.
    let members: Vec<UserId> = (0..600)
        .map(|i| UserId::parse(&format!("m{:04}-{}", 599 - i, unique("u"))).expect("uid"))
        .collect();
    assert!(whole.create(&gid, &members).await.expect("create"));
    let first_page = redis_cli(
        backend,
        &[
            "SSCAN",
            &user_key(gid.as_str(), "members"),
            "0",
            "COUNT",
            "16",
        ],
    )
    .await;
    assert_ne!(
        first_page.lines().next(),
        Some("0"),
        "one SSCAN page of 16 holds the whole set, so nothing here is read in pages: {first_page}"
    );
    let mut expected: Vec<String> = members.iter().map(UserId::to_string).collect();
    expected.sort();
    assert_eq!(
        whole.members(&gid).await.expect("read"),
        Some(expected.clone())
    );
    assert_eq!(
        paged.members(&gid).await.expect("paged read"),
        Some(expected)
    );
    let missing = GroupId::parse(&format!("group_{}", unique("none"))).expect("gid");
    assert_eq!(paged.members(&missing).await.expect("read"), None);
}

#[tokio::test]
async fn a_member_set_read_in_pages_is_whole_and_sorted() {
    member_set_read_in_pages_is_whole_and_sorted_on(Backend::Redis).await;
}

#[tokio::test]
async fn a_member_set_read_in_pages_is_whole_and_sorted_on_redis_cluster() {
    member_set_read_in_pages_is_whole_and_sorted_on(Backend::RedisCluster).await;
}
