//! Blocks in the embedded store: one key `<blocker>\0<blocked>` per block, so a user's
//! blocks are one key range.
//!
//! The embedded store serves exactly one node, and every change goes through this store, so
//! a copy in memory is never stale: it is read from the file once, changed only after each
//! commit, and answers every check without a read transaction (a check per message must
//! not cost a blocking-pool hop on a busy node).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use tokio::sync::{OnceCell, RwLock};

use super::BlockStore;
use crate::{
    domain::UserId,
    storage::{
        embedded::{internal, EmbeddedDb, ReadableTable, BLOCKS},
        StoreError,
    },
};

/// Blocker → the users it blocks.
type Mirror = HashMap<String, BTreeSet<String>>;

/// [`BlockStore`] over the embedded database, with the whole table mirrored in memory.
pub struct EmbeddedBlockStore {
    db: EmbeddedDb,
    /// Loaded on first use; changed under its write lock after each commit, so a check that
    /// runs after a block was acknowledged sees it.
    mirror: OnceCell<RwLock<Mirror>>,
}

impl EmbeddedBlockStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self {
            db,
            mirror: OnceCell::new(),
        }
    }

    async fn mirror(&self) -> Result<&RwLock<Mirror>, StoreError> {
        self.mirror
            .get_or_try_init(|| async {
                let mirror = self
                    .db
                    .read(|txn| {
                        let table = txn.open_table(BLOCKS).map_err(internal)?;
                        let mut mirror = Mirror::new();
                        for entry in table.iter().map_err(internal)? {
                            let (key, _) = entry.map_err(internal)?;
                            if let Some((blocker, blocked)) = key.value().split_once('\0') {
                                mirror
                                    .entry(blocker.to_owned())
                                    .or_default()
                                    .insert(blocked.to_owned());
                            }
                        }
                        Ok(mirror)
                    })
                    .await?;
                Ok(RwLock::new(mirror))
            })
            .await
    }

    async fn put(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        present: bool,
    ) -> Result<(), StoreError> {
        let mirror = self.mirror().await?;
        // Held across the commit: two changes of one pair land in the mirror in commit order.
        let mut copy = mirror.write().await;
        let key = key(blocker, blocked);
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
            .await?;
        let set = copy.entry(blocker.to_string()).or_default();
        if present {
            set.insert(blocked.to_string());
        } else {
            set.remove(blocked.as_str());
            if set.is_empty() {
                copy.remove(blocker.as_str());
            }
        }
        Ok(())
    }
}

/// The key of one block. A uid never holds `\0`, so `alice\0` never prefixes `alicex\0…`.
fn key(blocker: &UserId, blocked: &UserId) -> String {
    format!("{blocker}\0{blocked}")
}

#[async_trait]
impl BlockStore for EmbeddedBlockStore {
    async fn block(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        self.put(blocker, blocked, true).await
    }

    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError> {
        self.put(blocker, blocked, false).await
    }

    async fn blocks(&self, blocker: &UserId, other: &UserId) -> Result<bool, StoreError> {
        let mirror = self.mirror().await?.read().await;
        Ok(mirror
            .get(blocker.as_str())
            .is_some_and(|set| set.contains(other.as_str())))
    }

    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<String>, StoreError> {
        let mirror = self.mirror().await?.read().await;
        Ok(mirror
            .get(blocker.as_str())
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default())
    }
}
