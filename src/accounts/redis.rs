//! Accounts in Redis (the system of record when Redis is configured without DynamoDB).

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::KeysInterface,
    types::{Expiration, SetOptions},
};

use super::{Account, AccountStore};
use crate::storage::{
    embedded::internal,
    redis::{unavailable, user_key},
    StoreError,
};

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
