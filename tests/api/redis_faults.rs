//! Redis connection faults: subscriptions come back and nothing stored is missed.

use crate::helpers::*;

/// Drops every pub/sub connection (on every master of a cluster), as Redis does to a
/// subscriber whose output buffer overflowed.
async fn kill_subscriber_connections(backend: Backend) {
    for target in cli_targets(backend) {
        run_redis_cli(&target, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    }
}

/// Whether exactly one connection (the receiver's node) is subscribed to `channel`: a
/// classic subscription on one Redis, a sharded one on a cluster.
async fn subscribers(backend: Backend, channel: &str) -> bool {
    let command = match backend {
        Backend::RedisCluster => "SHARDNUMSUB",
        _ => "NUMSUB",
    };
    let mut total = 0;
    for target in cli_targets(backend) {
        total += run_redis_cli(&target, &["PUBSUB", command, channel])
            .await
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<i64>().ok())
            .unwrap_or(0);
    }
    total == 1
}

#[tokio::test]
async fn a_dropped_subscriber_connection_resubscribes_and_resyncs_sockets() {
    dropped_subscriber_connections(Backend::Redis).await;
}

#[tokio::test]
async fn dropped_subscriber_connections_on_every_cluster_master_resubscribe_sharded_channels() {
    dropped_subscriber_connections(Backend::RedisCluster).await;
}

async fn dropped_subscriber_connections(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let carol = nodes[0].signup("carol").await;
    let sender = nodes[0].connect(&alice).await;
    let mut receiver = nodes[1].connect(&bob).await;
    sender.send(&bob.uid, "before", "x").await;
    assert_eq!(receiver.next_chat_acked().await.data["MsgID"], "before");

    kill_subscriber_connections(backend).await;
    // Sent while node 1 may not be subscribed: stored, so it must still arrive, in order.
    for i in 0..20 {
        sender.send(&bob.uid, &format!("during{i}"), "x").await;
    }
    for i in 0..20 {
        let e = receiver.next_chat_acked().await;
        assert_eq!(e.data["MsgID"], format!("during{i}"));
    }
    // The subscription itself is back (not only the resync's re-read of the inbox)...
    let channel = format!("wc:{{{}}}:ch", bob.uid);
    eventually("bob's channel subscribed again", || {
        subscribers(backend, &channel)
    })
    .await;
    // ...so what is sent now arrives live.
    sender.send(&bob.uid, "after", "x").await;
    assert_eq!(receiver.next_chat_acked().await.data["MsgID"], "after");
    // New subscriptions work too.
    let mut late = nodes[1].connect(&carol).await;
    sender.send(&carol.uid, "to-carol", "x").await;
    assert_eq!(late.next_chat_acked().await.data["MsgID"], "to-carol");
}

#[tokio::test]
async fn a_lost_publish_is_read_from_the_inbox_before_the_next_live_event() {
    a_lost_publish_is_filled_in(Backend::Redis).await;
}

#[tokio::test]
async fn a_lost_sharded_publish_is_read_from_the_inbox_before_the_next_live_event() {
    a_lost_publish_is_filled_in(Backend::RedisCluster).await;
}

