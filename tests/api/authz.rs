//! Authorization: who may do what, over every socket EvtType and every REST route.
//!
//! Every refusal is checked twice: the error code the client sees, and that nothing changed
//! (no event reached anyone, no Seq was consumed, membership is the same, the real token
//! still works).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webchat::accounts::token::{Claims, TokenSigner};
use webchat_loadgen::client::ClientError;

use crate::helpers::*;

const SECRET: &str = "authz-test-token-secret";
const ADMIN: &str = "authz-admin-token";

async fn request(method: Method, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = http().request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(url: &str, token: &str) -> (StatusCode, Value) {
    request(Method::GET, url, Some(token)).await
}

/// A group's members as a member sees them, sorted.
async fn members(app: &TestApp, gid: &str, member: &User) -> Vec<String> {
    let (status, body) = get(&format!("{}/api/v1/groups/{gid}", app.url), &member.token).await;
    assert_eq!(status, 200, "{body}");
    let mut list: Vec<String> = body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("uid").to_owned())
        .collect();
    list.sort();
    list
}

fn sorted(uids: &[&User]) -> Vec<String> {
    let mut list: Vec<String> = uids.iter().map(|u| u.uid.clone()).collect();
    list.sort();
    list
}

/// `creator` makes a group with `others`; every member's socket has read (and acked) its
/// `notify`. Returns the gid.
async fn group(creator: &mut TestClient, others: &mut [&mut TestClient]) -> String {
    let uids: Vec<&str> = others.iter().map(|c| c.uid.as_str()).collect();
    let ack = creator
        .chat(json!({"EvtType": "create", "To": "", "Body": json!(uids).to_string()}))
        .await;
    let gid = ack["Group"]
        .as_str()
        .unwrap_or_else(|| panic!("{ack}"))
        .to_owned();
    for client in std::iter::once(creator).chain(others.iter_mut().map(|c| &mut **c)) {
        let notify = client.next_chat_acked().await;
        assert_eq!(notify.data["EvtType"], "notify", "{}", notify.data);
        assert_eq!(notify.data["From"], gid.as_str());
    }
    gid
}

fn seq(event: &webchat_loadgen::client::ServerEvent) -> u64 {
    event.data["Seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no Seq in {}", event.data))
}

