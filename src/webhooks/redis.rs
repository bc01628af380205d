//! [`WebhookStore`] on Redis (one Redis or a Redis Cluster), shared by every node.
//!
//! Keys (the registry and queue share one hash tag, so the queue's scripts touch one slot
//! on a cluster; the prefix is the table prefix, so deployments sharing a Redis keep apart):
//! - `wc:{<prefix>wh}:endpoints` hash: endpoint id → JSON
//! - `wc:{<prefix>wh}:jobs`      hash: job id → JSON
//! - `wc:{<prefix>wh}:due`       sorted set: job id by due time (unix ms)
//! - `wc:{uid}:push`             hash: push endpoint URL → subscription JSON (the user's slot)
//! - `wc:vapid_key`              the shared VAPID private key when none is configured

use std::collections::HashMap;

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface},
    types::{scripts::Script, SetOptions},
};

use super::{decode_all, Endpoint, Job, Subscription, VapidKey, WebhookStore};
use crate::storage::{
    embedded::internal,
    redis::{unavailable, user_key},
    StoreError,
};

/// Adds jobs that are not queued yet: ARGV = id, JSON, due, id, JSON, due, …
const SCHEDULE_LUA: &str = r"
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  end
end
return 0
";

/// Claims due jobs: ARGV = now, leased until, max. Each due id is moved to the lease's end
/// in the same step it is read, so no other node's claim returns it meanwhile.
const CLAIM_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[1], id)
  if job then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, job)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
";

/// Stores a job and its due time together: ARGV = id, JSON, due.
const RESCHEDULE_LUA: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 0
";

/// Removes a job: ARGV = id.
const FINISH_LUA: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
";

/// The shared VAPID key's Redis key.
pub const VAPID_KEY: &str = "wc:vapid_key";

/// The Redis registry, subscriptions and queue.
pub struct RedisWebhookStore {
    pool: Pool,
    endpoints: String,
    /// Set by the first push subscription ever stored (see `WebhookStore::push_ever_used`).
    push_used: String,
    jobs: String,
    due: String,
    schedule: Script,
    claim: Script,
    reschedule: Script,
    finish: Script,
}

impl RedisWebhookStore {
    /// The store on `pool`, its keys under the table prefix `prefix`.
    pub fn new(pool: Pool, prefix: &str) -> Self {
        let key = |suffix: &str| format!("wc:{{{prefix}wh}}:{suffix}");
        Self {
            pool,
            endpoints: key("endpoints"),
            push_used: key("push-used"),
            jobs: key("jobs"),
            due: key("due"),
            schedule: Script::from_lua(SCHEDULE_LUA),
            claim: Script::from_lua(CLAIM_LUA),
            reschedule: Script::from_lua(RESCHEDULE_LUA),
            finish: Script::from_lua(FINISH_LUA),
        }
    }

    fn queue_keys(&self) -> Vec<String> {
        vec![self.jobs.clone(), self.due.clone()]
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(internal)
}

#[async_trait]
impl WebhookStore for RedisWebhookStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let json = encode(endpoint)?;
        let _: i64 = self
            .pool
            .hset(&self.endpoints, (endpoint.id.as_str(), json))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let raw: HashMap<String, String> = self
            .pool
            .hgetall(&self.endpoints)
            .await
            .map_err(unavailable)?;
        Ok(decode_all("webhook endpoint", raw))
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let raw: Option<String> = self
            .pool
            .hget(&self.endpoints, id)
            .await
            .map_err(unavailable)?;
        Ok(raw.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .pool
            .hdel(&self.endpoints, id)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn put_subscription(&self, uid: &str, sub: &Subscription) -> Result<(), StoreError> {
        let json = encode(sub)?;
        let _: i64 = self
            .pool
            .hset(user_key(uid, "push"), (sub.endpoint.as_str(), json))
            .await
            .map_err(unavailable)?;
        // After the subscription: a node that reads the mark finds it.
        let _: () = self
            .pool
            .set(&self.push_used, "1", None, None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn push_ever_used(&self) -> Result<bool, StoreError> {
        let used: i64 = self
            .pool
            .exists(&self.push_used)
            .await
            .map_err(unavailable)?;
        Ok(used > 0)
    }

    async fn subscriptions(&self, uid: &str) -> Result<Vec<Subscription>, StoreError> {
        let raw: HashMap<String, String> = self
            .pool
            .hgetall(user_key(uid, "push"))
            .await
            .map_err(unavailable)?;
        Ok(decode_all("push subscription", raw))
    }

    async fn delete_subscription(&self, uid: &str, endpoint: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .pool
            .hdel(user_key(uid, "push"), endpoint)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn schedule(&self, jobs: &[(Job, i64)]) -> Result<(), StoreError> {
        // Bounded script calls: a group's fan-out may queue many jobs at once.
        for chunk in jobs.chunks(200) {
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for (job, due) in chunk {
                args.push(job.id.clone());
                args.push(encode(job)?);
                args.push(due.to_string());
            }
            let _: i64 = self
                .schedule
                .evalsha_with_reload(self.pool.next(), self.queue_keys(), args)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn claim(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Job>, StoreError> {
        let args = vec![
            now.to_string(),
            now.saturating_add(lease_ms).to_string(),
            max.to_string(),
        ];
        let raw: Vec<String> = self
            .claim
            .evalsha_with_reload(self.pool.next(), self.queue_keys(), args)
            .await
            .map_err(unavailable)?;
        let mut jobs = Vec::with_capacity(raw.len());
        for json in raw {
            match serde_json::from_str::<Job>(&json) {
                Ok(job) => jobs.push(job),
                Err(e) => tracing::error!(error = %e, "undecodable webhook job left leased"),
            }
        }
        Ok(jobs)
    }

    async fn reschedule(&self, job: &Job, due: i64) -> Result<(), StoreError> {
        let args = vec![job.id.clone(), encode(job)?, due.to_string()];
        let _: i64 = self
            .reschedule
            .evalsha_with_reload(self.pool.next(), self.queue_keys(), args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn finish(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .finish
            .evalsha_with_reload(self.pool.next(), self.queue_keys(), vec![id.to_owned()])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn queued(&self) -> Result<u64, StoreError> {
        self.pool.zcard(&self.due).await.map_err(unavailable)
    }
}

/// The VAPID key every node on this Redis shares, created by the first one that needs it.
pub async fn vapid_in_redis(pool: &Pool, subject: &str) -> Result<VapidKey, StoreError> {
    let (_, fresh) = VapidKey::generate(subject);
    let _: Option<String> = pool
        .set(VAPID_KEY, fresh, None, Some(SetOptions::NX), false)
        .await
        .map_err(unavailable)?;
    let stored: Option<String> = pool.get(VAPID_KEY).await.map_err(unavailable)?;
    let stored =
        stored.ok_or_else(|| StoreError::Internal("VAPID key vanished from Redis".into()))?;
    VapidKey::from_private(&stored, subject)
        .map_err(|e| StoreError::Internal(format!("{VAPID_KEY}: {e}")))
}
