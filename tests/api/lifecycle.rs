//! Message lifecycle (contract §11): replies, edits with versions, deletes and reactions,
//! on the embedded store and across two nodes on Redis and on Redis Cluster, with the call
//! log in each table back-end (embedded, Redis, Redis Cluster, DynamoDB Local). Each event
//! is delivered live and by replay in Seq order, copied to the actor's other tab, shown in
//! history and versions; refused events store nothing.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ADMIN: &str = "admin-secret-for-lifecycle";

/// A node on `backend` with the admin API on and, when given, DynamoDB as the call log.
async fn node(backend: Backend, dynamodb: Option<&str>, prefix: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(backend, dir.keep());
    s.admin_token = Some(ADMIN.into());
    s.dynamodb_endpoint = dynamodb.map(str::to_owned);
    s.table_prefix = prefix.to_owned();
    spawn_with(s).await
}

fn unique_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn assert_ok(ack: &Value, what: &str) {
    assert_eq!(ack["ok"], true, "{what}: {ack}");
}

fn assert_refused(ack: &Value, code: &str, what: &str) {
    assert_eq!(ack["error"]["code"], code, "{what}: {ack}");
}

/// The next non-presence event, acked; panics unless it is `evt_type` with `msg_id`.
async fn expect_next(client: &mut TestClient, evt_type: &str, msg_id: &str) -> Value {
    let event = client.next_chat_acked().await;
    assert_eq!(
        (event.data["EvtType"].as_str(), event.data["MsgID"].as_str()),
        (Some(evt_type), Some(msg_id)),
        "{}: expected {evt_type} {msg_id} next, got {}",
        client.uid,
        event.data
    );
    event.data
}

fn lifecycle(evt_type: &str, to: &str, msg_id: &str, reference: &str, body: &str) -> Value {
    json!({"EvtType": evt_type, "To": to, "MsgID": msg_id, "Ref": reference, "Body": body})
}

