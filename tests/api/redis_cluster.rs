//! Redis Cluster (three masters, WEBCHAT_TEST_REDIS_CLUSTER_URL): users spread over every
//! shard, each user's inbox and channel on one shard, sharded pub/sub, and batches of appends
//! that span many slots. The 1:1, group, receipt, presence and offline flows also run on the
//! cluster: see the `*_on_redis_cluster` tests in the other modules.

use std::{collections::BTreeMap, process::Command};

use serde_json::json;

use crate::helpers::*;

/// `redis-cli` against one master, without following redirects; the raw output.
fn redis_cli(master: &(String, String), args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", &master.0, "-p", &master.1])
        .args(args)
        .output()
        .expect("redis-cli (installed by scripts/test-all.sh)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The number the last line of a redis-cli answer holds (0 for an error such as MOVED).
fn last_number(answer: &str) -> i64 {
    answer
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_spread_over_every_shard_and_a_batch_spanning_slots_reaches_everyone_in_order() {
    let nodes = spawn_nodes(Backend::RedisCluster, 2).await;
    let alice = nodes[0].signup("alice").await;
    let mut receivers = Vec::new();
    for i in 0..40 {
        receivers.push(nodes[0].signup(&format!("r{i}")).await);
    }
    // Half the receivers are online on the other node, half are offline.
    let mut online = Vec::new();
    for user in &receivers[..20] {
        online.push(nodes[1].connect(user).await);
    }
    let mut a = nodes[0].connect(&alice).await;

    // A group of 41: its notify and its message are 41 appends in 41 users' slots at once.
    let members: Vec<&str> = receivers.iter().map(|u| u.uid.as_str()).collect();
    let ack = a
        .chat(json!({"EvtType": "create", "To": "", "Body": json!(members).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    assert_eq!(a.next_chat_acked().await.data["EvtType"], "notify");
    let ack = a
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "g1", "Body": "to all"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Then 40 concurrent 1:1 messages: the node batches them into shared script calls,
    // which on a cluster must be split per slot.
    let ids: Vec<String> = receivers.iter().map(|r| format!("d-{}", r.uid)).collect();
    let sends = receivers
        .iter()
        .zip(&ids)
        .map(|(r, id)| a.send(&r.uid, id, "direct"));
    for ack in futures_util::future::join_all(sends).await {
        assert_eq!(ack["ok"], true, "{ack}");
    }

    let expect_three = |got: Vec<(String, String, u64)>, uid: &str| {
        assert_eq!(
            got,
            vec![
                ("notify".to_owned(), String::new(), 1),
                ("message".to_owned(), "g1".to_owned(), 2),
                ("message".to_owned(), format!("d-{uid}"), 3),
            ],
            "{uid}"
        );
    };
    for (client, user) in online.iter_mut().zip(&receivers) {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = client.next_chat_acked().await;
            got.push(summary(&e.data));
        }
        expect_three(got, &user.uid);
    }
    for user in &receivers[20..] {
        let mut client = nodes[0].connect(user).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = client.next_chat_acked().await;
            got.push(summary(&e.data));
        }
        expect_three(got, &user.uid);
    }

    // Every master holds some of these users' keys, and each online user's channel is a
    // sharded subscription on exactly one master (the one that owns its slot), never a
    // classic one.
    let masters = redis_cluster_masters();
    assert_eq!(masters.len(), 3, "three masters");
    let mut inboxes_per_master: BTreeMap<String, usize> = BTreeMap::new();
    for user in &receivers {
        let inbox = format!("wc:{{{}}}:seq", user.uid);
        for master in &masters {
            if last_number(&redis_cli(master, &["exists", &inbox])) == 1 {
                *inboxes_per_master.entry(master.1.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(
        inboxes_per_master.len(),
        3,
        "users on every shard: {inboxes_per_master:?}"
    );
    assert_eq!(inboxes_per_master.values().sum::<usize>(), 40);
    // Eventually: `redis_faults` drops every pub/sub connection of this shared cluster
    // while other tests run, and a node then takes a moment to subscribe again.
    for user in &receivers[..20] {
        let channel = format!("wc:{{{}}}:ch", user.uid);
        let counts = || {
            let sharded: i64 = masters
                .iter()
                .map(|m| last_number(&redis_cli(m, &["pubsub", "shardnumsub", &channel])))
                .sum();
            let classic: i64 = masters
                .iter()
                .map(|m| last_number(&redis_cli(m, &["pubsub", "numsub", &channel])))
                .sum();
            (sharded, classic)
        };
        eventually(&format!("one sharded subscription to {channel}"), || {
            let counts = counts();
            async move { counts == (1, 0) }
        })
        .await;
    }
}

/// (EvtType, MsgID of a message, Seq) of an event.
fn summary(e: &serde_json::Value) -> (String, String, u64) {
    let kind = e["EvtType"].as_str().unwrap_or("").to_owned();
    let msg_id = if kind == "message" {
        e["MsgID"].as_str().unwrap_or("").to_owned()
    } else {
        String::new()
    };
    (kind, msg_id, e["Seq"].as_u64().unwrap_or(0))
}