/// Mallory puts Alice's uid in `From` and `Originated` of every EvtType; whoever receives the
/// result sees Mallory, and Alice's group membership is untouched by Mallory's `depart`.
#[tokio::test]
async fn impersonation_in_the_payload_is_ignored_for_every_evt_type() {
    let app = spawn_app(Backend::Embedded).await;
    let (alice, bob, mallory, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("mallory").await,
        app.signup("carol").await,
    );
    let mut ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let mut cm = app.connect(&mallory).await;
    let gid = group(&mut ca, &mut [&mut cb, &mut cm]).await;
    // Bob's message that Mallory's receipts below are about (a 1:1 receipt needs one).
    let ack = cb.send(&mallory.uid, "b1", "to mallory").await;
    assert_eq!(ack["ok"], true, "{ack}");
    let spoof = |mut event: Value| {
        event["From"] = json!(alice.uid);
        event["Originated"] = json!(alice.uid);
        event
    };

    // (what Mallory sends, its expected [EvtType, From, Originated] at Bob's socket)
    let cases: Vec<(Value, [&str; 3])> = vec![
        (
            json!({"EvtType": "message", "To": bob.uid, "MsgID": "i1", "Body": "hi"}),
            ["message", &mallory.uid, ""],
        ),
        (
            json!({"EvtType": "typing", "To": bob.uid, "Body": "1"}),
            ["typing", &mallory.uid, ""],
        ),
        (
            json!({"EvtType": "delivery", "To": bob.uid, "MsgID": "b1"}),
            ["delivery", &mallory.uid, ""],
        ),
        (
            json!({"EvtType": "display", "To": bob.uid, "MsgID": "b1"}),
            ["display", &mallory.uid, ""],
        ),
        (
            json!({"EvtType": "message", "To": gid, "MsgID": "i2", "Body": "hi all"}),
            ["message", &gid, &mallory.uid],
        ),
        (
            json!({"EvtType": "typing", "To": gid, "Body": "1"}),
            ["typing", &gid, &mallory.uid],
        ),
        (
            json!({"EvtType": "refer", "To": gid, "MsgID": "i3", "Body": [carol.uid]}),
            ["join", &gid, &mallory.uid],
        ),
        (
            json!({"EvtType": "depart", "To": gid, "MsgID": "i4"}),
            ["depart", &gid, &mallory.uid],
        ),
    ];
    for (event, [evt_type, from, originated]) in cases {
        let event = spoof(event);
        let ack = cm.chat(event.clone()).await;
        assert_eq!(ack["ok"], true, "{event}: {ack}");
        let got = cb.next_chat().await;
        if let Some(id) = got.ack_id {
            cb.client.ack(id).await.expect("ack");
        }
        assert_eq!(got.data["EvtType"], evt_type, "{event}: {}", got.data);
        assert_eq!(got.data["From"], from, "{event}: {}", got.data);
        assert_eq!(
            got.data["Originated"].as_str().unwrap_or(""),
            originated,
            "{event}: {}",
            got.data
        );
    }
    // Mallory's spoofed depart removed Mallory, not Alice.
    assert_eq!(
        members(&app, &gid, &bob).await,
        sorted(&[&alice, &bob, &carol])
    );

    // A group receipt names the group in From: the reader is still the session's user.
    let ack = cb
        .chat(spoof(
            json!({"EvtType": "message", "To": gid, "MsgID": "g9", "Body": "x"}),
        ))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = ca
        .chat(json!({"EvtType": "display", "From": gid, "Originated": carol.uid, "To": bob.uid, "MsgID": "g9"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let receipt = cb.next_chat_acked().await;
    assert_eq!(receipt.data["EvtType"], "display", "{}", receipt.data);
    assert_eq!(receipt.data["From"], gid.as_str());
    assert_eq!(receipt.data["Originated"], alice.uid.as_str());

    // `create` and `rejoin` with a spoofed From: the creator / asker is Mallory.
    let ack = cm
        .chat(spoof(
            json!({"EvtType": "create", "To": "", "Body": [bob.uid]}),
        ))
        .await;
    let made = ack["Group"].as_str().expect("gid").to_owned();
    let notify = cb.next_chat_acked().await;
    assert_eq!(notify.data["EvtType"], "notify");
    assert_eq!(notify.data["Originated"], mallory.uid.as_str());
    assert_eq!(members(&app, &made, &bob).await, sorted(&[&bob, &mallory]));
    let ack = cm
        .chat(spoof(json!({"EvtType": "rejoin", "To": made})))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Mallory (not Alice) gets the create's notify and then the rejoin's answer.
    let mut notifies = Vec::new();
    while notifies.len() < 2 {
        let got = cm.next_chat_acked().await;
        if got.data["EvtType"] == "notify" && got.data["From"] == made.as_str() {
            notifies.push(got.data);
        }
    }
    assert_eq!(
        notifies[1]["Originated"],
        mallory.uid.as_str(),
        "{}",
        notifies[1]
    );
    assert_eq!(notifies[1]["To"], mallory.uid.as_str(), "{}", notifies[1]);
    // Alice got neither the rejoin's notify nor anything of the group she is not in: her next
    // event is a sentinel.
    let ack = cb.send(&alice.uid, "sentinel", "s").await;
    assert_eq!(ack["ok"], true);
    loop {
        let got = ca.next_chat_acked().await;
        assert_ne!(got.data["From"], made.as_str(), "Alice got {}", got.data);
        if got.data["MsgID"] == "sentinel" {
            assert_eq!(got.data["From"], bob.uid.as_str());
            break;
        }
    }

    // `join` naming another uid: forbidden, and the socket is dropped.
    let ack = cm
        .client
        .emit_with_ack("join", &json!(alice.uid), PATIENCE)
        .await;
    match ack {
        Ok(ack) => assert_eq!(ack["error"]["code"], "forbidden", "{ack}"),
        Err(ClientError::Closed) => {}
        Err(e) => panic!("join as alice: {e}"),
    }
    let ended = tokio::time::timeout(PATIENCE, async {
        while cm.events.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the socket that joined as another user was not dropped"
    );
}

/// A non-member tries every group operation, with and without an ack callback: each is
/// refused with its code, nobody receives anything, no Seq is consumed, membership is
/// unchanged and the group's history and member list stay closed to the outsider.
/// A 1:1 receipt is accepted only from the reader the message was sent to, for a message the
/// named sender sent: anything else is `not_found`, forwards nothing and confirms nothing.
async fn one_to_one_receipts_only_from_the_messages_reader(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let mut ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let cc = app.connect(&carol).await;
    let ack = ca.send(&bob.uid, "m1", "for bob only").await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = cb.next_chat_acked().await;
    assert_eq!(got.data["MsgID"], "m1");
    let bobs_seq = seq(&got);
    // Carol and Alice exchange a message too, so both may message each other either way.
    let ack = ca.send(&carol.uid, "c1", "hi carol").await;
    assert_eq!(ack["ok"], true, "{ack}");

    for kind in ["delivery", "display"] {
        let refused = [
            // Carol was not sent m1 (Alice sent her c1, not m1).
            (
                &cc,
                json!({"EvtType": kind, "To": alice.uid, "MsgID": "m1"}),
            ),
            (
                &cc,
                json!({"EvtType": kind, "To": alice.uid, "MsgID": "m1", "Seq": 1}),
            ),
            // Bob got m1 from Alice, not from Carol; and no message "never" from Alice.
            (
                &cb,
                json!({"EvtType": kind, "To": carol.uid, "MsgID": "m1"}),
            ),
            (
                &cb,
                json!({"EvtType": kind, "To": alice.uid, "MsgID": "never"}),
            ),
            // Alice sent m1, she did not receive it.
            (&ca, json!({"EvtType": kind, "To": bob.uid, "MsgID": "m1"})),
        ];
        for (client, event) in refused {
            let ack = client.chat(event.clone()).await;
            assert_eq!(ack["error"]["code"], "not_found", "{event}: {ack}");
        }
    }
    // Redis: the marker that lets Bob send receipts for m1 is kept for the inbox age until
    // he displays m1, then only for the idempotency window.
    let marker = format!("wc:{{{}}}:to:{}:-:m1", alice.uid, bob.uid);
    let day = 24 * 3600;
    if let Backend::Redis = backend {
        assert!(
            redis_ttl(&marker).await > day,
            "{marker} kept for the inbox age"
        );
    }
    // Bob's own receipts go through; they are the first events Alice gets (nothing of the
    // refused ones was stored), with the Unread counts of Bob's receipts alone.
    for (kind, unread) in [("delivery", 1), ("display", 0)] {
        let ack = cb
            .chat(json!({"EvtType": kind, "To": alice.uid, "MsgID": "m1", "Seq": bobs_seq}))
            .await;
        assert_eq!(ack["ok"], true, "{kind}: {ack}");
        let receipt = ca.next_chat_acked().await;
        assert_eq!(
            (
                receipt.data["EvtType"].as_str(),
                receipt.data["From"].as_str(),
                receipt.data["MsgID"].as_str(),
                receipt.data["Unread"].as_u64()
            ),
            (Some(kind), Some(bob.uid.as_str()), Some("m1"), Some(unread)),
            "{}",
            receipt.data
        );
    }
    if let Backend::Redis = backend {
        let ttl = redis_ttl(&marker).await;
        assert!(0 < ttl && ttl <= day, "{marker}: TTL {ttl} once displayed");
    }
}

/// A key's TTL in the test Redis (seconds; negative when absent or without one).
async fn redis_ttl(key: &str) -> i64 {
    redis_integer(&["TTL", key]).await
}

#[tokio::test]
async fn one_to_one_receipts_only_from_the_messages_reader_embedded() {
    one_to_one_receipts_only_from_the_messages_reader(Backend::Embedded).await;
}

#[tokio::test]
async fn one_to_one_receipts_only_from_the_messages_reader_redis() {
    one_to_one_receipts_only_from_the_messages_reader(Backend::Redis).await;
}

#[tokio::test]
async fn non_members_are_refused_every_group_operation() {
    let app = spawn_app(Backend::Embedded).await;
    let (alice, bob, mallory, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("mallory").await,
        app.signup("carol").await,
    );
    let mut ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let mut cm = app.connect(&mallory).await;
    let mut cc = app.connect(&carol).await;
    let gid = group(&mut ca, &mut [&mut cb]).await;
    let ack = ca
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "g1", "Body": "members only"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let bob_seq = seq(&cb.next_chat_acked().await);
    let ghost_group = format!("group_{}", unique("none"));

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"EvtType": "message", "To": gid, "MsgID": "x1", "Body": "let me in"}),
            "forbidden",
        ),
        (
            json!({"EvtType": "typing", "To": gid, "Body": "1"}),
            "forbidden",
        ),
        (
            json!({"EvtType": "delivery", "From": gid, "To": alice.uid, "MsgID": "g1"}),
            "forbidden",
        ),
        (
            json!({"EvtType": "display", "From": gid, "To": alice.uid, "MsgID": "g1", "Seq": 1}),
            "forbidden",
        ),
        (
            json!({"EvtType": "refer", "To": gid, "MsgID": "x2", "Body": [mallory.uid]}),
            "forbidden",
        ),
        (
            json!({"EvtType": "refer", "To": gid, "MsgID": "x3", "Body": [carol.uid]}),
            "forbidden",
        ),
        (
            json!({"EvtType": "depart", "To": gid, "MsgID": "x4"}),
            "forbidden",
        ),
        (json!({"EvtType": "rejoin", "To": gid}), "forbidden"),
        // Re-creating an existing gid does not take it over.
        (
            json!({"EvtType": "create", "To": gid, "Body": [alice.uid, carol.uid]}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "To": ghost_group, "MsgID": "x5", "Body": "?"}),
            "not_found",
        ),
        (json!({"EvtType": "rejoin", "To": ghost_group}), "not_found"),
    ];
    for (event, code) in &cases {
        let ack = cm.chat(event.clone()).await;
        assert_eq!(ack["error"]["code"], *code, "{event}: {ack}");
        assert_ne!(ack["ok"], true);
        // Without an ack callback: an `error` event with the same code.
        cm.client.emit("chat", event).await.expect("emit");
        let error = cm.next_chat().await;
        assert_eq!(error.data["EvtType"], "error", "{event}: {}", error.data);
        let body: Value = serde_json::from_str(error.data["Body"].as_str().expect("body"))
            .expect("error body json");
        assert_eq!(body["code"], *code, "{event}: {body}");
    }

    // A member cannot address a group receipt to someone outside the group (it would land in
    // their inbox From the gid), nor to a uid nobody has.
    for to in [carol.uid.as_str(), "ghost-nobody-here"] {
        let receipt = json!({"EvtType": "delivery", "From": gid, "To": to, "MsgID": "g1"});
        let ack = cb.chat(receipt.clone()).await;
        assert_eq!(ack["error"]["code"], "not_found", "{receipt}: {ack}");
    }

    // Nothing changed: membership, and every inbox's next event is the sentinel right after
    // what it had (no Seq consumed by a refusal).
    assert_eq!(members(&app, &gid, &alice).await, sorted(&[&alice, &bob]));
    let ack = ca
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "after", "Body": "still ours"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let next = cb.next_chat_acked().await;
    assert_eq!(next.data["MsgID"], "after", "Bob got {}", next.data);
    assert_eq!(seq(&next), bob_seq + 1);
    for outsider in [&mut cm, &mut cc] {
        let uid = outsider.uid.clone();
        let ack = ca.send(&uid, "hello-outsider", "hi").await;
        assert_eq!(ack["ok"], true, "{ack}");
        let next = outsider.next_chat_acked().await;
        assert_eq!(
            next.data["MsgID"], "hello-outsider",
            "{uid} got {}",
            next.data
        );
        assert_eq!(seq(&next), 1, "{uid} had been sent something");
    }
    let ack = cb
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "b-after", "Body": "x"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let next = ca.next_chat_acked().await;
    assert_eq!(next.data["MsgID"], "b-after", "Alice got {}", next.data);

    // REST: the outsider can read neither the members nor the history.
    for path in [
        format!("/api/v1/groups/{gid}"),
        format!("/api/v1/conversations/{gid}/messages"),
    ] {
        let (status, body) = get(&format!("{}{path}", app.url), &mallory.token).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}: {body}");
        let (status, body) = get(&format!("{}{path}", app.url), &alice.token).await;
        assert_eq!(status, 200, "{path} as a member: {body}");
    }
    for path in [
        format!("/api/v1/groups/{ghost_group}"),
        format!("/api/v1/conversations/{ghost_group}/messages"),
    ] {
        let (status, body) = get(&format!("{}{path}", app.url), &mallory.token).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, body) = get(&format!("{}/api/v1/conversations", app.url), &mallory.token).await;
    assert_eq!(status, 200);
    assert!(
        !body["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|c| c["id"] == gid.as_str()),
        "the outsider's conversation list shows the group: {body}"
    );
    // A member who left loses access too.
    let ack = cb.chat(json!({"EvtType": "depart", "To": gid})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let (status, _) = get(&format!("{}/api/v1/groups/{gid}", app.url), &bob.token).await;
    assert_eq!(status, 403);
    let ack = cb
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "late", "Body": "x"}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
}