async fn get(url: &str, token: &str) -> (StatusCode, Value) {
    let res = http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `user`'s history with `with`, newest first.
async fn history(app: &TestApp, user: &User, with: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/conversations/{with}/messages?limit=200", app.url);
    let (status, body) = get(&url, &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("items").clone()
}

/// Waits until `user`'s history with `with` (the call log is written behind) satisfies
/// `done`, and returns it by MsgID.
async fn history_when(
    app: &TestApp,
    user: &User,
    with: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> (Vec<Value>, BTreeMap<String, Value>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let items = history(app, user, with).await;
        let by_id: BTreeMap<String, Value> = items
            .iter()
            .map(|i| (i["MsgID"].as_str().unwrap_or("").to_owned(), i.clone()))
            .collect();
        if done(&by_id) {
            return (items, by_id);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; history: {items:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn reactions(item: &Value) -> BTreeMap<String, Vec<String>> {
    serde_json::from_value(item["Reactions"].clone()).unwrap_or_else(|e| panic!("{e}: {item}"))
}

/// 1:1: every operation live (to the peer and the actor's other tab on the other node), by
/// replay in Seq order, idempotent, refused with the contract's codes storing nothing, and
/// shown in history, versions and the admin call log.
async fn one_to_one(a: &TestApp, b: &TestApp) {
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let carol = b.signup("carol").await;
    let mut ca = a.connect(&alice).await;
    let mut ca2 = b.connect(&alice).await;
    let mut cb = b.connect(&bob).await;

    assert_ok(&ca.send(&bob.uid, "m1", "helo").await, "m1");
    let m1 = expect_next(&mut cb, "message", "m1").await;
    expect_next(&mut ca2, "message", "m1").await;

    // A reply carries its Ref to the other side and to the replier's... (bob has one tab).
    let ack = cb
        .chat(json!({"EvtType":"message","To":alice.uid,"MsgID":"r1","Body":"hi you","Ref":"m1"}))
        .await;
    assert_ok(&ack, "reply");
    for tab in [&mut ca, &mut ca2] {
        let reply = expect_next(tab, "message", "r1").await;
        assert_eq!(reply["Ref"], "m1", "{reply}");
        assert_eq!(reply["From"], bob.uid.as_str());
    }

    // Edit: stored for bob with a Seq after the message; a live copy for alice's other tab.
    let edit = lifecycle("edit", &bob.uid, "e1", "m1", "hello");
    let first = ca.chat(edit.clone()).await;
    assert_ok(&first, "edit");
    let got = expect_next(&mut cb, "edit", "e1").await;
    assert_eq!(
        (got["Ref"].as_str(), got["Body"].as_str()),
        (Some("m1"), Some("hello"))
    );
    assert!(got["Seq"].as_u64() > m1["Seq"].as_u64(), "{got} after {m1}");
    assert_eq!(got["From"], alice.uid.as_str());
    let copy = expect_next(&mut ca2, "edit", "e1").await;
    assert_eq!(copy["Ref"], "m1");
    // A re-send is acked again with the first SentAt and delivered once (the next event
    // bob gets is the reaction's echo... of his own; see the marker below).
    let again = ca.chat(edit).await;
    assert_eq!(again["SentAt"], first["SentAt"], "{again}");

    let ack = cb
        .chat(lifecycle("react", &alice.uid, "x1", "m1", "👍"))
        .await;
    assert_ok(&ack, "react");
    for tab in [&mut ca, &mut ca2] {
        let react = expect_next(tab, "react", "x1").await;
        assert_eq!(
            (react["Ref"].as_str(), react["Body"].as_str()),
            (Some("m1"), Some("👍"))
        );
    }

    // Bob goes away; what happens meanwhile is replayed in Seq order when he is back.
    let held = b.connections().await;
    cb.close().await;
    b.wait_for_connections(held - 1).await;
    assert_ok(&ca.send(&bob.uid, "m2", "oops").await, "m2");
    assert_ok(
        &ca.chat(lifecycle("edit", &bob.uid, "e2", "m1", "hello!"))
            .await,
        "e2",
    );
    assert_ok(
        &ca.chat(lifecycle("delete", &bob.uid, "d1", "m2", "")).await,
        "d1",
    );
    assert_ok(
        &ca.chat(lifecycle("react", &bob.uid, "x2", "r1", "❤️"))
            .await,
        "x2",
    );
    assert_ok(
        &ca.chat(lifecycle("unreact", &bob.uid, "x3", "r1", "❤️"))
            .await,
        "x3",
    );
    for (evt, id) in [
        ("message", "m2"),
        ("edit", "e2"),
        ("delete", "d1"),
        ("react", "x2"),
        ("unreact", "x3"),
    ] {
        expect_next(&mut ca2, evt, id).await;
    }
    let mut cb = a.connect(&bob).await;
    let mut seqs = Vec::new();
    for (evt, id) in [
        ("message", "m2"),
        ("edit", "e2"),
        ("delete", "d1"),
        ("react", "x2"),
        ("unreact", "x3"),
    ] {
        let got = expect_next(&mut cb, evt, id).await;
        seqs.push(got["Seq"].as_u64().expect("replayed with its Seq"));
        if evt == "delete" {
            assert_eq!(
                (got["Ref"].as_str(), got["Body"].as_str()),
                (Some("m2"), Some(""))
            );
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "Seq order: {seqs:?}");

    // Refusals: the contract's codes, nothing stored or delivered (the marker comes next).
    let carol_conv = b.connect(&carol).await;
    assert_ok(&carol_conv.send(&alice.uid, "c1", "from carol").await, "c1");
    for (client, event, code, what) in [
        (
            &cb,
            lifecycle("edit", &alice.uid, "f1", "m1", "mine now"),
            "forbidden",
            "edit by another",
        ),
        (
            &cb,
            lifecycle("delete", &alice.uid, "f2", "m1", ""),
            "forbidden",
            "delete by another",
        ),
        (
            &ca,
            lifecycle("edit", &bob.uid, "f3", "m2", "back"),
            "not_found",
            "edit of a deleted message",
        ),
        (
            &ca,
            lifecycle("react", &bob.uid, "f4", "m2", "👍"),
            "not_found",
            "react to a deleted message",
        ),
        (
            &cb,
            lifecycle("react", &alice.uid, "f5", "nope", "👍"),
            "not_found",
            "unknown Ref",
        ),
        (
            &cb,
            lifecycle("react", &alice.uid, "f6", "c1", "👍"),
            "not_found",
            "Ref of another conversation",
        ),
        (
            &cb,
            lifecycle("message", &alice.uid, "f7", "c1", "re"),
            "not_found",
            "reply to another conversation",
        ),
        (
            &cb,
            lifecycle("react", &alice.uid, "f8", "m1", "ab"),
            "bad_request",
            "letters",
        ),
        (
            &cb,
            lifecycle("react", &alice.uid, "f9", "m1", "👍👍"),
            "bad_request",
            "two emoji",
        ),
        (
            &cb,
            lifecycle("react", &alice.uid, "f10", "m1", ""),
            "bad_request",
            "no emoji",
        ),
        (
            &cb,
            json!({"EvtType":"edit","To":alice.uid,"MsgID":"f11","Body":"x"}),
            "bad_request",
            "no Ref",
        ),
    ] {
        assert_refused(&client.chat(event).await, code, what);
    }
    // Blocked (§16): bob's reactions and edits to alice are refused; alice may still react.
    assert_ok(
        &ca.chat(json!({"EvtType":"block","To":bob.uid})).await,
        "block",
    );
    assert_refused(
        &cb.chat(lifecycle("react", &alice.uid, "f12", "m1", "😀"))
            .await,
        "forbidden",
        "a blocked user's reaction",
    );
    assert_refused(
        &cb.chat(lifecycle("edit", &alice.uid, "f13", "r1", "x"))
            .await,
        "forbidden",
        "a blocked user's edit",
    );
    assert_ok(
        &ca.chat(json!({"EvtType":"unblock","To":bob.uid})).await,
        "unblock",
    );
    assert_ok(&ca.send(&bob.uid, "m3", "marker").await, "marker");
    expect_next(&mut cb, "message", "m3").await;
    expect_next(&mut ca2, "message", "c1").await;
    expect_next(&mut ca2, "message", "m3").await;

    // History: latest text with EditedAt, the delete, reactions; no lifecycle rows.
    let (items, by_id) = history_when(a, &bob, &alice.uid, "the lifecycle in history", |h| {
        h.contains_key("m3")
            && h.get("m1")
                .is_some_and(|m| m["Body"] == "hello!" && !reactions(m).is_empty())
            && h.get("m2").is_some_and(|m| m["Deleted"] == true)
            && h.get("r1").is_some_and(|m| reactions(m).is_empty())
    })
    .await;
    let ids: Vec<&str> = items.iter().filter_map(|i| i["MsgID"].as_str()).collect();
    assert_eq!(ids, ["m3", "m2", "r1", "m1"], "only messages, newest first");
    let m1 = &by_id["m1"];
    assert!(m1["EditedAt"].as_i64() > m1["SentAt"].as_i64(), "{m1}");
    assert_eq!(
        reactions(m1),
        BTreeMap::from([("👍".to_owned(), vec![bob.uid.clone()])])
    );
    assert_eq!(by_id["m2"]["Body"], "", "a deleted message shows no text");
    assert_eq!(by_id["r1"]["Ref"], "m1");
    assert!(by_id["m3"].get("EditedAt").is_none() && by_id["m3"].get("Deleted").is_none());
    // The same from the other side and the other node.
    let (_, seen_by_alice) = history_when(b, &alice, &bob.uid, "alice's view", |h| {
        h.get("m1").is_some_and(|m| m["Body"] == "hello!")
    })
    .await;
    assert_eq!(seen_by_alice["m2"]["Deleted"], true);

    // Versions: the earlier texts, oldest first; none for a deleted or unknown message, or
    // for someone outside the conversation.
    let versions_url = |app: &TestApp, with: &str, id: &str| {
        format!(
            "{}/api/v1/conversations/{with}/messages/{id}/versions",
            app.url
        )
    };
    let (status, body) = get(&versions_url(b, &alice.uid, "m1"), &bob.token).await;
    assert_eq!(status, 200, "{body}");
    let versions: Vec<(&str, &str)> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| {
            (
                v["MsgID"].as_str().unwrap_or(""),
                v["Body"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(versions, [("m1", "helo"), ("e1", "hello")]);
    assert!(body["next"].is_null());
    let (status, body) = get(&versions_url(a, &alice.uid, "r1"), &bob.token).await;
    assert_eq!(
        (status, body["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    for (url, token) in [
        (versions_url(a, &alice.uid, "m2"), &bob.token),
        (versions_url(a, &alice.uid, "nope"), &bob.token),
        (versions_url(a, &alice.uid, "m1"), &carol.token),
    ] {
        let (status, body) = get(&url, token).await;
        assert_eq!(status, 404, "{url}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }

    // The admin call log is an audit record: the deleted text, and every lifecycle event.
    let (status, audit) = get(
        &format!(
            "{}/api/v1/admin/calllogs?uid={}&limit=1000",
            a.url, alice.uid
        ),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let audit = audit["items"].as_array().expect("items").clone();
    let find = |id: &str| audit.iter().find(|i| i["MsgID"] == id).cloned();
    assert_eq!(find("m2").expect("m2 in the audit")["Body"], "oops");
    let delete = find("d1").expect("the delete in the audit");
    assert_eq!(
        (delete["EvtType"].as_str(), delete["Ref"].as_str()),
        (Some("delete"), Some("m2"))
    );
    assert_eq!(find("e1").expect("edit")["Body"], "hello");
    assert!(
        find("f1").is_none() && find("f12").is_none(),
        "refused events are not logged"
    );
}

/// Groups: reactions are kept from a member who joined after the message; edits reach
/// every member; outsiders are refused.
async fn group(a: &TestApp, b: &TestApp) {
    let alice = a.signup("alice").await;
    let bob = b.signup("bob").await;
    let carol = a.signup("carol").await;
    let dan = b.signup("dan").await;
    let mut ca = a.connect(&alice).await;
    let mut cb = b.connect(&bob).await;
    // Bob's other tab, on the other node: gets copies of what bob does there.
    let mut cb2 = a.connect(&bob).await;
    let ack = ca
        .chat(json!({"EvtType":"create","To":"","MsgID":"c","Body": json!([bob.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    expect_next(&mut ca, "notify", "c").await;
    expect_next(&mut cb, "notify", "c").await;
    assert_ok(&ca.send(&gid, "g1", "before carol").await, "g1");
    expect_next(&mut cb, "message", "g1").await;
    assert_ok(
        &cb.chat(lifecycle("react", &gid, "x1", "g1", "👍")).await,
        "x1",
    );
    let react = expect_next(&mut ca, "react", "x1").await;
    assert_eq!(
        (react["From"].as_str(), react["Originated"].as_str()),
        (Some(gid.as_str()), Some(bob.uid.as_str()))
    );

    let ack = ca
        .chat(
            json!({"EvtType":"refer","To":gid,"MsgID":"j","Body": json!([carol.uid]).to_string()}),
        )
        .await;
    assert_ok(&ack, "refer");
    expect_next(&mut ca, "join", "j").await;
    expect_next(&mut cb, "join", "j").await;
    let mut cc = b.connect(&carol).await;
    expect_next(&mut cc, "notify", "j").await;
    assert_ok(&ca.send(&gid, "g2", "after carol").await, "g2");
    expect_next(&mut cb, "message", "g2").await;
    expect_next(&mut cc, "message", "g2").await;

    // A reaction on the message from before carol joined reaches alice, not carol.
    assert_ok(
        &cb.chat(lifecycle("react", &gid, "x2", "g1", "❤️")).await,
        "x2",
    );
    expect_next(&mut ca, "react", "x2").await;
    loop {
        let copy = cb2.next_chat_acked().await.data;
        if copy["MsgID"] == "x2" {
            assert_eq!(
                (copy["EvtType"].as_str(), copy["Ref"].as_str()),
                (Some("react"), Some("g1")),
                "{copy}"
            );
            break;
        }
    }
    assert_ok(
        &cb.chat(lifecycle("react", &gid, "x3", "g2", "👍")).await,
        "x3",
    );
    expect_next(&mut ca, "react", "x3").await;
    expect_next(&mut cc, "react", "x3").await;

    // Edits reach everyone, and only the sender edits; outsiders get forbidden.
    assert_refused(
        &cb.chat(lifecycle("edit", &gid, "f1", "g2", "x")).await,
        "forbidden",
        "edit by another",
    );
    let cd = b.connect(&dan).await;
    assert_refused(
        &cd.chat(lifecycle("react", &gid, "f2", "g1", "👍")).await,
        "forbidden",
        "outsider",
    );
    assert_refused(
        &cc.chat(lifecycle("react", &gid, "f3", "zz", "👍")).await,
        "not_found",
        "unknown",
    );
    assert_ok(
        &ca.chat(lifecycle("edit", &gid, "e1", "g2", "after carol!"))
            .await,
        "edit",
    );
    expect_next(&mut cb, "edit", "e1").await;
    let edit = expect_next(&mut cc, "edit", "e1").await;
    assert_eq!(
        (edit["Ref"].as_str(), edit["Originated"].as_str()),
        (Some("g2"), Some(alice.uid.as_str()))
    );
    assert_ok(
        &cc.chat(json!({"EvtType":"message","To":gid,"MsgID":"r1","Ref":"g1","Body":"re"}))
            .await,
        "reply",
    );
    expect_next(&mut ca, "message", "r1").await;
    let reply = expect_next(&mut cb, "message", "r1").await;
    assert_eq!(reply["Ref"], "g1");

    let (_, seen) = history_when(a, &carol, &gid, "carol's group history", |h| {
        h.contains_key("r1")
            && h.get("g2")
                .is_some_and(|m| m["Body"] == "after carol!" && !reactions(m).is_empty())
    })
    .await;
    assert_eq!(
        reactions(&seen["g1"]),
        BTreeMap::new(),
        "not before carol joined"
    );
    assert_eq!(
        reactions(&seen["g2"]),
        BTreeMap::from([("👍".to_owned(), vec![bob.uid.clone()])])
    );
    let (_, seen) = history_when(b, &alice, &gid, "alice's group history", |h| {
        h.get("g1").is_some_and(|m| reactions(m).len() == 2)
    })
    .await;
    assert_eq!(
        reactions(&seen["g1"]),
        BTreeMap::from([
            ("❤️".to_owned(), vec![bob.uid.clone()]),
            ("👍".to_owned(), vec![bob.uid.clone()])
        ])
    );
}

/// An edit and a delete of one message sent at once from two tabs on two nodes: whichever
/// lands first, the message ends deleted.
async fn edit_racing_delete(a: &TestApp, b: &TestApp) {
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let ca = a.connect(&alice).await;
    let ca2 = b.connect(&alice).await;
    let mut cb = b.connect(&bob).await;
    for round in 0..5 {
        let id = format!("m{round}");
        assert_ok(&ca.send(&bob.uid, &id, "draft").await, "message");
        expect_next(&mut cb, "message", &id).await;
        let (edited, deleted) = tokio::join!(
            ca.chat(lifecycle(
                "edit",
                &bob.uid,
                &format!("e{round}"),
                &id,
                "final"
            )),
            ca2.chat(lifecycle("delete", &bob.uid, &format!("d{round}"), &id, "")),
        );
        assert_ok(&deleted, "delete");
        let edit_stored = edited.get("ok").is_some();
        if !edit_stored {
            assert_refused(&edited, "not_found", "an edit after the delete");
        }
        // Bob gets the delete, and the edit too when it was accepted, in either order (an
        // edit checked before the delete was noted can be stored after it): both before
        // the next round's message.
        let (mut got_delete, mut got_edit) = (false, !edit_stored);
        while !(got_delete && got_edit) {
            let got = cb.next_chat_acked().await.data;
            match got["EvtType"].as_str() {
                Some("delete") => got_delete = true,
                Some("edit") => got_edit = true,
                _ => panic!("only the edit and the delete come now: {got}"),
            }
        }
    }
    let (_, by_id) = history_when(a, &bob, &alice.uid, "every message deleted", |h| {
        (0..5).all(|r| {
            h.get(&format!("m{r}"))
                .is_some_and(|m| m["Deleted"] == true)
        })
    })
    .await;
    for round in 0..5 {
        let m = &by_id[&format!("m{round}")];
        assert_eq!(
            (m["Body"].as_str(), m.get("EditedAt")),
            (Some(""), None),
            "{m}"
        );
    }
    // The conversation list shows the last message as history does: no text once deleted.
    let (status, list) = get(&format!("{}/api/v1/conversations", b.url), &bob.token).await;
    assert_eq!(status, 200, "{list}");
    let row = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == alice.uid.as_str())
        .expect("the conversation with alice")
        .clone();
    assert_eq!(
        (
            row["last"]["MsgID"].as_str(),
            row["last"]["Body"].as_str(),
            row["last"]["Deleted"].as_bool()
        ),
        (Some("m4"), Some(""), Some(true)),
        "{row}"
    );
}

#[tokio::test]
async fn one_to_one_on_the_embedded_store() {
    let app = node(Backend::Embedded, None, "webchat_").await;
    one_to_one(&app, &app).await;
}

#[tokio::test]
async fn one_to_one_across_two_redis_nodes() {
    let prefix = unique_prefix();
    let a = node(Backend::Redis, None, &prefix).await;
    let b = node(Backend::Redis, None, &prefix).await;
    one_to_one(&a, &b).await;
}

#[tokio::test]
async fn one_to_one_across_two_redis_cluster_nodes() {
    let prefix = unique_prefix();
    let a = node(Backend::RedisCluster, None, &prefix).await;
    let b = node(Backend::RedisCluster, None, &prefix).await;
    one_to_one(&a, &b).await;
}

#[tokio::test]
async fn one_to_one_with_the_call_log_in_dynamodb() {
    let ddb = std::env::var("WEBCHAT_TEST_DYNAMODB_URL")
        .expect("WEBCHAT_TEST_DYNAMODB_URL is not set: run scripts/test-all.sh");
    let prefix = unique_prefix();
    let a = node(Backend::Redis, Some(&ddb), &prefix).await;
    let b = node(Backend::Redis, Some(&ddb), &prefix).await;
    one_to_one(&a, &b).await;
}

#[tokio::test]
async fn groups_on_the_embedded_store() {
    let app = node(Backend::Embedded, None, "webchat_").await;
    group(&app, &app).await;
}

#[tokio::test]
async fn groups_across_two_redis_nodes() {
    let prefix = unique_prefix();
    let a = node(Backend::Redis, None, &prefix).await;
    let b = node(Backend::Redis, None, &prefix).await;
    group(&a, &b).await;
}

#[tokio::test]
async fn an_edit_racing_a_delete_ends_deleted_on_the_embedded_store() {
    let app = node(Backend::Embedded, None, "webchat_").await;
    edit_racing_delete(&app, &app).await;
}

#[tokio::test]
async fn an_edit_racing_a_delete_ends_deleted_across_two_redis_nodes() {
    let prefix = unique_prefix();
    let a = node(Backend::Redis, None, &prefix).await;
    let b = node(Backend::Redis, None, &prefix).await;
    edit_racing_delete(&a, &b).await;
}

#[tokio::test]
async fn an_edit_after_the_window_is_forbidden_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.keep());
    s.edit_window_secs = 0;
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    assert_ok(&ca.send(&bob.uid, "m1", "typo").await, "m1");
    expect_next(&mut cb, "message", "m1").await;
    assert_refused(
        &ca.chat(lifecycle("edit", &bob.uid, "e1", "m1", "fixed"))
            .await,
        "forbidden",
        "edit after the window",
    );
    // Deleting has no window.
    assert_ok(
        &ca.chat(lifecycle("delete", &bob.uid, "d1", "m1", "")).await,
        "delete",
    );
    expect_next(&mut cb, "delete", "d1").await;
}

#[tokio::test]
async fn a_msg_id_reused_by_another_sender_stays_the_first_senders_once_the_index_forgets_it() {
    let app = node(Backend::Redis, None, &unique_prefix()).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    assert_ok(&ca.send(&bob.uid, "m-123", "mine").await, "alice's m-123");
    expect_next(&mut cb, "message", "m-123").await;
    // Bob reuses Alice's MsgID in the same conversation.
    let _ = cb.send(&alice.uid, "m-123", "also mine").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while history(&app, &alice, &bob.uid)
        .await
        .iter()
        .filter(|i| i["MsgID"] == "m-123")
        .count()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "call log not written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The index entry ages out: the call log answers.
    let (a, b) = if alice.uid <= bob.uid {
        (&alice.uid, &bob.uid)
    } else {
        (&bob.uid, &alice.uid)
    };
    let key = format!("wc:lc:{{p:{a}:{b}}}:m:m-123");
    assert_eq!(
        redis_cli(Backend::Redis, &["DEL", &key]).await,
        "1",
        "{key}"
    );
    assert_refused(
        &cb.chat(lifecycle("delete", &alice.uid, "d1", "m-123", ""))
            .await,
        "forbidden",
        "bob deleting alice's m-123",
    );
    assert_refused(
        &cb.chat(lifecycle("edit", &alice.uid, "e1", "m-123", "pwned"))
            .await,
        "forbidden",
        "bob editing alice's m-123",
    );
}

/// A first reply by `reply` makes the two mutual contacts before it is delivered: the
/// starter, on its arrival, reads the replier's presence at once.
#[tokio::test]
async fn a_first_reply_makes_both_contacts_before_it_is_delivered() {
    let prefix = unique_prefix();
    let a = node(Backend::Redis, None, &prefix).await;
    let b = node(Backend::Redis, None, &prefix).await;
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let mut ca = a.connect(&alice).await;
    let mut cb = b.connect(&bob).await;
    assert_ok(&ca.send(&bob.uid, "m1", "hi bob").await, "m1");
    expect_next(&mut cb, "message", "m1").await;
    let reply = cb.chat(
        json!({"EvtType":"message","To":alice.uid,"MsgID":"r1","Body":"hi alice","Ref":"m1"}),
    );
    let (ack, _) = tokio::join!(reply, expect_next(&mut ca, "message", "r1"));
    let url = format!("{}/api/v1/presence?ids={}", a.url, bob.uid);
    let (status, body) = get(&url, &alice.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["online"], true, "{body}");
    assert_ok(&ack, "reply");
}

/// Each user's distinct emoji on a message, and a message's edits, are capped: past the cap
/// `too_large`, nothing stored or delivered; a re-sent reaction or edit counts once.
async fn caps(app: &TestApp) {
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let mut ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    assert_ok(&ca.send(&bob.uid, "m1", "hi").await, "m1");
    expect_next(&mut cb, "message", "m1").await;
    let emoji = |i: u32| char::from_u32(0x1F600 + i).expect("emoji").to_string();
    for i in 0..20 {
        let id = format!("x{i}");
        let ack = cb
            .chat(lifecycle("react", &alice.uid, &id, "m1", &emoji(i)))
            .await;
        assert_ok(&ack, &id);
        expect_next(&mut ca, "react", &id).await;
    }
    assert_refused(
        &cb.chat(lifecycle("react", &alice.uid, "x20", "m1", &emoji(20)))
            .await,
        "too_large",
        "a 21st emoji",
    );
    // An emoji already counted (after an unreact too) is still accepted.
    assert_ok(
        &cb.chat(lifecycle("unreact", &alice.uid, "u0", "m1", &emoji(0)))
            .await,
        "unreact",
    );
    expect_next(&mut ca, "unreact", "u0").await;
    assert_ok(
        &cb.chat(lifecycle("react", &alice.uid, "x0b", "m1", &emoji(0)))
            .await,
        "react again",
    );
    expect_next(&mut ca, "react", "x0b").await;
    // Another user has a cap of their own.
    assert_ok(
        &ca.chat(lifecycle("react", &bob.uid, "a0", "m1", &emoji(20)))
            .await,
        "alice's react",
    );
    expect_next(&mut cb, "react", "a0").await;

    for i in 0..100 {
        let id = format!("e{i}");
        let ack = ca
            .chat(lifecycle("edit", &bob.uid, &id, "m1", &format!("v{i}")))
            .await;
        assert_ok(&ack, &id);
        expect_next(&mut cb, "edit", &id).await;
    }
    assert_refused(
        &ca.chat(lifecycle("edit", &bob.uid, "e100", "m1", "one more"))
            .await,
        "too_large",
        "a 101st edit",
    );
    // A re-sent edit counts once.
    assert_ok(
        &ca.chat(lifecycle("edit", &bob.uid, "e99", "m1", "v99"))
            .await,
        "re-sent edit",
    );
    // Nothing of the refused ones was delivered.
    assert_ok(&ca.send(&bob.uid, "m2", "after").await, "m2");
    expect_next(&mut cb, "message", "m2").await;
}

#[tokio::test]
async fn reactions_and_edits_are_capped_on_the_embedded_store() {
    let app = node(Backend::Embedded, None, "webchat_").await;
    caps(&app).await;
}

#[tokio::test]
async fn reactions_and_edits_are_capped_on_redis() {
    let app = node(Backend::Redis, None, &unique_prefix()).await;
    caps(&app).await;
}
