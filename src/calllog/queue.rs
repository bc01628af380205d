//! The call log's write-behind queue. A chat command puts its log record here (one cheap,
//! durable append) before the sender's ack; a drain task moves records to the call-log table
//! in batches. So logging never waits for the table's back-end, and a record acknowledged to
//! nobody is never lost: it stays queued until the table has it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{clients::Pool, interfaces::StreamsInterface, types::Value};
use tokio::sync::Notify;

use super::LogRecord;
use crate::storage::{
    embedded::{internal, EmbeddedDb, ReadableTable, ReadableTableMetadata, CALLLOG_QUEUE},
    redis::unavailable,
    StoreError,
};

/// A queued record and the handle that acknowledges it.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Back-end specific position.
    pub id: String,
    /// The record.
    pub record: LogRecord,
}

/// A durable FIFO of log records with at-least-once hand-out.
#[async_trait]
pub trait LogQueue: Send + Sync {
    /// Appends records durably.
    async fn enqueue(&self, records: &[LogRecord]) -> Result<(), StoreError>;
    /// Up to `max` records not yet acknowledged (waits up to `wait` when there are none).
    /// Records handed out and never acknowledged are handed out again later.
    async fn take(&self, max: usize, wait: Duration) -> Result<Vec<Queued>, StoreError>;
    /// Removes records that are safely in the table.
    async fn ack(&self, ids: &[String]) -> Result<(), StoreError>;
    /// How many records wait.
    async fn backlog(&self) -> Result<u64, StoreError>;
}

fn encode(record: &LogRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(internal)
}

/// `record` as a queue entry that an inbox append writes in the same step (see
/// `inbox::LogEntry`); the append adds the Seq.
pub fn entry_for_append(record: &LogRecord) -> Result<crate::inbox::LogEntry, StoreError> {
    Ok(crate::inbox::LogEntry::Queued {
        json: encode(record)?,
    })
}

/// A record that cannot be decoded is logged and acknowledged, never retried forever.
fn decode(id: &str, json: &str) -> Option<LogRecord> {
    match serde_json::from_str(json) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::error!(id, error = %e, "undecodable call-log record dropped");
            None
        }
    }
}

/// [`LogQueue`] in the embedded database (one node: positions are a counter).
pub struct EmbeddedQueue {
    db: EmbeddedDb,
    added: Arc<Notify>,
}

impl EmbeddedQueue {
    /// The queue table of `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self {
            db,
            added: Arc::new(Notify::new()),
        }
    }
}

#[async_trait]
impl LogQueue for EmbeddedQueue {
    async fn enqueue(&self, records: &[LogRecord]) -> Result<(), StoreError> {
        let encoded = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let added = self.added.clone();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CALLLOG_QUEUE).map_err(internal)?;
                    let first = match table.last().map_err(internal)? {
                        Some((key, _)) => key.value() + 1,
                        None => 1,
                    };
                    for (position, json) in (first..).zip(&encoded) {
                        table.insert(position, json.as_bytes()).map_err(internal)?;
                    }
                    Ok(())
                },
                move |_| added.notify_one(),
            )
            .await
    }

    async fn take(&self, max: usize, wait: Duration) -> Result<Vec<Queued>, StoreError> {
        let read = || {
            self.db.read(move |txn| {
                let table = txn.open_table(CALLLOG_QUEUE).map_err(internal)?;
                let mut out = Vec::new();
                for entry in table.iter().map_err(internal)?.take(max) {
                    let (key, value) = entry.map_err(internal)?;
                    let id = key.value().to_string();
                    let json = String::from_utf8_lossy(value.value()).into_owned();
                    out.push((id, json));
                }
                Ok(out)
            })
        };
        let notified = self.added.notified();
        let mut raw = read().await?;
        if raw.is_empty() {
            let _ = tokio::time::timeout(wait, notified).await;
            raw = read().await?;
        }
        let raw = raw.into_iter().map(|(id, json)| (id, json, None)).collect();
        Ok(into_queued(raw, |id| {
            // An undecodable row is dropped right away so it cannot block the queue.
            let db = self.db.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let _ = EmbeddedQueue::remove(&db, vec![id]).await;
            });
        }))
    }

    async fn ack(&self, ids: &[String]) -> Result<(), StoreError> {
        Self::remove(&self.db, ids.to_vec()).await
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        self.db
            .read(|txn| {
                let table = txn.open_table(CALLLOG_QUEUE).map_err(internal)?;
                table.len().map_err(internal)
            })
            .await
    }
}

impl EmbeddedQueue {
    async fn remove(db: &EmbeddedDb, ids: Vec<String>) -> Result<(), StoreError> {
        db.write(
            move |txn| {
                let mut table = txn.open_table(CALLLOG_QUEUE).map_err(internal)?;
                for id in &ids {
                    if let Ok(position) = id.parse::<u64>() {
                        table.remove(position).map_err(internal)?;
                    }
                }
                Ok(())
            },
            |_| {},
        )
        .await
    }
}

