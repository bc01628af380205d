//! The call log end to end: events logged through the write-behind queue, the REST history
//! and admin APIs with their authorization, on the embedded store, and on two Redis nodes
//! with DynamoDB Local (WEBCHAT_TEST_DYNAMODB_URL) as the call-log table.

use std::time::Duration;

use futures_util::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ADMIN: &str = "admin-secret-for-tests";

/// A table prefix (and so a call-log queue) of this test's own.
fn unique_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

async fn node(backend: Backend, dynamodb: Option<&str>, prefix: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(backend, dir.keep());
    s.admin_token = Some(ADMIN.into());
    s.dynamodb_endpoint = dynamodb.map(str::to_owned);
    s.table_prefix = prefix.to_owned();
    spawn_with(s).await
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = http().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The admin call log of `subject` (`uid=…` or `gid=…`), every page.
async fn admin_log(app: &TestApp, subject: &str) -> Vec<Value> {
    match try_admin_log(app, subject).await {
        Ok(items) => items,
        Err(body) => panic!("admin call log refused: {body}"),
    }
}

/// [`admin_log`], or the error body (the table may be unreachable for a while).
async fn try_admin_log(app: &TestApp, subject: &str) -> Result<Vec<Value>, Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{}/api/v1/admin/calllogs?{subject}&limit=1000&cursor={cursor}",
            app.url
        );
        let (status, body) = get(&url, Some(ADMIN)).await;
        if status != 200 {
            return Err(body);
        }
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return Ok(items),
        }
    }
}

