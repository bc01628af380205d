//! Cache-aside in Redis in front of the system of record (DynamoDB or redb).
//!
//! Read: `GET wc:{uid}:profile`; on a miss read the store and fill the key with a TTL.
//! Update: write the store, then (one script) raise the fence `wc:{uid}:profile_ver` to the
//! written version and `DEL` the cached copy.
//!
//! Why the fence: deleting after the write alone leaves a race. A reader that missed, read
//! the OLD record from the store just before the write, and is slow to fill would put the old
//! record back right after the `DEL`, and every later read would be stale until the TTL.
//! So every fill carries the version of the record it read, and the fill script refuses it
//! when the fence holds a newer version. Store versions are raised atomically with each
//! write (see `store`), so "older" is exact, with no clock involved. Once an update has
//! answered, the cache holds nothing or a version at least as new as the update.
//!
//! The fence outlives any fill in flight: a reader gives up filling when its store read is
//! older than [`FILL_DEADLINE`], and the fence lives [`FENCE_TTL_SECS`] after each update.

use std::time::{Duration, Instant};

use fred::{clients::Pool, interfaces::KeysInterface, types::scripts::Script};

use crate::{
    profile::{Profile, Versioned},
    redis::{unavailable, user_key},
    store::StoreError,
};

/// A reader whose store read started longer ago than this does not fill the cache.
pub const FILL_DEADLINE: Duration = Duration::from_secs(10);

/// How long a fence outlives the last update of its uid.
pub const FENCE_TTL_SECS: u64 = 3600;

/// `KEYS[1]` cache key, `KEYS[2]` fence; `ARGV` json, version, ttl. Fills unless the fence
/// is newer than the version read. Returns 1 when filled.
const FILL_LUA: &str = r#"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) < fence then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"#;

/// `KEYS[1]` cache key, `KEYS[2]` fence; `ARGV` version, fence ttl. Raises the fence (never
/// lowers it: two updates may finish out of order) and deletes the cached copy.
const INVALIDATE_LUA: &str = r#"
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > fence then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"#;

/// The Redis cache of profiles.
pub struct ProfileCache {
    pool: Pool,
    ttl_secs: u64,
    fill: Script,
    invalidate: Script,
}

fn cache_key(uid: &str) -> String {
    user_key(uid, "profile")
}

fn fence_key(uid: &str) -> String {
    user_key(uid, "profile_ver")
}

impl ProfileCache {
    /// A cache over `pool` keeping entries `ttl`.
    pub fn new(pool: Pool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl_secs: ttl.as_secs().max(1),
            fill: Script::from_lua(FILL_LUA),
            invalidate: Script::from_lua(INVALIDATE_LUA),
        }
    }

    /// The cached profile, if any. A corrupt entry counts as a miss (the fill replaces it).
    pub async fn get(&self, uid: &str) -> Result<Option<Profile>, StoreError> {
        let raw: Option<String> = self.pool.get(cache_key(uid)).await.map_err(unavailable)?;
        Ok(raw.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Caches `record`, read from the store at `read_started`, unless an update has fenced
    /// its version off or the read is too old to be trusted. Returns whether it filled.
    pub async fn fill(
        &self,
        record: &Versioned,
        read_started: Instant,
    ) -> Result<bool, StoreError> {
        if read_started.elapsed() > FILL_DEADLINE {
            return Ok(false);
        }
        let uid = record.profile.uid.as_str();
        let json = serde_json::to_string(&record.profile)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let filled: i64 = self
            .fill
            .evalsha_with_reload(
                self.pool.next(),
                vec![cache_key(uid), fence_key(uid)],
                vec![json, record.version.to_string(), self.ttl_secs.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(filled == 1)
    }

    /// Called after every store write: fences versions older than `record` off and drops
    /// the cached copy.
    pub async fn invalidate(&self, record: &Versioned) -> Result<(), StoreError> {
        let uid = record.profile.uid.as_str();
        let _: i64 = self
            .invalidate
            .evalsha_with_reload(
                self.pool.next(),
                vec![cache_key(uid), fence_key(uid)],
                vec![record.version.to_string(), FENCE_TTL_SECS.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
