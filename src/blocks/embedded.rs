//! Blocks in the embedded store: one key `<blocker>\0<blocked>` per block, so a user's
//! blocks are one key range and a check is one point read.

use async_trait::async_trait;

use super::BlockStore;
use crate::{
    domain::UserId,
    storage::{
        embedded::{internal, EmbeddedDb, BLOCKS},
        StoreError,
    },
};

/// [`BlockStore`] over the embedded database.
pub struct EmbeddedBlockStore {
    db: EmbeddedDb,
}

impl EmbeddedBlockStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }

    async fn put(&self, key: String, present: bool) -> Result<(), StoreError> {
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(BLOCKS).map_err(internal)?;
                    if present {
                        table.insert(key.as_str(), ()).map_err(internal)?;
                    } else {
                        table.remove(key.as_str()).map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }
}

/// The key of one block. A uid never holds `\0`, so `alice\0` never prefixes `alicex\0…`.
fn key(blocker: &UserId, blocked: &UserId) -> String {
    format!("{blocker}\0{blocked}")
}

#[async_trait]
impl BlockStore for EmbeddedBlockStore {
    async fn block(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        self.put(key(blocker, blocked), true).await
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        self.put(key(blocker, blocked), false).await
    }

    async fn blocks(&self, blocker: &UserId, other: &UserId) -> Result<bool, StoreError> {
        let key = key(blocker, other);
        self.db
            .read(move |txn| {
                let table = txn.open_table(BLOCKS).map_err(internal)?;
                Ok(table.get(key.as_str()).map_err(internal)?.is_some())
            })
            .await
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{blocker}\0");
        self.db
            .read(move |txn| {
                let table = txn.open_table(BLOCKS).map_err(internal)?;
                let mut out = Vec::new();
                for entry in table.range(prefix.as_str()..).map_err(internal)? {
                    let (key, _) = entry.map_err(internal)?;
                    let Some(blocked) = key.value().strip_prefix(prefix.as_str()) else {
                        break;
                    };
                    out.push(blocked.to_owned());
                }
                Ok(out)
            })
            .await
    }
}
