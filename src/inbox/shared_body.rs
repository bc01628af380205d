//! Large bodies of group fan-outs, stored once instead of once per recipient.
//!
//! A `notify` carries the whole member list, and every member of a new group gets one: a
//! group of N members stored N copies of an N-member list, N² uids in all. Creating a
//! 10,000-member group held ~1.2 GB in Redis until the members had acked it (measured), and
//! a group at the size limit would hold tens of gigabytes; `join` (to every member, naming
//! everyone added) and `restart` (to every member, naming all of them) grow the same way.
//! Instead, a fan-out whose body is at least [`SHARE_FROM_BYTES`] stores the body once
//! ([`InboxStore::put_shared_body`]), and each inbox entry names it in `BodyRef`, with an
//! empty `Body`. The delivery task puts the body back before the event leaves the server
//! ([`SharedBodies::resolve`]): a client sees the same event as before.
//!
//! A shared body is kept as long as an inbox keeps events (the age bound), so every entry
//! that names it finds it. Each node keeps the last few it read, so the members of one
//! fan-out on one node cost one read between them.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

use super::InboxStore;
use crate::storage::StoreError;

/// Bodies from this size on are shared by a fan-out's recipients. Below it the copy per
/// recipient costs less than the extra read at delivery.
pub const SHARE_FROM_BYTES: usize = 2048;

/// Shared bodies a node keeps in memory: the fan-outs being delivered at once.
const CACHED_BODIES: usize = 16;

/// A fresh key for a shared body.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether a fan-out of `body` to `recipients` stores the body once.
pub fn worth_sharing(body: &str, recipients: usize) -> bool {
    recipients > 1 && body.len() >= SHARE_FROM_BYTES
}

/// One cached body: filled by the first reader, awaited by the others. `None` inside: the
/// store has no such body.
type Slot = Arc<OnceCell<Option<Arc<str>>>>;

/// Resolves `BodyRef`s for a node's delivery tasks, reading each shared body once.
pub struct SharedBodies {
    store: Arc<dyn InboxStore>,
    /// Most recently asked for last.
    cache: Mutex<VecDeque<(String, Slot)>>,
}

impl SharedBodies {
    /// Reads shared bodies from `store`.
    pub fn new(store: Arc<dyn InboxStore>) -> Self {
        Self {
            store,
            cache: Mutex::new(VecDeque::with_capacity(CACHED_BODIES + 1)),
        }
    }

    /// The body stored under `key`; `None` when the store has none (it outlived the inbox
    /// age bound). A failed read is not cached: the next caller reads again.
    pub async fn resolve(&self, key: &str) -> Result<Option<Arc<str>>, StoreError> {
        let store = &self.store;
        self.resolve_with(key, || async move {
            Ok(store.read_shared_body(key).await?.map(Arc::from))
        })
        .await
    }

    async fn resolve_with<F, Fut>(&self, key: &str, read: F) -> Result<Option<Arc<str>>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Arc<str>>, StoreError>>,
    {
        let slot = self.slot(key);
        slot.get_or_try_init(read).await.cloned()
    }

    /// The cache slot of `key`, made (and the oldest dropped) if there is none.
    fn slot(&self, key: &str) -> Slot {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| k == key) {
            if let Some(entry) = cache.remove(i) {
                let slot = entry.1.clone();
                cache.push_back(entry);
                return slot;
            }
        }
        let slot = Slot::default();
        cache.push_back((key.to_owned(), slot.clone()));
        if cache.len() > CACHED_BODIES {
            cache.pop_front();
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        bus::{BusSlot, MemoryBus, Router},
        inbox::{EmbeddedInbox, InboxLimits},
        storage::embedded::EmbeddedDb,
        telemetry::Metrics,
    };

    fn bodies(dir: &std::path::Path) -> (Arc<EmbeddedInbox>, SharedBodies) {
        let db = EmbeddedDb::open(dir).expect("db");
        let router = Router::new(
            BusSlot::default(),
            Arc::new(Metrics::default()),
            tokio_util::sync::CancellationToken::new(),
        );
        let limits = InboxLimits {
            max_len: 10,
            max_age_secs: 3600,
            dedupe_window_secs: 60,
        };
        let inbox = Arc::new(EmbeddedInbox::new(
            db,
            Arc::new(MemoryBus::new(router)),
            limits,
        ));
        let shared = SharedBodies::new(inbox.clone());
        (inbox, shared)
    }

    #[test]
    fn only_large_bodies_to_several_recipients_are_shared() {
        let large = "x".repeat(SHARE_FROM_BYTES);
        assert!(worth_sharing(&large, 2));
        assert!(!worth_sharing(&large, 1), "one recipient: nothing to share");
        assert!(
            !worth_sharing(&large[1..], 10_000),
            "small: the copies are cheap"
        );
    }

    #[tokio::test]
    async fn a_stored_body_resolves_and_an_unknown_key_resolves_to_none() {
        let dir = tempfile::tempdir().expect("dir");
        let (inbox, shared) = bodies(dir.path());
        inbox
            .put_shared_body("k1", "[\"alice\",\"bob\"]")
            .await
            .expect("put");
        let body = shared.resolve("k1").await.expect("read");
        assert_eq!(body.as_deref(), Some("[\"alice\",\"bob\"]"));
        assert_eq!(shared.resolve("nope").await.expect("read"), None);
    }

    #[tokio::test]
    async fn the_members_of_one_fan_out_read_its_body_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, shared) = bodies(dir.path());
        let reads = AtomicUsize::new(0);
        let resolves = (0..50).map(|_| {
            shared.resolve_with("k1", || async {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(Some(Arc::from("body")))
            })
        });
        let bodies = futures_util::future::join_all(resolves).await;
        assert!(bodies
            .iter()
            .all(|b| matches!(b, Ok(Some(b)) if &**b == "body")));
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "one read for 50 deliveries"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_retried_and_old_bodies_make_room() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, shared) = bodies(dir.path());
        let failed = shared
            .resolve_with("k1", || async {
                Err(StoreError::Unavailable("down".into()))
            })
            .await;
        assert!(failed.is_err());
        let again = shared
            .resolve_with("k1", || async { Ok(Some(Arc::from("body"))) })
            .await;
        assert_eq!(again.expect("read").as_deref(), Some("body"));

        for i in 0..CACHED_BODIES {
            let key = format!("other{i}");
            shared
                .resolve_with(&key, || async { Ok(Some(Arc::from("x"))) })
                .await
                .expect("read");
        }
        let reads = AtomicUsize::new(0);
        shared
            .resolve_with("k1", || async {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok(Some(Arc::from("body")))
            })
            .await
            .expect("read");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "dropped from the cache, read again"
        );
        assert!(shared.cache.lock().expect("lock").len() <= CACHED_BODIES);
    }
}
