//! Profiles in one redb file, `<data dir>/profiles.redb`: the single-process development
//! store. It is a separate file from the chat server's `webchat.redb` because redb locks its
//! file to one process, and both processes may share one data dir.

use std::{ops::Bound, path::Path, sync::Arc};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use webchat_core::ids::UserId;

use super::{apply, Page, ProfileStore, StoreError};
use crate::profile::{Change, Versioned};

/// uid → [`Versioned`] JSON.
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");

/// File name inside the data dir.
pub const FILE_NAME: &str = "profiles.redb";

/// [`ProfileStore`] over an embedded redb database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `profiles.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Internal(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Internal(format!("open {}: {e}", path.display())))?;
        // Create the table up front so read transactions never meet a missing table.
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(PROFILES).map_err(internal)?;
        txn.commit().map_err(internal)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async threads (commits wait for fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(internal)?
    }
}

fn decode(bytes: &[u8]) -> Result<Versioned, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

#[async_trait]
impl ProfileStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, uid: &UserId) -> Result<Option<Versioned>, StoreError> {
        let uid = uid.as_str().to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(PROFILES).map_err(internal)?;
            let value = table.get(uid.as_str()).map_err(internal)?;
            value.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn get_many(&self, uids: &[UserId]) -> Result<Vec<Versioned>, StoreError> {
        let uids: Vec<String> = uids.iter().map(|u| u.as_str().to_owned()).collect();
        self.blocking(move |db| {
            // One read transaction: the batch is one consistent snapshot.
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(PROFILES).map_err(internal)?;
            let mut found = Vec::with_capacity(uids.len());
            for uid in &uids {
                if let Some(v) = table.get(uid.as_str()).map_err(internal)? {
                    found.push(decode(v.value())?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn put(
        &self,
        uid: &UserId,
        change: &Change,
        updated_at: i64,
    ) -> Result<Versioned, StoreError> {
        let uid = uid.clone();
        let change = change.clone();
        self.blocking(move |db| {
            // redb runs one write transaction at a time, so read-modify-write is atomic.
            let txn = db.begin_write().map_err(internal)?;
            let record = {
                let mut table = txn.open_table(PROFILES).map_err(internal)?;
                let previous = table
                    .get(uid.as_str())
                    .map_err(internal)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                let record = apply(&uid, previous, &change, updated_at);
                let json = serde_json::to_vec(&record).map_err(internal)?;
                table
                    .insert(uid.as_str(), json.as_slice())
                    .map_err(internal)?;
                record
            };
            txn.commit().map_err(internal)?;
            Ok(record)
        })
        .await
    }

    async fn scan_page(&self, cursor: Option<String>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(PROFILES).map_err(internal)?;
            let start = match &cursor {
                Some(c) => Bound::Excluded(c.as_str()),
                None => Bound::Unbounded,
            };
            let range = table
                .range::<&str>((start, Bound::Unbounded))
                .map_err(internal)?;
            let mut page = Page::default();
            for entry in range {
                let (_, value) = entry.map_err(internal)?;
                if page.items.len() == limit {
                    // More remain: the cursor is the last key returned.
                    page.next = page.items.last().map(|p| p.uid.clone());
                    break;
                }
                page.items.push(decode(value.value())?.profile);
            }
            Ok(page)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).expect("valid uid")
    }

    fn name_only(name: &str) -> Change {
        Change {
            name: name.into(),
            status: None,
            avatar_url: None,
        }
    }

    #[tokio::test]
    async fn put_raises_the_version_and_keeps_unchanged_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let full = Change {
            name: "A".into(),
            status: Some("busy".into()),
            avatar_url: Some("https://e.com/a.png".into()),
        };
        let first = store.put(&uid("a"), &full, 10).await.expect("put");
        assert_eq!(first.version, 1);
        let second = store
            .put(&uid("a"), &name_only("B"), 20)
            .await
            .expect("put");
        assert_eq!(second.version, 2);
        assert_eq!(second.profile.status, "busy");
        assert_eq!(second.profile.name, "B");
        assert_eq!(store.get(&uid("a")).await.expect("get"), Some(second));
        // A clock that went back still yields a later updatedAt.
        let third = store.put(&uid("a"), &name_only("C"), 5).await.expect("put");
        assert_eq!((third.version, third.profile.updated_at), (3, 21));
        assert_eq!(store.get(&uid("zz")).await.expect("get"), None);
    }

    #[tokio::test]
    async fn scan_pages_through_everything_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        for i in 0..7 {
            store
                .put(&uid(&format!("u{i}")), &name_only("n"), 1)
                .await
                .expect("put");
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.scan_page(cursor, 3).await.expect("scan");
            assert!(page.items.len() <= 3);
            seen.extend(page.items.into_iter().map(|p| p.uid));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, (0..7).map(|i| format!("u{i}")).collect::<Vec<_>>());
    }
}
