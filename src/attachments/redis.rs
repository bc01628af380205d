//! Attachment records in Redis, so that every node sees who may read what (`<p>` is the
//! deployment's table prefix, as for the call log's stream):
//! - `wc:<p>att:{<id>}` a hash: `r` the record as uploaded (JSON), `c:<conversation>` the last
//!   send there (unix ms), `last` the last send anywhere;
//! - `wc:<p>att:unsent` / `wc:<p>att:sent`: sorted sets of ids by upload time / last send, read by
//!   the sweep.
//!
//! Every command names one key, so this works unchanged on Redis Cluster. A send writes the
//! hash first (that grants access), then moves the id between the indexes; a sweep re-reads
//! the hash before deleting anything, so an index a failure left stale deletes nothing.

use std::collections::HashMap;

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
};

use super::{AttachmentStore, Record};
use crate::{
    domain::AttachmentId,
    storage::{redis::unavailable, StoreError},
};

/// [`AttachmentStore`] over Redis (layout in the module doc).
pub struct RedisAttachmentStore {
    pool: Pool,
    prefix: String,
    unsent: String,
    sent: String,
}

impl RedisAttachmentStore {
    /// A store over `pool`, its keys under `wc:<prefix>att:`.
    pub fn new(pool: Pool, prefix: &str) -> Self {
        Self {
            pool,
            unsent: format!("wc:{prefix}att:unsent"),
            sent: format!("wc:{prefix}att:sent"),
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, id: &AttachmentId) -> String {
        format!("wc:{}att:{{{id}}}", self.prefix)
    }

    async fn before(
        &self,
        index: &String,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<String> = self
            .pool
            .zrangebyscore(
                index,
                "-inf",
                format!("({cutoff_ms}"),
                false,
                Some((0, count)),
            )
            .await
            .map_err(unavailable)?;
        Ok(ids
            .iter()
            .filter_map(|id| AttachmentId::parse(id).ok())
            .collect())
    }
}

#[async_trait]
impl AttachmentStore for RedisAttachmentStore {
    async fn insert(&self, record: &Record) -> Result<(), StoreError> {
        let id = AttachmentId::parse(&record.id).map_err(|e| StoreError::Internal(e.message))?;
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::Internal(e.to_string()))?;
        let _: i64 = self
            .pool
            .hset(self.key(&id), ("r", json))
            .await
            .map_err(unavailable)?;
        #[allow(clippy::cast_precision_loss)] // unix ms are exact in an f64 until year 287396
        let score = record.created_at as f64;
        let _: i64 = self
            .pool
            .zadd(&self.unsent, None, None, false, false, (score, id.as_str()))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: &AttachmentId) -> Result<Option<Record>, StoreError> {
        let fields: HashMap<String, String> =
            self.pool.hgetall(self.key(id)).await.map_err(unavailable)?;
        let Some(json) = fields.get("r") else {
            return Ok(None);
        };
        let mut record: Record =
            serde_json::from_str(json).map_err(|e| StoreError::Internal(e.to_string()))?;
        record.sent_to = fields
            .keys()
            .filter_map(|f| f.strip_prefix("c:"))
            .map(str::to_owned)
            .collect();
        record.sent_to.sort_unstable();
        record.last_sent_at = fields.get("last").and_then(|l| l.parse().ok());
        Ok(Some(record))
    }

    async fn mark_sent(
        &self,
        id: &AttachmentId,
        conversation: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let exists: bool = self
            .pool
            .hexists(self.key(id), "r")
            .await
            .map_err(unavailable)?;
        if !exists {
            return Ok(false);
        }
        let at = at_ms.to_string();
        let _: i64 = self
            .pool
            .hset(
                self.key(id),
                vec![
                    (format!("c:{conversation}"), at.clone()),
                    ("last".to_owned(), at),
                ],
            )
            .await
            .map_err(unavailable)?;
        #[allow(clippy::cast_precision_loss)] // unix ms are exact in an f64 until year 287396
        let score = at_ms as f64;
        let _: i64 = self
            .pool
            .zadd(&self.sent, None, None, false, false, (score, id.as_str()))
            .await
            .map_err(unavailable)?;
        let _: i64 = self
            .pool
            .zrem(&self.unsent, id.as_str())
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn remove(&self, id: &AttachmentId) -> Result<(), StoreError> {
        let _: i64 = self.pool.del(self.key(id)).await.map_err(unavailable)?;
        for index in [&self.unsent, &self.sent] {
            let _: i64 = self
                .pool
                .zrem(index, id.as_str())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn unsent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.before(&self.unsent, cutoff_ms, limit).await
    }

    async fn sent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.before(&self.sent, cutoff_ms, limit).await
    }
}
