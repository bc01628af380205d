//! Channels (§9): history, recovery by offset and epoch, publish from sockets and REST, one
//! delivery per subscriber in offset order across nodes, presence, and every bad input.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::{json, Value};
use webchat_loadgen::client::{ClientError, ClientOptions, SioClient};

use crate::helpers::{
    eventually, http, redis_cli, settings, signup_at, spawn_with, unique, Backend, NodeProcess,
    OwnRedis, TestApp, TestClient, PATIENCE,
};

const ADMIN: &str = "channels-admin-token";
const SERVICE: &str = "shop-service-secret";

/// A node with the admin token and a service key; its data dir lives as long as the guard.
async fn node(backend: Backend) -> (TestApp, tempfile::TempDir) {
    node_with(backend, |_| {}).await
}

async fn node_with(
    backend: Backend,
    change: impl FnOnce(&mut webchat::Settings),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(backend, dir.path().to_path_buf());
    settings.admin_token = Some(ADMIN.into());
    settings.service_keys = Some(format!("shop:{SERVICE}"));
    change(&mut settings);
    (spawn_with(settings).await, dir)
}

/// Creates (or changes) channel `name` with `settings`.
async fn create(url: &str, name: &str, settings: Value) {
    let res = http()
        .put(format!("{url}/api/v1/admin/channels/{name}"))
        .bearer_auth(ADMIN)
        .json(&settings)
        .send()
        .await
        .expect("put channel");
    assert_eq!(res.status(), 200, "create {name}");
}

