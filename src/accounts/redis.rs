//! Accounts in Redis (the system of record when Redis is configured without DynamoDB).

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{KeysInterface, SortedSetsInterface},
    types::{Expiration, SetOptions},
};

use super::{Account, AccountStore};
use crate::storage::{
    embedded::internal,
    redis::{unavailable, user_key},
    StoreError,
};

/// Every uid, in a sorted set with equal scores (lexicographic range queries).
const DIRECTORY: &str = "wc:users";

/// [`AccountStore`] over Redis.
pub struct RedisAccountStore {
    pool: Pool,
}

impl RedisAccountStore {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AccountStore for RedisAccountStore {
    async fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        let json = serde_json::to_string(account).map_err(internal)?;
        // Listed first: a failure after this leaves a uid without an account, which `list`
        // skips, rather than an account missing from the address book.
        let _: i64 = self
            .pool
            .zadd(
                DIRECTORY,
                None,
                None,
                false,
                false,
                (0.0, account.uid.as_str()),
            )
            .await
            .map_err(unavailable)?;
        let set: Option<String> = self
            .pool
            .set(
                user_key(&account.uid, "acct"),
                json,
                None,
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError> {
        let min = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        // Every uid with the prefix sorts below prefix + the highest uid character.
        let max = format!("({prefix}\u{7f}");
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let uids: Vec<String> = self
            .pool
            .zrangebylex(DIRECTORY, min, max, Some((0, count)))
            .await
            .map_err(unavailable)?;
        let accounts = futures_util::future::join_all(uids.iter().map(|uid| self.get(uid))).await;
        let mut out = Vec::with_capacity(uids.len());
        for account in accounts {
            out.extend(account?);
        }
        Ok(out)
    }

    async fn get(&self, uid: &str) -> Result<Option<Account>, StoreError> {
        let raw: Option<String> = self
            .pool
            .get(user_key(uid, "acct"))
            .await
            .map_err(unavailable)?;
        raw.map(|json| serde_json::from_str(&json).map_err(internal))
            .transpose()
    }

    async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let ttl = (expires_at - chrono::Utc::now().timestamp()).max(1);
        let _: Option<String> = self
            .pool
            .set(
                user_key(jti, "revoked"),
                "1",
                Some(Expiration::EX(ttl)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .pool
            .exists(user_key(jti, "revoked"))
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }
}
