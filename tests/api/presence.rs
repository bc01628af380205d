//! Presence across nodes: online while any socket of a user is connected anywhere, told to
//! mutual contacts (1:1 messages sent both ways) and group co-members, and offline soon
//! after a node dies. What blocking and strangers do not see is in `blocks.rs`.

use serde_json::json;

use crate::helpers::*;

/// The next `presence` event about `uid` (other live events are skipped).
async fn next_presence(client: &mut TestClient, uid: &str) -> String {
    loop {
        let e = client.next_chat_any().await;
        if e.data["EvtType"] == "presence" && e.data["From"] == uid {
            assert!(
                e.ack_id.is_none() && e.data.get("Seq").is_none(),
                "presence is live-only"
            );
            return e.data["Body"].as_str().unwrap_or("").to_owned();
        }
        if let Some(id) = e.ack_id {
            client.client.ack(id).await.expect("ack");
        }
    }
}

/// The next `presence` event about `uid` after the one for `uid`'s connect, if that comes:
/// the connect is announced to the audience `uid` has when the announcement goes out, and
/// under load that is after the viewer joined it (a first message, a new group). Telling
/// the viewer then is right (the user is online); only its order matters.
async fn presence_after_connect(client: &mut TestClient, uid: &str) -> String {
    match next_presence(client, uid).await.as_str() {
        "online" => next_presence(client, uid).await,
        other => other.to_owned(),
    }
}

async fn a_user_is_online_while_any_socket_on_any_node_is_connected_on(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let carol = nodes[0].signup("carol").await;
    let mut a = nodes[0].connect(&alice).await;
    // A conversation both ways makes alice part of bob's audience; carol shares a group with
    // bob.
    let b0 = nodes[1].connect(&bob).await;
    b0.send(&alice.uid, "hello", "x").await;
    a.send(&bob.uid, "hello-back", "y").await;
    let mut c = nodes[0].connect(&carol).await;
    c.chat(json!({"EvtType":"create","To":"","Body":json!([bob.uid]).to_string()}))
        .await;
    b0.close().await;
    assert_eq!(presence_after_connect(&mut a, &bob.uid).await, "offline");
    assert_eq!(presence_after_connect(&mut c, &bob.uid).await, "offline");

    let b1 = nodes[1].connect(&bob).await;
    assert_eq!(next_presence(&mut a, &bob.uid).await, "online");
    assert_eq!(next_presence(&mut c, &bob.uid).await, "online");
    // A second tab on the other node changes nothing; closing one of two changes nothing.
    let mut b2 = nodes[0].connect(&bob).await;
    // A connect is counted by the socket's delivery task, which may start after the client
    // hears it is connected; a message delivered to b2 proves it has started (and counted).
    a.send(&bob.uid, "after-b2", "are you there?").await;
    loop {
        let event = b2.next_chat_acked().await;
        if event.data["MsgID"] == "after-b2" {
            break;
        }
    }
    b1.close().await;
    nodes[1].wait_for_connections(0).await;
    b2.close().await;
    assert_eq!(
        next_presence(&mut a, &bob.uid).await,
        "offline",
        "the first presence event after online is offline, when the last tab closed"
    );
}

#[tokio::test]
async fn a_user_is_online_while_any_socket_on_any_node_is_connected() {
    a_user_is_online_while_any_socket_on_any_node_is_connected_on(Backend::Redis).await;
}

#[tokio::test]
async fn a_user_is_online_while_any_socket_on_any_node_is_connected_on_redis_cluster() {
    a_user_is_online_while_any_socket_on_any_node_is_connected_on(Backend::RedisCluster).await;
}

/// Two node processes with 1 s heartbeats and a 3 s timeout, on a Redis of their own: such a
/// short timeout would take the other tests' nodes (10 s heartbeats) for dead on a shared one.
async fn fast_presence_nodes() -> (OwnRedis, [NodeProcess; 2]) {
    let redis = OwnRedis::start().await;
    let url = redis.url();
    let args = [
        "--redis-url",
        url.as_str(),
        "--presence-heartbeat-secs",
        "1",
        "--presence-timeout-secs",
        "3",
    ];
    let first = NodeProcess::start_with(&args).await;
    let second = NodeProcess::start_with(&args).await;
    (redis, [first, second])
}