/// `POST /channels/{name}/publish` with `token`: (status, body).
async fn rest_publish(url: &str, token: &str, name: &str, body: Value) -> (u16, Value) {
    let res = http()
        .post(format!("{url}/api/v1/channels/{name}/publish"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("publish request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn subscribe(client: &TestClient, channel: &str, since: Option<(u64, &str)>) -> Value {
    let mut body = json!({ "channel": channel });
    if let Some((offset, epoch)) = since {
        body["since"] = json!({ "offset": offset, "epoch": epoch });
    }
    client
        .client
        .emit_with_ack("subscribe", &body, PATIENCE)
        .await
        .expect("subscribe ack")
}

async fn publish(client: &TestClient, channel: &str, data: &str) -> Value {
    client
        .client
        .emit_with_ack(
            "publish",
            &json!({ "channel": channel, "data": data }),
            PATIENCE,
        )
        .await
        .expect("publish ack")
}

async fn next_publication(client: &mut TestClient) -> Value {
    client
        .events
        .recv_named("publication", PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{}: no publication: {e}", client.uid))
        .data
}

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("<none>")
}

/// The newest offset a fresh subscribe reports (the history as the server holds it).
async fn latest(app: &TestApp, channel: &str) -> u64 {
    let user = app.signup("peek").await;
    let peek = app.connect(&user).await;
    let ack = subscribe(&peek, channel, None).await;
    peek.close().await;
    ack["offset"].as_u64().expect("offset")
}

#[tokio::test]
async fn a_subscriber_gets_the_newest_history_then_each_live_publication_and_recovers_exactly() {
    let (app, _dir) = node(Backend::Embedded).await;
    let channel = unique("hist");
    create(&app.url, &channel, json!({ "historySize": 3 })).await;
    for i in 1..=5 {
        let (status, body) = rest_publish(
            &app.url,
            SERVICE,
            &channel,
            json!({ "data": format!("d{i}") }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["offset"], i);
    }
    let alice = app.signup("alice").await;
    let mut a = app.connect(&alice).await;
    let ack = subscribe(&a, &channel, None).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["offset"], 5);
    assert_eq!(ack["recovered"], false);
    assert_eq!(
        offsets(&ack["publications"]),
        [3, 4, 5],
        "the newest historySize, oldest first"
    );
    assert_eq!(
        ack["publications"][0]["from"],
        Value::Null,
        "a service key publishes as nobody"
    );
    let epoch = ack["epoch"].as_str().expect("epoch").to_owned();

    let published = publish(&a, &channel, "hello").await;
    assert_eq!(published["ok"], true, "{published}");
    assert_eq!(published["offset"], 6);
    let live = next_publication(&mut a).await;
    assert_eq!(live["offset"], 6);
    assert_eq!(live["from"], alice.uid.as_str());
    assert_eq!(live["data"], "hello");
    assert_eq!(live["epoch"], epoch.as_str());

    let bob = app.signup("bob").await;
    let b = app.connect(&bob).await;
    let back = subscribe(&b, &channel, Some((4, &epoch))).await;
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(
        offsets(&back["publications"]),
        [5, 6],
        "exactly what was missed"
    );
    let up_to_date = subscribe(&b, &channel, Some((6, &epoch))).await;
    assert_eq!(up_to_date["recovered"], true);
    assert_eq!(offsets(&up_to_date["publications"]), Vec::<u64>::new());
    let too_old = subscribe(&b, &channel, Some((2, &epoch))).await;
    assert_eq!(
        too_old["recovered"], false,
        "offset 3 is out of the history"
    );
    assert_eq!(offsets(&too_old["publications"]), [4, 5, 6]);
    let stale = subscribe(&b, &channel, Some((4, "not-the-epoch"))).await;
    assert_eq!(stale["recovered"], false, "another epoch: start over");
    assert_eq!(offsets(&stale["publications"]), [4, 5, 6]);

    // REST history pages back, newest first.
    let page = |query: String| {
        let url = format!("{}/api/v1/channels/{channel}/publications?{query}", app.url);
        let token = alice.token.clone();
        async move {
            let res = http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("page");
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.expect("json")
        }
    };
    let first = page("limit=2".into()).await;
    assert_eq!(offsets(&first["items"]), [6, 5]);
    let cursor = first["next"].as_str().expect("a next cursor").to_owned();
    let second = page(format!("limit=2&cursor={cursor}")).await;
    assert_eq!(offsets(&second["items"]), [4]);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn general_exists_by_default_and_can_be_switched_off() {
    let (app, _dir) = node(Backend::Embedded).await;
    let user = app.signup("gen").await;
    let client = app.connect(&user).await;
    let ack = subscribe(&client, "general", None).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let list: Value = http()
        .get(format!("{}/api/v1/channels", app.url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"][0]["name"], "general");
    assert_eq!(list["items"][0]["subscribers"], 1);
    assert_eq!(list["items"][0]["publish"], "members");

    let (off, _dir2) = node_with(Backend::Embedded, |s| s.general_channel = false).await;
    let user = off.signup("gen").await;
    let client = off.connect(&user).await;
    assert_eq!(
        code(&subscribe(&client, "general", None).await),
        "not_found"
    );
}

#[tokio::test]
async fn bad_channel_input_is_refused_with_the_contracts_code_and_nothing_is_published() {
    let (app, _dir) = node(Backend::Embedded).await;
    let feed = unique("stock");
    create(&app.url, &feed, json!({ "publish": "server" })).await;
    let user = app.signup("bad").await;
    let client = app.connect(&user).await;

    assert_eq!(
        code(&subscribe(&client, "no-such-channel", None).await),
        "not_found"
    );
    assert_eq!(
        code(&subscribe(&client, "Bad Name", None).await),
        "bad_request"
    );
    let junk = client
        .client
        .emit_with_ack("subscribe", &json!(42), PATIENCE)
        .await
        .expect("ack");
    assert_eq!(code(&junk), "bad_request");
    let since_junk = client
        .client
        .emit_with_ack(
            "subscribe",
            &json!({"channel": feed, "since": {"offset": -1, "epoch": "e"}}),
            PATIENCE,
        )
        .await
        .expect("ack");
    assert_eq!(code(&since_junk), "bad_request");

    assert_eq!(
        code(&publish(&client, "general", "x").await),
        "forbidden",
        "not subscribed"
    );
    assert_eq!(code(&publish(&client, "nope", "x").await), "not_found");
    assert_eq!(subscribe(&client, "general", None).await["ok"], true);
    let big = "x".repeat(16 * 1024 + 1);
    assert_eq!(code(&publish(&client, "general", &big).await), "too_large");
    assert_eq!(subscribe(&client, &feed, None).await["ok"], true);
    assert_eq!(
        code(&publish(&client, &feed, "x").await),
        "forbidden",
        "a server channel"
    );
    let bad_msg_id = client
        .client
        .emit_with_ack(
            "publish",
            &json!({"channel": "general", "data": "x", "MsgID": "m".repeat(65)}),
            PATIENCE,
        )
        .await
        .expect("ack");
    assert_eq!(code(&bad_msg_id), "bad_request");
    assert_eq!(
        latest(&app, "general").await,
        0,
        "nothing was published on general"
    );
    assert_eq!(
        latest(&app, &feed).await,
        0,
        "nothing was published on the feed"
    );

    // REST: a user token cannot publish; the service key is nothing but a publisher.
    let (status, body) = rest_publish(&app.url, &user.token, &feed, json!({"data": "x"})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, _) = rest_publish(&app.url, "wrong", &feed, json!({"data": "x"})).await;
    assert_eq!(status, 401);
    let (status, body) = rest_publish(&app.url, SERVICE, "nope", json!({"data": "x"})).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = rest_publish(&app.url, SERVICE, "Bad!", json!({"data": "x"})).await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let (status, body) = rest_publish(&app.url, SERVICE, &feed, json!({"data": big})).await;
    assert_eq!((status, code(&body)), (413, "too_large"));
    let (status, _) = rest_publish(&app.url, SERVICE, &feed, json!({"text": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        latest(&app, &feed).await,
        0,
        "no refused publish was stored"
    );
    for path in ["/api/v1/channels", "/api/v1/conversations"] {
        let res = http()
            .get(format!("{}{path}", app.url))
            .bearer_auth(SERVICE)
            .send()
            .await
            .expect("get");
        assert_eq!(
            res.status(),
            401,
            "the service key is no user token on {path}"
        );
    }
    let res = http()
        .put(format!("{}/api/v1/admin/channels/x", app.url))
        .bearer_auth(SERVICE)
        .json(&json!({}))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 401, "nor an admin token");
    let refused = SioClient::connect(
        &app.url,
        Some(json!({ "token": SERVICE })),
        ClientOptions::default(),
    )
    .await;
    assert!(
        matches!(&refused, Err(ClientError::ConnectError { message, .. }) if message == "unauthorized"),
        "the service key is no socket token"
    );

    // Admin: bad settings are refused; general cannot be deleted, unknown ones are not_found.
    for settings in [
        json!({"historySize": 10001}),
        json!({"historyTtlSecs": 0}),
        json!({"publish": "all"}),
    ] {
        let res = http()
            .put(format!("{}/api/v1/admin/channels/{feed}", app.url))
            .bearer_auth(ADMIN)
            .json(&settings)
            .send()
            .await
            .expect("put");
        assert_eq!(res.status(), 400, "{settings}");
    }
    let delete = |name: &str| {
        http()
            .delete(format!("{}/api/v1/admin/channels/{name}", app.url))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(delete("general").await.expect("delete").status(), 403);
    assert_eq!(delete("no-such").await.expect("delete").status(), 404);
    assert_eq!(delete(&feed).await.expect("delete").status(), 204);
    let gone = app.connect(&user).await;
    assert_eq!(code(&subscribe(&gone, &feed, None).await), "not_found");
}

#[tokio::test]
async fn a_re_sent_msgid_is_acked_with_the_first_offset_and_delivered_once() {
    let (app, _dir) = node(Backend::Embedded).await;
    let channel = unique("idem");
    create(&app.url, &channel, json!({})).await;
    let user = app.signup("idem").await;
    let mut client = app.connect(&user).await;
    subscribe(&client, &channel, None).await;
    let (s1, first) = rest_publish(
        &app.url,
        SERVICE,
        &channel,
        json!({"data": "a", "MsgID": "m1"}),
    )
    .await;
    let (s2, again) = rest_publish(
        &app.url,
        SERVICE,
        &channel,
        json!({"data": "a", "MsgID": "m1"}),
    )
    .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["offset"], again["offset"]);
    let socket_send = json!({"channel": channel, "data": "b", "MsgID": "m1"});
    let one = client
        .client
        .emit_with_ack("publish", &socket_send, PATIENCE)
        .await
        .expect("ack");
    let two = client
        .client
        .emit_with_ack("publish", &socket_send, PATIENCE)
        .await
        .expect("ack");
    assert_eq!(one["offset"], 2, "the user's m1 is not the service's m1");
    assert_eq!(two["offset"], 2);
    assert_eq!(next_publication(&mut client).await["offset"], 1);
    assert_eq!(next_publication(&mut client).await["offset"], 2);
    let (_, marker) = rest_publish(&app.url, ADMIN, &channel, json!({"data": "end"})).await;
    assert_eq!(marker["offset"], 3, "nothing was published twice");
    assert_eq!(next_publication(&mut client).await["offset"], 3);
}

/// Two nodes on `backend`: a burst of concurrent REST publishes to both nodes reaches every
/// subscriber on either node once, in offset order; a subscriber that drops and comes back
/// on the other node recovers exactly what it missed; a stale epoch starts over.
async fn burst_and_recovery_across_nodes(backend: Backend) {
    let (n0, _d0) = node(backend).await;
    let (n1, _d1) = node(backend).await;
    let channel = unique("burst");
    create(&n0.url, &channel, json!({ "historySize": 1000 })).await;
    let alice = n0.signup("alice").await;
    let bob = n1.signup("bob").await;
    let mut on0 = n0.connect(&alice).await;
    let mut on1 = n1.connect(&bob).await;
    let epoch = subscribe(&on0, &channel, None).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(
        subscribe(&on1, &channel, None).await["epoch"],
        epoch.as_str()
    );

    const BURST: u64 = 120;
    let sends = (0..BURST).map(|i| {
        let url = if i % 2 == 0 {
            n0.url.clone()
        } else {
            n1.url.clone()
        };
        let channel = channel.clone();
        async move { rest_publish(&url, SERVICE, &channel, json!({"data": format!("p{i}")})).await }
    });
    let answers = join_all(sends).await;
    let acked: BTreeSet<u64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["offset"].as_u64().expect("offset")
        })
        .collect();
    assert_eq!(
        acked,
        (1..=BURST).collect(),
        "consecutive offsets, none twice"
    );
    for client in [&mut on0, &mut on1] {
        for expected in 1..=BURST {
            let publication = next_publication(client).await;
            assert_eq!(
                publication["offset"], expected,
                "{}: in offset order, once",
                client.uid
            );
        }
    }

    // Bob drops off node 1; ten publications later he is back, on node 0.
    on1.close().await;
    for i in 0..10 {
        let url = if i % 2 == 0 { &n0.url } else { &n1.url };
        rest_publish(url, SERVICE, &channel, json!({"data": "missed"})).await;
    }
    let mut back = n0.connect(&bob).await;
    let ack = subscribe(&back, &channel, Some((BURST, &epoch))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(
        offsets(&ack["publications"]),
        (BURST + 1..=BURST + 10).collect::<Vec<_>>()
    );
    let (_, next) = rest_publish(&n1.url, SERVICE, &channel, json!({"data": "live"})).await;
    assert_eq!(
        next_publication(&mut back).await["offset"],
        next["offset"],
        "then live, no gap"
    );
    let stale = subscribe(&back, &channel, Some((BURST, "stale-epoch"))).await;
    assert_eq!(stale["recovered"], false);
    assert_eq!(stale["epoch"], epoch.as_str());
}

#[tokio::test]
async fn burst_and_recovery_across_two_nodes_on_redis() {
    burst_and_recovery_across_nodes(Backend::Redis).await;
}

#[tokio::test]
async fn burst_and_recovery_across_two_nodes_on_redis_cluster() {
    burst_and_recovery_across_nodes(Backend::RedisCluster).await;
}

/// A subscriber that subscribes while publications stream in gets each exactly once: those
/// in its ack and those live neither overlap nor leave a gap.
async fn subscribe_during_a_stream(backend: Backend) {
    let (n0, _d0) = node(backend).await;
    let (n1, _d1) = node(backend).await;
    let channel = unique("race");
    create(&n0.url, &channel, json!({ "historySize": 1000 })).await;
    let stream = {
        let (url, channel) = (n1.url.clone(), channel.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                rest_publish(&url, SERVICE, &channel, json!({"data": format!("s{i}")})).await;
            }
        })
    };
    let user = n0.signup("racer").await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = n0.connect(&user).await;
        let ack = subscribe(&client, &channel, None).await;
        clients.push((client, ack));
    }
    stream.await.expect("stream");
    for (mut client, ack) in clients {
        let mut seen = offsets(&ack["publications"]);
        let mut last = ack["offset"].as_u64().expect("offset");
        assert_eq!(seen.last().copied().unwrap_or(0), last);
        while last < 200 {
            last = next_publication(&mut client).await["offset"]
                .as_u64()
                .expect("offset");
            seen.push(last);
        }
        assert_eq!(seen, (1..=200).collect::<Vec<_>>(), "no overlap, no gap");
    }
}

#[tokio::test]
async fn subscribing_while_publications_stream_in_neither_overlaps_nor_gaps_on_redis() {
    subscribe_during_a_stream(Backend::Redis).await;
}

#[tokio::test]
async fn subscribing_while_publications_stream_in_neither_overlaps_nor_gaps_on_redis_cluster() {
    subscribe_during_a_stream(Backend::RedisCluster).await;
}

#[tokio::test]
async fn a_node_listens_to_a_channel_only_while_it_has_subscribers() {
    let (app, _dir) = node(Backend::Redis).await;
    let channel = unique("listen");
    create(&app.url, &channel, json!({})).await;
    let feed = format!("wc:{{ch:{channel}}}:pub");
    let listeners = || async {
        let answer = redis_cli(Backend::Redis, &["PUBSUB", "NUMSUB", &feed]).await;
        answer
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    assert_eq!(listeners().await, 0);
    let user = app.signup("l").await;
    let one = app.connect(&user).await;
    let two = app.connect(&user).await;
    subscribe(&one, &channel, None).await;
    subscribe(&two, &channel, None).await;
    assert_eq!(
        listeners().await,
        1,
        "one subscription per node, not per socket"
    );
    one.close().await;
    two.close().await;
    eventually("the node to stop listening", || async {
        listeners().await == 0
    })
    .await;
}

#[tokio::test]
async fn a_flushed_redis_gives_channels_a_new_epoch_and_an_aof_restart_keeps_them() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let (app, _dir) = node_with(Backend::Embedded, |s| s.redis_url = Some(url.clone())).await;
    let channel = unique("epoch");
    create(&app.url, &channel, json!({})).await;
    for _ in 0..3 {
        rest_publish(&app.url, SERVICE, &channel, json!({"data": "x"})).await;
    }
    let user = app.signup("epoch").await;
    let mut client = app.connect(&user).await;
    let first = subscribe(&client, &channel, None).await;
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(first["offset"], 3);

    // Restarted with its AOF: the history and its epoch survive.
    redis.kill().await;
    redis.restart().await;
    let again = connect_when_redis_is_back(&app, &user).await;
    let kept = subscribe(&again, &channel, Some((1, &epoch))).await;
    assert_eq!(kept["recovered"], true, "{kept}");
    assert_eq!(offsets(&kept["publications"]), [2, 3]);
    again.close().await;

    // Flushed: the epoch changes, offsets start over, and a live subscriber hears it. (The
    // socket that checks recovery is connected first: the flush takes the accounts too.)
    let fresh = app.connect(&user).await;
    let out = tokio::process::Command::new("redis-cli")
        .args(["-u", &url, "FLUSHALL"])
        .output()
        .await
        .expect("flush");
    assert!(out.status.success());
    create(&app.url, &channel, json!({})).await;
    let (_, published) = rest_publish(&app.url, SERVICE, &channel, json!({"data": "after"})).await;
    assert_eq!(published["offset"], 1);
    assert_ne!(published["epoch"], epoch.as_str());
    let live = loop {
        // The subscriber may still get its resubscription's re-read first; the new epoch's
        // offset 1 is what it must get.
        let publication = next_publication(&mut client).await;
        if publication["epoch"] != epoch.as_str() {
            break publication;
        }
    };
    assert_eq!(live["offset"], 1);
    let after = subscribe(&fresh, &channel, Some((3, &epoch))).await;
    assert_eq!(after["recovered"], false, "the history is gone: start over");
    assert_eq!(after["epoch"], published["epoch"]);
    assert_eq!(offsets(&after["publications"]), [1]);
}

/// Connects once the node's Redis connections are back after a restart (a connect while the
/// subscriber reconnects is refused).
async fn connect_when_redis_is_back(app: &TestApp, user: &crate::helpers::User) -> TestClient {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match TestClient::try_connect(&app.url, user, false).await {
            Ok(client) => return client,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no connect after the restart: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn channel_presence_is_shared_across_nodes_when_on() {
    let (n0, _d0) = node(Backend::Redis).await;
    let (n1, _d1) = node(Backend::Redis).await;
    let channel = unique("pres");
    create(&n0.url, &channel, json!({ "presence": true })).await;
    let alice = n0.signup("alice").await;
    let bob = n1.signup("bob").await;
    let mut a = n0.connect(&alice).await;
    subscribe(&a, &channel, None).await;
    let b = n1.connect(&bob).await;
    subscribe(&b, &channel, None).await;
    // Every subscriber hears every join, its own included.
    let own = a
        .events
        .recv_named("channel_presence", PATIENCE)
        .await
        .expect("join")
        .data;
    assert_eq!(
        own,
        json!({"channel": channel, "uid": alice.uid, "state": "join"})
    );
    let joined = a
        .events
        .recv_named("channel_presence", PATIENCE)
        .await
        .expect("join")
        .data;
    assert_eq!(
        joined,
        json!({"channel": channel, "uid": bob.uid, "state": "join"})
    );
    let present: Value = http()
        .get(format!("{}/api/v1/channels/{channel}/presence", n1.url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("presence")
        .json()
        .await
        .expect("json");
    let mut expected = vec![alice.uid.clone(), bob.uid.clone()];
    expected.sort();
    assert_eq!(present["items"], json!(expected));
    assert_eq!(present["count"], 2);
    let left = b
        .client
        .emit_with_ack("unsubscribe", &json!({"channel": channel}), PATIENCE)
        .await
        .expect("unsubscribe");
    assert_eq!(left["ok"], true);
    let gone = a
        .events
        .recv_named("channel_presence", PATIENCE)
        .await
        .expect("leave")
        .data;
    assert_eq!(
        gone,
        json!({"channel": channel, "uid": bob.uid, "state": "leave"})
    );

    // Without presence on, there is no list to read.
    let quiet = unique("quiet");
    create(&n0.url, &quiet, json!({})).await;
    let res = http()
        .get(format!("{}/api/v1/channels/{quiet}/presence", n0.url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("presence");
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_uid_in_the_guest_namespace_cannot_be_signed_up() {
    let (app, _dir) = node(Backend::Embedded).await;
    let res = http()
        .post(format!("{}/api/v1/signup", app.url))
        .json(&json!({"uid": "guest-0b0e6a8e-7a55-4f7e-9a43-3e1d2c1b0a99", "password": "correct horse", "name": "x"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn subscribers_of_a_node_killed_while_publishing_recover_everything_on_the_other_node() {
    let keys = format!("shop:{SERVICE}");
    let args = ["--admin-token", ADMIN, "--service-keys", keys.as_str()];
    let doomed = NodeProcess::start(&args).await;
    let survivor = NodeProcess::start(&args).await;
    let channel = unique("kill");
    create(&survivor.url, &channel, json!({ "historySize": 1000 })).await;
    let bob = signup_at(&survivor.url, "bob").await;
    let mut on_doomed = TestClient::connect(&doomed.url, &bob).await;
    let ack = subscribe(&on_doomed, &channel, None).await;
    let epoch = ack["epoch"].as_str().expect("epoch").to_owned();

    // Publications through both nodes; the doomed one dies after the 40th is acked.
    let (doomed_url, survivor_url) = (doomed.url.clone(), survivor.url.clone());
    let mut acked = Vec::new();
    for i in 0..40u64 {
        let url = if i % 2 == 0 {
            &doomed_url
        } else {
            &survivor_url
        };
        let (status, body) =
            rest_publish(url, SERVICE, &channel, json!({"data": format!("k{i}")})).await;
        assert_eq!(status, 201);
        acked.push(body["offset"].as_u64().expect("offset"));
    }
    let mut seen = Vec::new();
    // Bob read some of them live before his node went.
    for _ in 0..10 {
        seen.push(
            next_publication(&mut on_doomed).await["offset"]
                .as_u64()
                .expect("offset"),
        );
    }
    doomed.kill().await;
    for i in 40..80u64 {
        let url = if i % 2 == 0 {
            &doomed_url
        } else {
            &survivor_url
        };
        // The dead node refuses connections: those publishes fail, nothing is acked.
        let sent = http()
            .post(format!("{url}/api/v1/channels/{channel}/publish"))
            .bearer_auth(SERVICE)
            .json(&json!({"data": format!("k{i}")}))
            .send()
            .await;
        if let Ok(res) = sent {
            if res.status() == 201 {
                let body: Value = res.json().await.expect("json");
                acked.push(body["offset"].as_u64().expect("offset"));
            }
        }
    }
    // Whatever bob got before the connection dropped, he resumes from there on the survivor.
    while let Some(event) = on_doomed.events.try_recv() {
        if event.name == "publication" {
            seen.push(event.data["offset"].as_u64().expect("offset"));
        }
    }
    let last = *seen.last().expect("something seen");
    let moved = TestClient::connect(&survivor.url, &bob).await;
    let back = subscribe(&moved, &channel, Some((last, &epoch))).await;
    assert_eq!(back["recovered"], true, "{back}");
    seen.extend(offsets(&back["publications"]));
    let newest = back["offset"].as_u64().expect("offset");
    assert_eq!(
        seen,
        (1..=newest).collect::<Vec<_>>(),
        "each once, none missing"
    );
    let max_acked = acked.iter().copied().max().expect("acked");
    assert!(
        newest >= max_acked,
        "every acked publication is in the history"
    );
}