/// Waits until the call log has drained (write-behind) and returns the admin view. The
/// table answering `unavailable` meanwhile (it is coming back) counts as not drained yet.
async fn drained(app: &TestApp, subject: &str, expected: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let items = try_admin_log(app, subject).await;
        let done = items.as_ref().is_ok_and(|i| i.len() >= expected);
        if done || tokio::time::Instant::now() > deadline {
            return items.unwrap_or_else(|body| panic!("admin call log refused: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event kind once, receipts on the message, and nothing twice.
async fn every_event_is_logged_once(a: &TestApp, b: &TestApp) {
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let carol = a.signup("carol").await;
    let mut ca = a.connect(&alice).await;
    let mut cb = b.connect(&bob).await;

    for _ in 0..2 {
        // The second send is a re-send of the same MsgID: acked again, logged once.
        let ack = ca.send(&bob.uid, "m1", "hello bob").await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let got = cb.next_chat_acked().await;
    let seq = got.data["Seq"].as_u64().expect("seq");
    for kind in ["delivery", "display"] {
        let ack = cb
            .chat(json!({"EvtType": kind, "To": alice.uid, "MsgID": "m1", "Seq": seq}))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        assert_eq!(ca.next_chat_acked().await.data["EvtType"], kind);
    }
    let ack = ca
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body": json!([bob.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    let ack = ca
        .chat(
            json!({"EvtType":"refer","To":gid,"MsgID":"r1","Body": json!([carol.uid]).to_string()}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = ca
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"hi group"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = cb
        .chat(json!({"EvtType":"depart","To":gid,"MsgID":"d1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let by_alice = drained(a, &format!("uid={}", alice.uid), 4).await;
    let kinds: Vec<(&str, &str)> = by_alice
        .iter()
        .map(|e| {
            (
                e["EvtType"].as_str().unwrap_or(""),
                e["MsgID"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("message", "m1"),
            ("create", "c1"),
            ("refer", "r1"),
            ("message", "g1")
        ],
        "alice's events, oldest first, each once"
    );
    let m1 = &by_alice[0];
    assert_eq!(m1["From"], alice.uid.as_str());
    assert_eq!(m1["To"], bob.uid.as_str());
    assert_eq!(m1["Body"], "hello bob");
    assert_eq!(m1["Seq"], seq);
    // Receipts are written behind too: wait for them on the message item.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let m1 = loop {
        let items = admin_log(a, &format!("uid={}", bob.uid)).await;
        let m1 = items.iter().find(|e| e["MsgID"] == "m1").cloned();
        if let Some(m1) = m1.filter(|m| m["DisplayedAt"].is_i64()) {
            break m1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipts never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sent = m1["SentAt"].as_i64().expect("SentAt");
    let delivered = m1["DeliveredAt"].as_i64().expect("DeliveredAt");
    let displayed = m1["DisplayedAt"].as_i64().expect("DisplayedAt");
    assert!(sent <= delivered && delivered <= displayed, "{m1}");
    assert_eq!(m1["Unread"], 0);

    let in_group = drained(a, &format!("gid={gid}"), 4).await;
    let kinds: Vec<(&str, &str, &str)> = in_group
        .iter()
        .map(|e| {
            (
                e["EvtType"].as_str().unwrap_or(""),
                e["From"].as_str().unwrap_or(""),
                e["Originated"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("create", gid.as_str(), alice.uid.as_str()),
            ("refer", gid.as_str(), alice.uid.as_str()),
            ("message", gid.as_str(), alice.uid.as_str()),
            ("depart", gid.as_str(), bob.uid.as_str()),
        ]
    );
    // The leaver's conversation list drops the group; alice's keeps it.
    let listed = |user: User| {
        let url = format!("{}/api/v1/conversations", a.url);
        let gid = gid.clone();
        async move {
            let (_, body) = get(&url, Some(&user.token)).await;
            body["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|c| c["id"] == gid.as_str()))
        }
    };
    eventually("bob's list to drop the group he left", || {
        listed(bob.clone()).map(|l| !l)
    })
    .await;
    assert!(listed(alice.clone()).await, "alice is still a member");
    ca.close().await;
    cb.close().await;
}

/// What a user may read, and what every bad request gets.
async fn rest_authorization_and_bad_input(app: &TestApp) {
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let eve = app.signup("eve").await;
    let ca = app.connect(&alice).await;
    ca.send(&bob.uid, "x1", "for bob only").await;
    let ack = ca
        .chat(json!({"EvtType":"create","To":"","Body": json!([bob.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    drained(app, &format!("uid={}", alice.uid), 2).await;
    let api = format!("{}/api/v1", app.url);

    // Participants read; the peer sees the same conversation.
    let (status, body) = get(
        &format!("{api}/conversations/{}/messages", alice.uid),
        Some(&bob.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["Body"], "for bob only");
    let (status, body) = get(&format!("{api}/conversations"), Some(&bob.token)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&alice.uid.as_str()) && ids.contains(&gid.as_str()),
        "{body}"
    );
    let row = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["id"] == alice.uid.as_str())
        .expect("row");
    assert_eq!(row["unread"], 1, "{body}");

    // Eve is in neither: her view of "alice" is her own (empty) conversation; the group is closed.
    let (status, body) = get(
        &format!("{api}/conversations/{}/messages", alice.uid),
        Some(&eve.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]), "no one else's messages leak");
    let (status, body) = get(&format!("{api}/conversations"), Some(&eve.token)).await;
    assert_eq!((status, body["items"].clone()), (StatusCode::OK, json!([])));
    for url in [
        format!("{api}/conversations/{gid}/messages"),
        format!("{api}/groups/{gid}"),
    ] {
        let (status, body) = get(&url, Some(&eve.token)).await;
        assert_eq!(status, 403, "{url}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, body) = get(&format!("{api}/groups/{gid}"), Some(&bob.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().map(Vec::len), Some(2));
    let (status, _) = get(&format!("{api}/groups/group_nosuch"), Some(&bob.token)).await;
    assert_eq!(status, 404);

    // The address book.
    let (status, body) = get(
        &format!("{api}/users?prefix={}", &bob.uid[..8]),
        Some(&eve.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["uid"], bob.uid.as_str());
    assert_eq!(body["items"][0]["name"], "bob");

    // No token, a bad token, a user token on the admin API: 401.
    let admin = format!("{api}/admin/calllogs?uid={}", alice.uid);
    for (url, token) in [
        (format!("{api}/conversations"), None),
        (format!("{api}/conversations"), Some("not.a-token")),
        (format!("{api}/users"), None),
        (admin.clone(), None),
        (admin.clone(), Some(alice.token.as_str())),
        (admin.clone(), Some("admin-secret-for-test")),
    ] {
        let (status, body) = get(&url, token).await;
        assert_eq!(status, 401, "{url} with {token:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Bad input: 400 with the error shape, never a 500.
    for query in [
        "uid=x&limit=0",
        "uid=x&limit=1001",
        "uid=x&limit=ten",
        "uid=x&since=10&until=5",
        "uid=x&since=-1",
        "uid=x&cursor=garbage",
        "uid=x&gid=group_a",
        "",
        "uid=no spaces",
        "gid=notagroup",
    ] {
        let (status, body) = get(&format!("{api}/admin/calllogs?{query}"), Some(ADMIN)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
    let mine = format!("{api}/conversations/{}/messages", bob.uid);
    for query in ["limit=201", "before=x", "cursor=%%%", "before=-5"] {
        let (status, body) = get(&format!("{mine}?{query}"), Some(&alice.token)).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = get(
        &format!("{api}/conversations/bad%20uid/messages"),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 400);
    // A cursor from one conversation does not open another.
    for i in 0..3 {
        ca.send(&bob.uid, &format!("p{i}"), "page").await;
    }
    drained(app, &format!("uid={}", alice.uid), 5).await;
    let (_, page) = get(&format!("{mine}?limit=1"), Some(&alice.token)).await;
    let cursor = page["next"].as_str().expect("next").to_owned();
    let (status, _) = get(
        &format!("{api}/conversations/{}/messages?cursor={cursor}", eve.uid),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 400);
    let (status, doc) = get(&format!("{api}/openapi.json"), None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/admin/calllogs"].is_object());
    ca.close().await;
}

#[tokio::test]
async fn embedded_mode_logs_every_event_and_serves_history() {
    let app = node(Backend::Embedded, None, "webchat_").await;
    every_event_is_logged_once(&app, &app).await;
    rest_authorization_and_bad_input(&app).await;
}

#[tokio::test]
async fn two_redis_nodes_log_to_dynamodb_every_event_once() {
    let ddb = dynamodb_url();
    let prefix = unique_prefix();
    let a = node(Backend::Redis, Some(&ddb), &prefix).await;
    let b = node(Backend::Redis, Some(&ddb), &prefix).await;
    every_event_is_logged_once(&a, &b).await;
    rest_authorization_and_bad_input(&b).await;
}

#[tokio::test]
async fn two_nodes_on_redis_cluster_log_to_dynamodb_every_event_once() {
    let ddb = dynamodb_url();
    let prefix = unique_prefix();
    let a = node(Backend::RedisCluster, Some(&ddb), &prefix).await;
    let b = node(Backend::RedisCluster, Some(&ddb), &prefix).await;
    every_event_is_logged_once(&a, &b).await;
}

#[tokio::test]
async fn redis_without_dynamodb_serves_the_same_history() {
    let prefix = unique_prefix();
    let a = node(Backend::Redis, None, &prefix).await;
    let b = node(Backend::Redis, None, &prefix).await;
    every_event_is_logged_once(&a, &b).await;
}

#[tokio::test]
async fn a_conversation_of_2500_messages_pages_without_gaps_or_repeats() {
    let ddb = dynamodb_url();
    let prefix = unique_prefix();
    let app = node(Backend::Redis, Some(&ddb), &prefix).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    const N: usize = 2_500;
    let messages = (0..N).map(|i| (format!("n{i:04}"), format!("message {i}")));
    ca.send_windowed(&bob.uid, messages, 16).await;
    drained(&app, &format!("uid={}", alice.uid), N).await;
    let mut seen = Vec::with_capacity(N);
    let mut sent_at = Vec::with_capacity(N);
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let url = format!(
            "{}/api/v1/conversations/{}/messages?limit=200&cursor={cursor}",
            app.url, alice.uid
        );
        let (status, body) = get(&url, Some(&bob.token)).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for item in body["items"].as_array().expect("items") {
            seen.push(item["MsgID"].as_str().expect("MsgID").to_owned());
            sent_at.push(item["SentAt"].as_i64().expect("SentAt"));
        }
        match body["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), N, "every message exactly once");
    let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), N, "no repeats");
    assert_eq!(pages, N.div_ceil(200));
    assert!(
        sent_at.windows(2).all(|w| w[0] >= w[1]),
        "newest first across pages"
    );
    ca.close().await;
}

/// `/health`'s call-log entry.
async fn calllog_health(app: &TestApp) -> Value {
    let (_, body) = get(&format!("{}/health", app.url), None).await;
    body["backends"]["calllog"].clone()
}

#[tokio::test]
async fn chat_goes_on_while_dynamodb_is_down_and_the_backlog_drains_when_it_returns() {
    let mut ddb = OwnDynamo::start().await;
    let app = node(Backend::Redis, Some(&ddb.url()), &unique_prefix()).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let mut sent = 0;
    let mut send_batch = async |n: usize, sent: &mut usize| {
        for _ in 0..n {
            let ack = ca.send(&bob.uid, &format!("m{sent}"), "hi").await;
            assert_eq!(ack["ok"], true, "{ack}");
            assert_eq!(cb.next_chat_acked().await.data["MsgID"], format!("m{sent}"));
            *sent += 1;
        }
    };
    send_batch(10, &mut sent).await;
    drained(&app, &format!("uid={}", alice.uid), 10).await;

    ddb.kill().await;
    // Chat is unaffected: every send is acked and delivered while the call log cannot write.
    send_batch(40, &mut sent).await;
    eventually("the call-log backlog to show in /health", || async {
        let health = calllog_health(&app).await;
        health["backlog"].as_u64().is_some_and(|b| b > 0)
    })
    .await;
    let (status, body) = get(
        &format!("{}/api/v1/conversations", app.url),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 503, "history is unavailable, not wrong: {body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // The node itself stays healthy: DynamoDB is listed as down, within its probe's bound.
    let started = std::time::Instant::now();
    let (status, health) = get(&format!("{}/health", app.url), None).await;
    assert_eq!(
        status, 200,
        "a DynamoDB outage does not fail the node: {health}"
    );
    assert_eq!(health["backends"]["dynamodb"]["ok"], false, "{health}");
    assert!(
        health["backends"]["dynamodb"]["error"].is_string(),
        "{health}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "/health waited {:?} for DynamoDB",
        started.elapsed()
    );

    ddb.restart().await;
    let items = drained(&app, &format!("uid={}", alice.uid), 50).await;
    let ids: Vec<&str> = items.iter().filter_map(|e| e["MsgID"].as_str()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id[1..].parse::<u32>().unwrap_or(0));
    assert_eq!(
        sorted, expected,
        "every message logged exactly once after the outage"
    );
    eventually("the backlog to drain", || async {
        calllog_health(&app).await["backlog"] == 0
    })
    .await;
    assert!(
        app.metric("webchat_calllog_errors_total").await > 0,
        "the outage was seen"
    );
    ca.close().await;
    cb.close().await;
}

#[tokio::test]
async fn accounts_groups_and_history_survive_a_redis_flush_with_dynamodb() {
    let redis = OwnRedis::start().await;
    let ddb = dynamodb_url();
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Redis, dir.keep());
    s.redis_url = Some(redis.url());
    s.token_secret = Some("flush-test-secret".into());
    s.dynamodb_endpoint = Some(ddb);
    s.table_prefix = prefix;
    s.admin_token = Some(ADMIN.into());
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let ack = ca
        .chat(json!({"EvtType":"create","To":"","Body": json!([bob.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    ca.send(&bob.uid, "before", "sent before the flush").await;
    drained(&app, &format!("uid={}", alice.uid), 2).await;
    ca.close().await;

    let flushed = tokio::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "FLUSHALL"])
        .output()
        .await
        .expect("redis-cli");
    assert!(flushed.status.success());

    // The account: login works, and the old token too (revocations live in DynamoDB).
    let res = http()
        .post(format!("{}/api/v1/login", app.url))
        .json(&json!({"uid": alice.uid, "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200, "the account survived");
    // The group: members intact, and a group message reaches bob.
    let (status, body) = get(
        &format!("{}/api/v1/groups/{gid}", app.url),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut expected = vec![alice.uid.clone(), bob.uid.clone()];
    expected.sort();
    assert_eq!(body["members"], json!(expected));
    let ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let ack = ca
        .chat(json!({"EvtType":"message","To":gid,"MsgID":"after","Body":"after the flush"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = cb.next_chat_acked().await;
    assert_eq!(got.data["MsgID"], "after");
    // The history, and the group in bob's conversation list.
    let (status, body) = get(
        &format!("{}/api/v1/conversations/{}/messages", app.url, alice.uid),
        Some(&bob.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["MsgID"], "before");
    let (_, body) = get(
        &format!("{}/api/v1/conversations", app.url),
        Some(&bob.token),
    )
    .await;
    let ids: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&gid.as_str()) && ids.contains(&alice.uid.as_str()),
        "{body}"
    );
    // Logout after the flush is still seen: revoked tokens are refused.
    let res = http()
        .post(format!("{}/api/v1/logout", app.url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    let (status, _) = get(
        &format!("{}/api/v1/conversations", app.url),
        Some(&alice.token),
    )
    .await;
    assert_eq!(status, 401);
    ca.close().await;
    cb.close().await;
}