/// Another pair's messages cannot be read: a uid path is always the caller's own
/// conversation with that peer, and a cursor from someone else's page is refused.
#[tokio::test]
async fn nobody_reads_another_pairs_history() {
    let app = spawn_app(Backend::Embedded).await;
    let (alice, bob, mallory) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("mallory").await,
    );
    let ca = app.connect(&alice).await;
    let cb = app.connect(&bob).await;
    let cm = app.connect(&mallory).await;
    for i in 0..3 {
        assert_eq!(
            ca.send(&bob.uid, &format!("ab{i}"), "secret").await["ok"],
            true
        );
        assert_eq!(
            cb.send(&alice.uid, &format!("ba{i}"), "secret").await["ok"],
            true
        );
    }
    assert_eq!(cm.send(&alice.uid, "ma", "hi alice").await["ok"], true);
    let history = |user: &User, with: &str, query: &str| {
        let url = format!("{}/api/v1/conversations/{with}/messages?{query}", app.url);
        let token = user.token.clone();
        async move { get(&url, &token).await }
    };
    // The call log is written behind: wait for Alice's view to be complete.
    eventually("alice's history with bob", || async {
        let (_, body) = history(&alice, &bob.uid, "").await;
        body["items"].as_array().is_some_and(|i| i.len() == 6)
    })
    .await;
    eventually("mallory's history with alice", || async {
        let (_, body) = history(&mallory, &alice.uid, "").await;
        body["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    eventually("mallory's conversation list", || async {
        let (_, body) = get(&format!("{}/api/v1/conversations", app.url), &mallory.token).await;
        body["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;

    // Mallory naming Alice sees Mallory's conversation with Alice; naming Bob, nothing.
    let (status, body) = history(&mallory, &alice.uid, "").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["MsgID"].as_str().expect("MsgID"))
        .collect();
    assert_eq!(ids, ["ma"], "{body}");
    let (status, body) = history(&mallory, &bob.uid, "").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]), "{body}");
    let (_, body) = get(&format!("{}/api/v1/conversations", app.url), &mallory.token).await;
    let peers: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(peers, [alice.uid.as_str()], "{body}");

    // A cursor from Alice's page of her conversation with Bob is not Mallory's to use.
    let (_, page) = history(&alice, &bob.uid, "limit=2").await;
    let cursor = page["next"].as_str().expect("a next cursor").to_owned();
    for with in [&alice.uid, &bob.uid] {
        let (status, body) = history(&mallory, with, &format!("cursor={cursor}")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    // Paths that are neither a uid nor a gid.
    for with in ["..%2F..%2Fadmin", "bad%20uid", "group_", "%00"] {
        let (status, body) = history(&mallory, with, "").await;
        assert_eq!(status, 400, "{with}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{with}: {body}");
    }
    // And Alice's view is unchanged by all this.
    let (_, body) = history(&alice, &bob.uid, "").await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(6));
}

