//! The one-round-trip write of a 1:1 event on one Redis: the inbox append queues the event's
//! call-log record in the same script call, with the Seq it got, so the drain reads a record
//! complete with its Seq; duplicates and Redis Cluster fall back to queueing it separately.
//! Where the call-log table is that Redis too, the append writes the record's table rows
//! themselves (no queue entry, no drain).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::Value;
use webchat::{
    calllog::{
        queue::{entry_for_append, LogQueue, RedisQueue},
        rows_for, CallLog, Conversation, LogRecord,
    },
    domain::{MsgId, UserId, WireEvent},
    groups::RedisGroupStore,
    inbox::{AppendOutcome, DedupeKey, InboxLimits, InboxStore, LogEntry, Logged, RedisInbox},
    storage::{
        redis::RedisHandles,
        redis_table::RedisTable,
        table::{Row, SortedTable},
    },
};

use crate::helpers::{redis_cluster_url, redis_integer, redis_url, unique};

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

/// The call log of `redis` with a queue (so logging is on) over the Redis table.
async fn redis_call_log(redis: &RedisHandles, table: Arc<RedisTable>) -> CallLog {
    let queue = RedisQueue::new(
        format!("wc:{}:calllog", unique("rows")),
        redis.pool.clone(),
        redis.blocking.clone(),
        unique("node"),
    )
    .await
    .expect("queue");
    CallLog::new(
        Some(Arc::new(queue)),
        table,
        Arc::new(RedisGroupStore::new(redis.pool.clone(), 60)),
    )
}

/// One Redis as inbox and call-log table, with logging on and no queue stream for the
/// inbox (whatever is logged is logged by the rows the append carries), and two new users.
struct RowsRig {
    table: Arc<RedisTable>,
    calllog: CallLog,
    inbox: RedisInbox,
    alice: UserId,
    bob: UserId,
}

impl RowsRig {
    async fn start() -> Self {
        let redis = RedisHandles::connect(&redis_url()).await.expect("redis");
        let table = Arc::new(RedisTable::new(redis.pool.clone()));
        Self {
            calllog: redis_call_log(&redis, table.clone()).await,
            inbox: RedisInbox::new(redis.pool.clone(), false, LIMITS, None),
            table,
            alice: UserId::parse(&unique("alice")).expect("uid"),
            bob: UserId::parse(&unique("bob")).expect("uid"),
        }
    }
}

/// `rows` read back from `table`: (pk, sk) → attributes.
async fn stored(table: &RedisTable, rows: &[Row]) -> BTreeMap<(String, String), Value> {
    let keys = rows.iter().map(|r| (r.pk.clone(), r.sk.clone())).collect();
    table
        .get_rows(keys)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| ((r.pk, r.sk), Value::Object(r.attrs)))
        .collect()
}