/// Decodes queued entries: (position, record JSON, the Seq an inbox append assigned when it
/// queued the record in the same step, see `inbox::LogEntry`).
fn into_queued(
    raw: Vec<(String, String, Option<u64>)>,
    mut drop_bad: impl FnMut(&str),
) -> Vec<Queued> {
    raw.into_iter()
        .filter_map(|(id, json, seq)| match decode(&id, &json) {
            Some(mut record) => {
                if let (
                    Some(seq),
                    LogRecord::Event { seq: logged, .. } | LogRecord::Lifecycle { seq: logged, .. },
                ) = (seq, &mut record)
                {
                    *logged = Some(seq);
                }
                Some(Queued { id, record })
            }
            None => {
                drop_bad(&id);
                None
            }
        })
        .collect()
}

/// The consumer group of every node draining one stream.
const GROUP: &str = "writers";
/// A record handed to a node that has not acknowledged it for this long (the node died or
/// lost its table) is taken over by another node.
const CLAIM_IDLE_MS: u64 = 60_000;

/// [`LogQueue`] on a Redis stream with a consumer group: every node drains, each record goes
/// to one node, and a dead node's records are claimed by the others.
pub struct RedisQueue {
    stream: String,
    pool: Pool,
    /// A connection of its own: blocking reads must not stall chat commands on the pool.
    reader: Pool,
    consumer: String,
}

impl RedisQueue {
    /// The queue on `stream`, drained by `consumer` (unique per node); creates the consumer
    /// group if missing. Nodes that share a stream must share the call-log table too.
    pub async fn new(
        stream: String,
        pool: Pool,
        reader: Pool,
        consumer: String,
    ) -> Result<Self, StoreError> {
        let created: Result<Value, _> = pool.xgroup_create(&stream, GROUP, "0", true).await;
        if let Err(e) = created {
            // Another node made it first.
            if !e.to_string().contains("BUSYGROUP") {
                return Err(unavailable(e));
            }
        }
        Ok(Self {
            stream,
            pool,
            reader,
            consumer,
        })
    }

    fn parse_entries(value: Value) -> Vec<(String, String, Option<u64>)> {
        // [[id, [field, value, ...]], ...]; deleted entries come back with a nil body.
        let mut out = Vec::new();
        for entry in value.into_array() {
            let mut parts = entry.into_array().into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(id) = id.as_string() else { continue };
            let fields: HashMap<String, String> = fields.convert().unwrap_or_default();
            let seq = fields.get("s").and_then(|s| s.parse().ok());
            out.push((id, fields.get("r").cloned().unwrap_or_default(), seq));
        }
        out
    }
}

#[async_trait]
impl LogQueue for RedisQueue {
    async fn enqueue(&self, records: &[LogRecord]) -> Result<(), StoreError> {
        for record in records {
            let json = encode(record)?;
            let _: Value = self
                .pool
                .xadd(&self.stream, false, None, "*", vec![("r", json)])
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn take(&self, max: usize, wait: Duration) -> Result<Vec<Queued>, StoreError> {
        let count = Some(u64::try_from(max).unwrap_or(u64::MAX));
        // First what a dead or restarted node left behind.
        let claimed: Value = self
            .reader
            .xautoclaim(
                &self.stream,
                GROUP,
                &self.consumer,
                CLAIM_IDLE_MS,
                "0-0",
                count,
                false,
            )
            .await
            .map_err(unavailable)?;
        let mut raw = match claimed.into_array().into_iter().nth(1) {
            Some(entries) => Self::parse_entries(entries),
            None => Vec::new(),
        };
        if raw.is_empty() {
            let block = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let read: Value = self
                .reader
                .xreadgroup(
                    GROUP,
                    &self.consumer,
                    count,
                    Some(block),
                    false,
                    &self.stream,
                    ">",
                )
                .await
                .map_err(unavailable)?;
            // RESP3: {stream: [[id, fields], ...]}; RESP2: [[stream, [[id, fields], ...]]].
            raw = match read {
                Value::Map(map) => map
                    .inner()
                    .into_values()
                    .flat_map(Self::parse_entries)
                    .collect(),
                Value::Array(streams) => streams
                    .into_iter()
                    .filter_map(|s| s.into_array().into_iter().nth(1))
                    .flat_map(Self::parse_entries)
                    .collect(),
                _ => Vec::new(),
            };
        }
        let mut bad = Vec::new();
        let queued = into_queued(raw, |id| bad.push(id.to_owned()));
        if !bad.is_empty() {
            self.ack(&bad).await?;
        }
        Ok(queued)
    }

    async fn ack(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: Value = self
            .pool
            .xack(&self.stream, GROUP, ids.to_vec())
            .await
            .map_err(unavailable)?;
        // Drained records are not needed again: the stream holds only the backlog.
        let _: Value = self
            .pool
            .xdel(&self.stream, ids.to_vec())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        self.pool.xlen(&self.stream).await.map_err(unavailable)
    }
}