#[tokio::test]
async fn the_users_of_a_killed_node_go_offline_within_the_timeout() {
    let (_redis, nodes) = fast_presence_nodes().await;
    let [watcher_node, doomed] = nodes;
    let alice = signup_at(&watcher_node.url, "alice").await;
    let bob = signup_at(&watcher_node.url, "bob").await;
    let mut a = TestClient::connect(&watcher_node.url, &alice).await;
    let b = TestClient::connect(&doomed.url, &bob).await;
    b.send(&alice.uid, "hi", "x").await;
    a.send(&bob.uid, "hi-back", "y").await;
    let started = std::time::Instant::now();
    doomed.kill().await;
    // Heartbeat 1 s, timeout 3 s: bob must be reported offline well within PATIENCE (10 s);
    // with the defaults (10 s, 30 s) that is within 40 s, inside the contract's 60 s.
    assert_eq!(next_presence(&mut a, &bob.uid).await, "offline");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}

#[tokio::test]
async fn a_frozen_node_is_taken_for_dead_and_re_registers_its_users_when_it_resumes() {
    let (_redis, nodes) = fast_presence_nodes().await;
    let [watcher_node, frozen] = nodes;
    let alice = signup_at(&watcher_node.url, "alice").await;
    let bob = signup_at(&watcher_node.url, "bob").await;
    let mut a = TestClient::connect(&watcher_node.url, &alice).await;
    let b = TestClient::connect(&frozen.url, &bob).await;
    b.send(&alice.uid, "hi", "x").await;
    a.send(&bob.uid, "hi-back", "y").await;

    frozen.signal("STOP").await;
    assert_eq!(next_presence(&mut a, &bob.uid).await, "offline");
    frozen.signal("CONT").await;
    // Bob's socket never closed: once the node heartbeats again it counts him again.
    assert_eq!(next_presence(&mut a, &bob.uid).await, "online");
    drop(b);
}

#[tokio::test]
async fn the_presence_snapshot_answers_for_contacts_only() {
    let nodes = spawn_cluster(2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let stranger = nodes[0].signup("stranger").await;
    let b = nodes[1].connect(&bob).await;
    let s = nodes[1].connect(&stranger).await;
    let a = nodes[0].connect(&alice).await;
    b.send(&alice.uid, "hi", "hello").await;
    a.send(&bob.uid, "hi-back", "hello to you").await;
    // A message one way makes no contact: the stranger wrote, alice never answered.
    s.send(&alice.uid, "cold", "hello?").await;
    let snapshot = |who: User| {
        let url = format!(
            "{}/api/v1/presence?ids={},{}",
            nodes[0].url, bob.uid, stranger.uid
        );
        async move {
            let res = http()
                .get(url)
                .bearer_auth(&who.token)
                .send()
                .await
                .expect("presence");
            assert_eq!(res.status(), 200);
            let body: serde_json::Value = res.json().await.expect("json");
            body["items"].clone()
        }
    };
    // Bob (a mutual contact) is online on the other node; the stranger, online too, only
    // wrote to alice and is left out.
    assert_eq!(
        snapshot(alice.clone()).await,
        json!([{"uid": bob.uid, "online": true}])
    );
    b.close().await;
    nodes[1].wait_for_connections(1).await;
    eventually("bob to show offline", || async {
        snapshot(alice.clone()).await == json!([{"uid": bob.uid, "online": false}])
    })
    .await;
    let res = http()
        .get(format!(
            "{}/api/v1/presence?ids=not%20a%20uid",
            nodes[0].url
        ))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("bad ids");
    assert_eq!(res.status(), 400);
    s.close().await;
    a.close().await;
}

/// A reloaded tab (the old socket gone, a new one on another node a moment later) shows
/// contacts no "offline"; leaving for good does, after the grace.
#[tokio::test]
async fn a_reloaded_tab_shows_contacts_no_offline() {
    const GRACE_MS: u64 = 4_000;
    let dirs = [tempfile::tempdir(), tempfile::tempdir()].map(|d| d.expect("tempdir"));
    let mut nodes = Vec::new();
    for dir in &dirs {
        let mut s = settings(Backend::Redis, dir.path().to_path_buf());
        s.presence_offline_grace_ms = GRACE_MS;
        nodes.push(spawn_with(s).await);
    }
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let mut a = nodes[0].connect(&alice).await;
    let b0 = nodes[1].connect(&bob).await;
    b0.send(&alice.uid, "hello", "x").await;
    a.send(&bob.uid, "hello-back", "y").await; // now alice is in bob's audience
    b0.close().await;
    let mut b1 = nodes[0].connect(&bob).await;
    // b1 is counted online once its delivery task delivers something.
    a.send(&bob.uid, "sync", "are you there?").await;
    loop {
        if b1.next_chat_acked().await.data["MsgID"] == "sync" {
            break;
        }
    }
    // Past the grace of b0's "offline" (held, then dropped: bob is online on node 0), with
    // a second of margin: no "offline" about bob reaches alice.
    let window = std::time::Duration::from_millis(GRACE_MS + 1_000);
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, a.events.recv()).await {
        if e.data["EvtType"] == "presence" && e.data["From"] == bob.uid.as_str() {
            assert_eq!(
                e.data["Body"], "online",
                "bob flickered offline: {}",
                e.data
            );
        } else if let Some(id) = e.ack_id {
            a.client.ack(id).await.expect("ack");
        }
    }
    b1.close().await;
    assert_eq!(next_presence(&mut a, &bob.uid).await, "offline");
}

