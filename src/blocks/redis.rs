//! Blocks in Redis: a set per blocker, `wc:{uid}:blocks`. The key carries the blocker's hash
//! tag, so on Redis Cluster a check ("does the recipient block the sender") is one SISMEMBER
//! on the shard that already holds the recipient's inbox.

use async_trait::async_trait;
use fred::{clients::Pool, interfaces::SetsInterface};

use super::BlockStore;
use crate::inbox::Rider;
use crate::{
    domain::UserId,
    storage::{
        redis::{unavailable, user_key},
        StoreError,
    },
};

/// [`BlockStore`] over Redis sets.
pub struct RedisBlockStore {
    pool: Pool,
}

impl RedisBlockStore {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn blocks_key(blocker: &UserId) -> String {
    user_key(blocker.as_str(), "blocks")
}

#[async_trait]
impl BlockStore for RedisBlockStore {
    async fn block(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        let _: i64 = self
            .pool
            .sadd(blocks_key(blocker), blocked.as_str())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        let _: i64 = self
            .pool
            .srem(blocks_key(blocker), blocked.as_str())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn blocks(&self, blocker: &UserId, other: &UserId) -> Result<bool, StoreError> {
        self.pool
            .sismember(blocks_key(blocker), other.as_str())
            .await
            .map_err(unavailable)
    }

    fn refusal_rider(&self, blocker: &UserId, other: &UserId) -> Option<Rider> {
        Some(Rider::RefuseIfMember {
            key: blocks_key(blocker),
            member: other.to_string(),
        })
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<String>, StoreError> {
        let mut blocked: Vec<String> = self
            .pool
            .smembers(blocks_key(blocker))
            .await
            .map_err(unavailable)?;
        blocked.sort_unstable();
        Ok(blocked)
    }
}