/// A message stored while its receiver's node was not subscribed (its subscriber connection
/// was coming back after a Redis restart) never reaches the node live. The next message
/// does; the receiver must get the lost one first, not only after a reconnect, and acking
/// the later one must not confirm away the lost one. Seen in CI as 2 of ~3,500 acknowledged
/// messages missing after a Redis restart.
async fn a_lost_publish_is_filled_in(backend: Backend) {
    let nodes = spawn_nodes(backend, 2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    let sender = nodes[0].connect(&alice).await;
    let mut receiver = nodes[1].connect(&bob).await;
    sender.send(&bob.uid, "first", "x").await;
    let first = receiver.next_chat_acked().await;
    assert_eq!(first.data["MsgID"], "first");

    // What the append script does, minus the PUBLISH: the message is stored, and its
    // publish is the one that was lost.
    let seq = redis_cli(backend, &["INCR", &format!("wc:{{{}}}:seq", bob.uid)]).await;
    let lost = serde_json::json!({
        "EvtType": "message", "From": alice.uid, "Originated": alice.uid, "To": bob.uid,
        "MsgID": "lost", "Timestamp": 0, "Body": "x", "SentAt": first.data["SentAt"],
    });
    redis_cli(
        backend,
        &[
            "XADD",
            &format!("wc:{{{}}}:inbox", bob.uid),
            &format!("{seq}-0"),
            "e",
            &lost.to_string(),
        ],
    )
    .await;

    sender.send(&bob.uid, "next", "x").await;
    let got = receiver.next_chat_acked().await;
    assert_eq!(
        (got.data["MsgID"].clone(), got.data["Seq"].to_string()),
        (serde_json::json!("lost"), seq.clone()),
        "the lost message comes first"
    );
    assert_eq!(receiver.next_chat_acked().await.data["MsgID"], "next");
}

#[tokio::test]
async fn while_redis_is_down_sends_get_unavailable_and_service_resumes_when_it_returns() {
    let mut redis = OwnRedis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.redis_url = Some(redis.url());
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let sender = app.connect(&alice).await;
    let mut receiver = app.connect(&bob).await;
    sender.send(&bob.uid, "up", "x").await;
    assert_eq!(receiver.next_chat_acked().await.data["MsgID"], "up");

    redis.kill().await;
    let down = sender
        .client
        .emit_with_ack(
            "chat",
            &serde_json::json!({"EvtType":"message","To":bob.uid,"MsgID":"down","Body":"x"}),
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("an answer, not silence");
    assert_eq!(
        down["error"]["code"], "unavailable",
        "never a false ack: {down}"
    );

    redis.restart().await;
    // fred reconnects with backoff; the first sends after the restart may still fail.
    eventually("sends to succeed again", || async {
        sender.send(&bob.uid, "back", "x").await["ok"] == true
    })
    .await;
    let next = receiver.next_chat_acked().await;
    assert_eq!(
        next.data["MsgID"], "back",
        "the refused message was not stored"
    );
}

/// Issue 7: Redis (AOF, `appendfsync always`) is killed and restarted while 50 senders send
/// continuously through two nodes. Every acknowledged message arrives, in order; sends
/// during the outage are answered `unavailable` (never a false ack) and re-sent with the
/// same MsgID; service resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_sustained_traffic_loses_no_acknowledged_message() {
    use crate::traffic::Traffic;
    use std::{sync::atomic::Ordering, time::Duration};

    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let args = [
        "--redis-url",
        url.as_str(),
        "--auth",
        "open",
        "--socket-rate",
        "0",
    ];
    let node_a = NodeProcess::start_with(&args).await;
    let node_b = NodeProcess::start_with(&args).await;
    let run = unique("r");
    let mut traffic = Traffic::start(&[node_a.url.clone(), node_b.url.clone()], 50, &run).await;

    let none = vec![0; traffic.pairs.len()];
    traffic
        .wait_for_each_sender(&none, 30, Duration::from_secs(30))
        .await;
    redis.kill().await;
    // The outage lasts until most senders have been told `unavailable`.
    eventually_within(
        "40 senders to get `unavailable`",
        Duration::from_secs(60),
        || async {
            traffic
                .pairs
                .iter()
                .filter(|p| p.sent.unavailable.load(Ordering::Relaxed) > 0)
                .count()
                >= 40
        },
    )
    .await;
    let during = traffic.acked_per_sender();
    redis.restart().await;
    // Service resumes by itself: every sender gets 30 more messages acknowledged.
    traffic
        .wait_for_each_sender(&during, 30, Duration::from_secs(60))
        .await;
    let acked = traffic.stop_sending().await;

    let redeliveries = traffic.verify_all_delivered(Duration::from_secs(30)).await;
    let unavailable = traffic.total(|s| s.unavailable.load(Ordering::Relaxed));
    let cut_off = traffic.total(|s| s.cut_off.load(Ordering::Relaxed));
    let mut gaps = 0;
    for node in [&node_a, &node_b] {
        gaps += metric_at(&node.url, "webchat_live_gaps_total").await;
    }
    eprintln!(
        "redis restart under load: {acked} messages acknowledged, 0 lost, {redeliveries} \
         redelivered; {unavailable} `unavailable` answers, {cut_off} sends unanswered; \
         {gaps} lost publishes filled in from inboxes"
    );
    drop(node_a);
    drop(node_b);
}