/// `viewer`'s presence snapshot of `uid` from `node`: `Some(online)`, or `None` when `uid` is
/// not (yet) one of the viewer's contacts.
async fn snapshot_of(node: &str, viewer: &User, uid: &str) -> Option<bool> {
    let res = http()
        .get(format!("{node}/api/v1/presence?ids={uid}"))
        .bearer_auth(&viewer.token)
        .send()
        .await
        .expect("presence");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    body["items"]
        .as_array()
        .and_then(|items| items.first())
        .and_then(|item| item["online"].as_bool())
}

/// The first reply makes two users contacts before it is delivered or acked: the user who
/// started the conversation, on hearing the reply, and the replier, on its ack, can both read
/// the other's presence at once (the web client asks then; no `presence` event comes until
/// one of them next connects or leaves), whichever node each is on.
async fn a_first_reply_makes_both_see_each_others_presence_on(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let mut a = nodes[0].connect(&alice).await;
    let mut b = nodes[1].connect(&bob).await;
    a.send(&bob.uid, "first", "hi bob").await;
    loop {
        if b.next_chat_acked().await.data["MsgID"] == "first" {
            break;
        }
    }
    // One direction only: no presence shared yet.
    assert_eq!(snapshot_of(&nodes[1].url, &bob, &alice.uid).await, None);
    assert_eq!(snapshot_of(&nodes[0].url, &alice, &bob.uid).await, None);

    let ack = b.send(&alice.uid, "reply", "hi alice").await;
    assert_eq!(ack["ok"], true, "{ack}");
    // The replier, on the ack of the reply.
    assert_eq!(
        snapshot_of(&nodes[1].url, &bob, &alice.uid).await,
        Some(true)
    );
    // The starter, on the reply's arrival.
    loop {
        if a.next_chat_acked().await.data["MsgID"] == "reply" {
            break;
        }
    }
    assert_eq!(
        snapshot_of(&nodes[0].url, &alice, &bob.uid).await,
        Some(true)
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_first_reply_makes_both_see_each_others_presence() {
    a_first_reply_makes_both_see_each_others_presence_on(Backend::Redis).await;
}

#[tokio::test]
async fn a_first_reply_makes_both_see_each_others_presence_on_redis_cluster() {
    a_first_reply_makes_both_see_each_others_presence_on(Backend::RedisCluster).await;
}

#[tokio::test]
async fn a_first_reply_makes_both_see_each_others_presence_on_one_embedded_node() {
    let node = spawn_app(Backend::Embedded).await;
    let alice = node.signup("alice").await;
    let bob = node.signup("bob").await;
    let mut a = node.connect(&alice).await;
    let b = node.connect(&bob).await;
    a.send(&bob.uid, "first", "hi bob").await;
    assert_eq!(snapshot_of(&node.url, &alice, &bob.uid).await, None);
    b.send(&alice.uid, "reply", "hi alice").await;
    assert_eq!(snapshot_of(&node.url, &bob, &alice.uid).await, Some(true));
    loop {
        if a.next_chat_acked().await.data["MsgID"] == "reply" {
            break;
        }
    }
    assert_eq!(snapshot_of(&node.url, &alice, &bob.uid).await, Some(true));
}
