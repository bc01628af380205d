//! Accounts in the embedded store.

use async_trait::async_trait;
use redb::ReadableTable;

use super::{Account, AccountStore};
use crate::storage::{
    embedded::{internal, EmbeddedDb, ACCOUNTS, REVOKED},
    StoreError,
};

/// [`AccountStore`] over the embedded database.
pub struct EmbeddedAccountStore {
    db: EmbeddedDb,
}

impl EmbeddedAccountStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl AccountStore for EmbeddedAccountStore {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.db
            .read(move |txn| {
                let table = txn.open_table(ACCOUNTS).map_err(internal)?;
                let start = match &after {
                    Some(after) if after.as_str() >= prefix.as_str() => after.clone(),
                    _ => prefix.clone(),
                };
                let mut out = Vec::new();
                for entry in table.range(start.as_str()..).map_err(internal)? {
                    let (uid, json) = entry.map_err(internal)?;
                    let uid = uid.value();
                    if !uid.starts_with(prefix.as_str()) || out.len() >= limit {
                        break;
                    }
                    if after.as_deref() == Some(uid) {
                        continue;
                    }
                    out.push(serde_json::from_slice(json.value()).map_err(internal)?);
                }
                Ok(out)
            })
            .await
    }

    async fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        let uid = account.uid.clone();
        let json = serde_json::to_vec(account).map_err(internal)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(ACCOUNTS).map_err(internal)?;
                    if table.get(uid.as_str()).map_err(internal)?.is_some() {
                        return Ok(false);
                    }
                    table
                        .insert(uid.as_str(), json.as_slice())
                        .map_err(internal)?;
                    Ok(true)
                },
                |_| {},
            )
            .await
    }

    async fn get(&self, uid: &str) -> Result<Option<Account>, StoreError> {
        let uid = uid.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(ACCOUNTS).map_err(internal)?;
                let Some(raw) = table.get(uid.as_str()).map_err(internal)? else {
                    return Ok(None);
                };
                serde_json::from_slice(raw.value())
                    .map(Some)
                    .map_err(internal)
            })
            .await
    }

    async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(REVOKED).map_err(internal)?;
                    table.insert(jti.as_str(), expires_at).map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(REVOKED).map_err(internal)?;
                Ok(table.get(jti.as_str()).map_err(internal)?.is_some())
            })
            .await
    }
}
