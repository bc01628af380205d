//! Profiles in Redis itself: the system of record when Redis is configured without DynamoDB.
//!
//! One hash per user, `wc:{<uid>}:profile_rec`, fields `uid name status avatarUrl updatedAt
//! ver`. A hash (not a JSON string) lets the write script raise `ver` and keep untouched
//! fields in one atomic step. The `{uid}` hash tag keeps every key of a user in one Redis
//! Cluster slot, like the chat server's keys. Listing uses `SCAN`, which in a cluster covers
//! only the node it is sent to (acceptable: `/getall` exists for the single-node legacy setup).

use std::collections::HashMap;

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    types::scripts::Script,
};
use futures_util::future::try_join_all;
use webchat_core::ids::UserId;

use super::{Page, ProfileStore, StoreError};
use crate::{
    profile::{Change, Profile, Versioned},
    redis::{unavailable, user_key},
};

/// Suffix of the record key.
const RECORD: &str = "profile_rec";

/// Raises `ver` and writes the fields in one step; keeps status/avatarUrl unless told to set
/// them (`ARGV[5]`/`ARGV[7]` = `1`). `updatedAt` becomes `ARGV[3]`, or one past the stored
/// value if that is not older (it must grow with every write). Returns `{ver, status,
/// avatarUrl, updatedAt}` as stored.
const PUT_LUA: &str = r#"
local prev = tonumber(redis.call('HGET', KEYS[1], 'updatedAt') or '0')
local at = math.max(tonumber(ARGV[3]), prev + 1)
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'name', ARGV[2], 'updatedAt', string.format('%d', at))
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'status', ARGV[4])
else
  redis.call('HSETNX', KEYS[1], 'status', '')
end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'avatarUrl', ARGV[6])
else
  redis.call('HSETNX', KEYS[1], 'avatarUrl', '')
end
return {ver, redis.call('HGET', KEYS[1], 'status'), redis.call('HGET', KEYS[1], 'avatarUrl'), at}
"#;

/// [`ProfileStore`] over Redis hashes.
pub struct RedisStore {
    pool: Pool,
    put: Script,
}

impl RedisStore {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            put: Script::from_lua(PUT_LUA),
        }
    }

    async fn read(&self, key: String) -> Result<Option<Versioned>, StoreError> {
        let fields: HashMap<String, String> = self.pool.hgetall(key).await.map_err(unavailable)?;
        decode(fields)
    }
}

/// A record hash back into a profile; an empty hash is an absent profile.
fn decode(mut fields: HashMap<String, String>) -> Result<Option<Versioned>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut take = |name: &str| fields.remove(name).unwrap_or_default();
    let number = |raw: String, name: &str| {
        raw.parse::<i64>()
            .map_err(|_| StoreError::Internal(format!("profile record: bad {name} {raw:?}")))
    };
    let (uid, name, status, avatar_url) =
        (take("uid"), take("name"), take("status"), take("avatarUrl"));
    let updated_at = number(take("updatedAt"), "updatedAt")?;
    let version = u64::try_from(number(take("ver"), "ver")?)
        .map_err(|_| StoreError::Internal("profile record: negative ver".into()))?;
    Ok(Some(Versioned {
        profile: Profile {
            uid,
            name,
            status,
            avatar_url,
            updated_at,
        },
        version,
    }))
}

#[async_trait]
impl ProfileStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.pool.next().ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, uid: &UserId) -> Result<Option<Versioned>, StoreError> {
        self.read(user_key(uid.as_str(), RECORD)).await
    }

    async fn get_many(&self, uids: &[UserId]) -> Result<Vec<Versioned>, StoreError> {
        // One HGETALL per uid (fred pipelines them): keys of different users may live in
        // different cluster slots, so no multi-key command.
        let found = try_join_all(uids.iter().map(|u| self.get(u))).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn put(
        &self,
        uid: &UserId,
        change: &Change,
        updated_at: i64,
    ) -> Result<Versioned, StoreError> {
        let flag = |v: &Option<String>| if v.is_some() { "1" } else { "0" }.to_owned();
        let args = vec![
            uid.to_string(),
            change.name.clone(),
            updated_at.to_string(),
            change.status.clone().unwrap_or_default(),
            flag(&change.status),
            change.avatar_url.clone().unwrap_or_default(),
            flag(&change.avatar_url),
        ];
        let (version, status, avatar_url, updated_at): (u64, String, String, i64) = self
            .put
            .evalsha_with_reload(self.pool.next(), vec![user_key(uid.as_str(), RECORD)], args)
            .await
            .map_err(unavailable)?;
        Ok(Versioned {
            profile: Profile {
                uid: uid.to_string(),
                name: change.name.clone(),
                status,
                avatar_url,
                updated_at,
            },
            version,
        })
    }

    async fn scan_page(&self, cursor: Option<String>, limit: usize) -> Result<Page, StoreError> {
        let count = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
        let (next, keys): (String, Vec<String>) = self
            .pool
            .next()
            .scan_page(
                cursor.unwrap_or_else(|| "0".into()),
                format!("wc:*:{RECORD}"),
                Some(count),
                None,
            )
            .await
            .map_err(unavailable)?;
        let found = try_join_all(keys.into_iter().map(|k| self.read(k))).await?;
        Ok(Page {
            items: found.into_iter().flatten().map(|v| v.profile).collect(),
            // SCAN is done when the cursor comes back to 0.
            next: (next != "0").then_some(next),
        })
    }
}
