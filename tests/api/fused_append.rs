//! The one-round-trip write of a 1:1 event on one Redis: the inbox append queues the event's
//! call-log record in the same script call, with the Seq it got, so the drain reads a record
//! complete with its Seq; duplicates and Redis Cluster fall back to queueing it separately.

use std::time::Duration;

use webchat::{
    calllog::{
        queue::{entry_for_append, LogQueue, RedisQueue},
        Conversation, LogRecord,
    },
    domain::{MsgId, UserId, WireEvent},
    inbox::{AppendOutcome, DedupeKey, InboxLimits, InboxStore, Logged, RedisInbox},
    storage::redis::RedisHandles,
};

use crate::helpers::{redis_cluster_url, redis_url, unique};

const LIMITS: InboxLimits = InboxLimits {
    max_len: 1000,
    max_age_secs: 3600,
    dedupe_window_secs: 600,
};

fn message(from: &UserId, to: &UserId, msg_id: &str) -> (WireEvent, DedupeKey, LogRecord) {
    let event = WireEvent::new("message", from.as_str(), to.as_str(), msg_id, "hi".into());
    let dedupe = DedupeKey {
        sender: from.clone(),
        kind: "message",
        msg_id: MsgId::parse(msg_id).expect("msg id"),
        group: None,
    };
    let record = LogRecord::Event {
        evt_type: "message".into(),
        actor: from.to_string(),
        conversation: Conversation::Direct {
            peer: to.to_string(),
        },
        msg_id: msg_id.into(),
        body: "hi".into(),
        sent_at: event.sent_at,
        seq: None,
        attachments: Vec::new(),
    };
    (event, dedupe, record)
}

#[tokio::test]
async fn one_redis_queues_the_log_record_in_the_append_with_its_seq() {
    let redis = RedisHandles::connect(&redis_url()).await.expect("redis");
    let stream = format!("wc:{}:calllog", unique("fused"));
    let inbox = RedisInbox::new(redis.pool.clone(), false, LIMITS, Some(stream.clone()));
    let queue = RedisQueue::new(
        stream.clone(),
        redis.pool.clone(),
        redis.blocking.clone(),
        unique("node"),
    )
    .await
    .expect("queue");
    let (alice, bob) = (
        UserId::parse(&unique("alice")).expect("uid"),
        UserId::parse(&unique("bob")).expect("uid"),
    );

    let (event, dedupe, record) = message(&alice, &bob, "m1");
    let entry = entry_for_append(&record).expect("entry");
    let (outcome, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append");
    assert_eq!(outcome, AppendOutcome::Stored { seq: 1 });
    assert_eq!(
        logged,
        Logged::Yes,
        "one Redis: queued by the append itself"
    );
    // A re-send stores nothing and queues nothing: the caller logs it (idempotent rows).
    let (again, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append again");
    assert!(
        matches!(again, AppendOutcome::Duplicate { seq: Some(1), .. }),
        "{again:?}"
    );
    assert_eq!(logged, Logged::No);

    let taken = queue
        .take(10, Duration::from_millis(100))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1, "exactly one record queued: {taken:?}");
    match &taken[0].record {
        LogRecord::Event { msg_id, seq, .. } => {
            assert_eq!(msg_id, "m1");
            assert_eq!(
                *seq,
                Some(1),
                "the record carries the Seq the append assigned"
            );
        }
        other => panic!("not an event: {other:?}"),
    }
}

#[tokio::test]
async fn redis_cluster_leaves_the_log_record_to_the_caller() {
    let redis = RedisHandles::connect(&redis_cluster_url())
        .await
        .expect("redis cluster");
    let stream = format!("wc:{}:calllog", unique("fused"));
    // The stream lives in another slot than any inbox: never written by the append script.
    let inbox = RedisInbox::new(redis.pool.clone(), true, LIMITS, Some(stream));
    let (alice, bob) = (
        UserId::parse(&unique("alice")).expect("uid"),
        UserId::parse(&unique("bob")).expect("uid"),
    );
    let (event, dedupe, record) = message(&alice, &bob, "m1");
    let entry = entry_for_append(&record).expect("entry");
    let (outcome, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append");
    assert_eq!(outcome, AppendOutcome::Stored { seq: 1 });
    assert_eq!(logged, Logged::No);
}