#[tokio::test]
async fn one_redis_writes_a_messages_call_log_rows_in_its_append() {
    let RowsRig {
        table,
        calllog,
        inbox,
        alice,
        bob,
    } = RowsRig::start().await;
    // Bob has a message already, so this one gets Seq 2 (the rows must carry the append's Seq).
    let (first, first_dedupe, _) = message(&alice, &bob, "m0");
    inbox
        .append(&bob, &first, Some(&first_dedupe), None)
        .await
        .expect("first");

    let (event, dedupe, record) = message(&alice, &bob, "m1");
    let entry = calllog
        .entry_for_append(&record)
        .expect("entry")
        .expect("logging is on");
    assert!(
        matches!(entry, LogEntry::Rows(_)),
        "one Redis: the rows themselves, not a queue entry: {entry:?}"
    );
    let (outcome, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append");
    assert_eq!(outcome, AppendOutcome::Stored { seq: 2 });
    assert_eq!(logged, Logged::Yes, "written by the append itself");

    // Exactly the rows the drain would have written for the record with its Seq.
    let mut with_seq = record.clone();
    if let LogRecord::Event { seq, .. } = &mut with_seq {
        *seq = Some(2);
    }
    let expected = rows_for(std::slice::from_ref(&with_seq));
    let all: Vec<Row> = expected
        .plain
        .iter()
        .cloned()
        .chain(expected.versioned.iter().map(|(r, _)| r.clone()))
        .collect();
    assert_eq!(all.len(), 6, "a 1:1 message's rows: {all:#?}");
    let found = stored(&table, &all).await;
    let wanted: BTreeMap<(String, String), Value> = all
        .iter()
        .map(|r| ((r.pk.clone(), r.sk.clone()), Value::Object(r.attrs.clone())))
        .collect();
    assert_eq!(found, wanted);
    // The conversation and the users' copies are in the retention index, so they are trimmed.
    for row in expected.plain.iter() {
        let score = redis_integer(&["ZSCORE", "wc:{log-retention}:ages", &row.pk]).await;
        assert_eq!(score, event.sent_at, "{} registered", row.pk);
    }

    // A re-send writes nothing (the caller logs it again, the same rows).
    let (again, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append again");
    assert!(
        matches!(again, AppendOutcome::Duplicate { .. }),
        "{again:?}"
    );
    assert_eq!(logged, Logged::No);
}

#[tokio::test]
async fn a_carried_summary_never_moves_backwards() {
    let RowsRig {
        table,
        calllog,
        inbox,
        alice,
        bob,
    } = RowsRig::start().await;
    // A later message's rows are in the table already (written by another node's drain).
    let (newer, _, mut newer_record) = message(&alice, &bob, "newer");
    if let LogRecord::Event { sent_at, seq, .. } = &mut newer_record {
        *sent_at = newer.sent_at + 60_000;
        *seq = Some(7);
    }
    webchat::calllog::drain::write(table.as_ref(), std::slice::from_ref(&newer_record))
        .await
        .expect("newer rows");

    let (event, dedupe, record) = message(&alice, &bob, "older");
    let entry = calllog
        .entry_for_append(&record)
        .expect("entry")
        .expect("on");
    let (_, logged) = inbox
        .append_logged(&bob, &event, Some(&dedupe), None, &entry)
        .await
        .expect("append");
    assert_eq!(logged, Logged::Yes);
    let summaries: Vec<Row> = rows_for(std::slice::from_ref(&newer_record))
        .versioned
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.pk.starts_with("v#"))
        .collect();
    assert_eq!(summaries.len(), 2, "one summary per side");
    for ((pk, _), attrs) in stored(&table, &summaries).await {
        assert_eq!(
            attrs["m"], "newer",
            "{pk}: the newer message stays the latest"
        );
    }
    // The older message itself is in the conversation.
    let conversation = rows_for(std::slice::from_ref(&record))
        .plain
        .into_iter()
        .filter(|r| r.pk.starts_with("c#"))
        .collect::<Vec<_>>();
    let found = stored(&table, &conversation).await;
    assert_eq!(found.len(), 1);
    assert!(found.values().all(|attrs| attrs["seq"] == 1), "{found:?}");
}

#[tokio::test]
async fn redis_cluster_queues_the_record_instead_of_carrying_rows() {
    let redis = RedisHandles::connect(&redis_cluster_url())
        .await
        .expect("redis cluster");
    let table = Arc::new(RedisTable::new(redis.pool.clone()));
    let calllog = redis_call_log(&redis, table).await;
    let (alice, bob) = (
        UserId::parse(&unique("alice")).expect("uid"),
        UserId::parse(&unique("bob")).expect("uid"),
    );
    let (_, _, record) = message(&alice, &bob, "m1");
    let entry = calllog
        .entry_for_append(&record)
        .expect("entry")
        .expect("on");
    assert!(
        matches!(entry, LogEntry::Queued { .. }),
        "the rows live in other slots than the inbox: {entry:?}"
    );
}