/// Every REST route and the socket refuse missing, malformed, tampered, foreign, expired
/// and revoked tokens with `unauthorized`; a refused logout revokes nothing; the admin API
/// takes only the admin token.
#[tokio::test]
async fn bad_tokens_are_refused_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.token_secret = Some(SECRET.into());
    s.admin_token = Some(ADMIN.into());
    let app = spawn_with(s).await;
    let (alice, bob, quitter) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("quitter").await,
    );
    let mut ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let gid = group(&mut ca, &mut [&mut cb]).await;

    let signer = TokenSigner::new(SECRET.as_bytes().to_vec());
    let now = chrono_now();
    let claims = |uid: &str, exp: i64| Claims {
        uid: uid.to_owned(),
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    // Positive control: a token made here with the node's key is accepted, so the refusals
    // below are for the reason each case names.
    let forged_ok = signer.sign(&claims(&alice.uid, now + 600));
    let (status, body) = get(&format!("{}/api/v1/conversations", app.url), &forged_ok).await;
    assert_eq!(status, 200, "{body}");

    let (payload, sig) = alice.token.split_once('.').expect("token shape");
    let flip = |s: &str, at: usize| {
        let mut chars: Vec<char> = s.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let bob_claims_payload = bob.token.split_once('.').expect("shape").0;
    let logout = request(
        Method::POST,
        &format!("{}/api/v1/logout", app.url),
        Some(&quitter.token),
    )
    .await;
    assert_eq!(logout.0, 204);

    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not-a-token".into())),
        ("no signature", Some(format!("{payload}."))),
        (
            "signature flipped mid-way",
            Some(format!("{payload}.{}", flip(sig, sig.len() / 2))),
        ),
        (
            "signature's last char flipped",
            Some(format!("{payload}.{}", flip(sig, sig.len() - 1))),
        ),
        (
            "claims flipped",
            Some(format!("{}.{sig}", flip(payload, 3))),
        ),
        (
            "bob's claims, alice's signature",
            Some(format!("{bob_claims_payload}.{sig}")),
        ),
        ("expired", Some(signer.sign(&claims(&alice.uid, now - 1)))),
        (
            "foreign key",
            Some(TokenSigner::new(b"another key".to_vec()).sign(&claims(&alice.uid, now + 600))),
        ),
        (
            "a gid as uid",
            Some(signer.sign(&claims("group_x", now + 600))),
        ),
        ("revoked", Some(quitter.token.clone())),
    ];
    let routes = [
        (Method::GET, "/api/v1/conversations".to_owned()),
        (
            Method::GET,
            format!("/api/v1/conversations/{}/messages", bob.uid),
        ),
        (Method::GET, format!("/api/v1/conversations/{gid}/messages")),
        (Method::GET, format!("/api/v1/groups/{gid}")),
        (Method::GET, "/api/v1/users?prefix=a".to_owned()),
        (Method::POST, "/api/v1/logout".to_owned()),
    ];
    for (what, token) in &bad_tokens {
        for (method, path) in &routes {
            let (status, body) = request(
                method.clone(),
                &format!("{}{path}", app.url),
                token.as_deref(),
            )
            .await;
            assert_eq!(status, 401, "{what} on {method} {path}: {body}");
            assert_eq!(
                body["error"]["code"], "unauthorized",
                "{what} on {path}: {body}"
            );
        }
        let user = User {
            uid: alice.uid.clone(),
            token: token.clone().unwrap_or_default(),
        };
        let refused = if token.is_some() {
            TestClient::try_connect(&app.url, &user, false).await
        } else {
            webchat_loadgen::client::SioClient::connect(&app.url, None, Default::default())
                .await
                .map(|(client, events)| TestClient {
                    client,
                    events,
                    uid: String::new(),
                })
        };
        match refused {
            Err(ClientError::ConnectError { message, .. }) => {
                assert_eq!(message, "unauthorized", "{what}")
            }
            Err(e) => panic!("{what}: socket refused oddly: {e}"),
            Ok(_) => panic!("{what}: socket accepted"),
        }
    }

    // Nothing changed: Alice's and Bob's real tokens still work (no refused logout revoked
    // them), and nobody received anything.
    for user in [&alice, &bob] {
        let (status, body) = get(&format!("{}/api/v1/conversations", app.url), &user.token).await;
        assert_eq!(status, 200, "{} after the refusals: {body}", user.uid);
    }
    assert_eq!(ca.send(&bob.uid, "after", "x").await["ok"], true);
    assert_eq!(cb.next_chat_acked().await.data["MsgID"], "after");

    // The admin API: only the admin token.
    let admin_url = format!("{}/api/v1/admin/calllogs?uid={}", app.url, alice.uid);
    for (what, token) in [
        ("no token", None),
        ("a user token", Some(alice.token.as_str())),
        (
            "the admin token with a flipped char",
            Some("authz-admin-tokeN"),
        ),
        ("a prefix of the admin token", Some("authz-admin")),
        (
            "the admin token twice",
            Some("authz-admin-tokenauthz-admin-token"),
        ),
    ] {
        let (status, body) = request(Method::GET, &admin_url, token).await;
        assert_eq!(status, 401, "admin with {what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    }
    let (status, body) = request(Method::GET, &admin_url, Some(ADMIN)).await;
    assert_eq!(status, 200, "admin with the admin token: {body}");

    // A node without an admin token configured refuses everyone, even a guess of "".
    let closed = spawn_app(Backend::Embedded).await;
    let user = closed.signup("user").await;
    let url = format!("{}/api/v1/admin/calllogs?uid={}", closed.url, user.uid);
    for token in [None, Some(""), Some(user.token.as_str()), Some(ADMIN)] {
        let (status, body) = request(Method::GET, &url, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

/// A token logged out on node A is refused by node B, on every route and on the socket;
/// the same user's other token keeps working.
#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_on_another() {
    let nodes = spawn_cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let login = http()
        .post(format!("{}/api/v1/login", b.url))
        .json(&json!({"uid": alice.uid, "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let second: Value = login.json().await.expect("json");
    let second = User {
        uid: alice.uid.clone(),
        token: second["token"].as_str().expect("token").to_owned(),
    };
    let routes = [
        (Method::GET, "/api/v1/conversations".to_owned()),
        (
            Method::GET,
            format!("/api/v1/conversations/{}/messages", bob.uid),
        ),
        (Method::GET, "/api/v1/users".to_owned()),
        (Method::POST, "/api/v1/logout".to_owned()),
    ];
    // Before: the token works on B.
    let (status, _) = get(&format!("{}/api/v1/conversations", b.url), &alice.token).await;
    assert_eq!(status, 200);
    b.connect(&alice).await.close().await;

    let (status, _) = request(
        Method::POST,
        &format!("{}/api/v1/logout", a.url),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 204);

    for node in [b, a] {
        for (method, path) in &routes {
            let (status, body) = request(
                method.clone(),
                &format!("{}{path}", node.url),
                Some(&alice.token),
            )
            .await;
            assert_eq!(
                status, 401,
                "revoked token on {} {method} {path}: {body}",
                node.url
            );
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        match TestClient::try_connect(&node.url, &alice, false).await {
            Err(ClientError::ConnectError { message, .. }) => assert_eq!(message, "unauthorized"),
            Err(e) => panic!("revoked token on {}: {e}", node.url),
            Ok(_) => panic!("revoked token accepted by the socket of {}", node.url),
        }
    }
    // Revocation is of that token only.
    let (status, _) = get(&format!("{}/api/v1/conversations", b.url), &second.token).await;
    assert_eq!(status, 200);
    let client = b.connect(&second).await;
    assert_eq!(client.send(&bob.uid, "still-me", "hi").await["ok"], true);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}
