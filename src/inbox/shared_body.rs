//! Member lists of group fan-outs, stored once instead of once per recipient.
//!
//! A `notify` carries the whole member list, and every member of a new group gets one: a
//! group of N members stored N copies of an N-member list, N² uids in all. Creating a
//! 10,000-member group held ~1.2 GB in Redis until the members had acked it (measured), and
//! a group at the size limit would hold tens of gigabytes; `join` (to every member, naming
//! everyone added) and `restart` (to every member, naming all of them) grow the same way.
//! Instead, a membership fan-out whose copies would add up to [`SHARE_FROM_TOTAL_BYTES`]
//! stores its body once ([`InboxStore::put_shared_body`]), and each inbox entry names it in
//! `BodyRef`, with an empty `Body`. The delivery task puts the body back before the event
//! leaves the server ([`SharedBodies::resolve`]): a client sees the same event as before.
//!
//! A shared body is kept as long as an inbox keeps events (the age bound), so every entry
//! that names it finds it, even after every member confirmed it: it trades the N copies'
//! peak for one copy kept long. That is right for membership changes, which are rare and
//! whose copies grow with N², and wrong for group messages to online members (a 16 KiB
//! message a minute to a large group would keep a month of bodies instead of seconds of
//! copies), so messages keep their copies. Each node keeps the last few bodies it read, and
//! the members of one fan-out on one node share one read.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use futures_util::{
    future::{BoxFuture, Shared},
    FutureExt,
};

use super::InboxStore;
use crate::{storage::StoreError, telemetry::Metrics};

/// Bodies from this size on may be shared by a fan-out's recipients. Below it an entry's
/// own fields outweigh its body, and sharing saves little.
pub const SHARE_FROM_BYTES: usize = 2048;

/// A fan-out shares its body when the copies would add up to this much (a member list of
/// about 125 members to all of them): then the N copies' peak is worth one copy kept for
/// the inbox age bound.
pub const SHARE_FROM_TOTAL_BYTES: usize = 256 * 1024;

/// Shared bodies a node keeps in memory: the fan-outs being delivered at once.
const CACHED_BODIES: usize = 16;

/// A fresh key for a shared body.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether a fan-out of `body` to `recipients` stores the body once.
pub fn worth_sharing(body: &str, recipients: usize) -> bool {
    recipients > 1
        && body.len() >= SHARE_FROM_BYTES
        && body.len().saturating_mul(recipients) >= SHARE_FROM_TOTAL_BYTES
}

/// What reading one shared body gives: `None` when the store has no such body.
type ReadResult = Result<Option<Arc<str>>, StoreError>;

/// One read of a shared body, awaited by every delivery task that wants it meanwhile.
type Read = Shared<BoxFuture<'static, ReadResult>>;

/// Resolves `BodyRef`s for a node's delivery tasks, reading each shared body once.
pub struct SharedBodies {
    store: Arc<dyn InboxStore>,
    metrics: Arc<Metrics>,
    /// Most recently asked for last.
    cache: Mutex<VecDeque<(String, Read)>>,
}

impl SharedBodies {
    /// Reads shared bodies from `store`, counting the missing ones in `metrics`.
    pub fn new(store: Arc<dyn InboxStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            cache: Mutex::new(VecDeque::with_capacity(CACHED_BODIES + 1)),
        }
    }

    /// The body stored under `key`; `None` when the store has none (lost with the store's
    /// data, or past the inbox age bound). Every caller waiting meanwhile gets the same
    /// read's answer, a failure included (so a store outage costs one read per key, not one
    /// per socket); a failed read is then forgotten, and the next caller reads again.
    pub async fn resolve(&self, key: &str) -> ReadResult {
        self.resolve_with(key, || {
            // Only when the body is not cached: the read owns what it needs.
            let (store, metrics, owned_key) =
                (self.store.clone(), self.metrics.clone(), key.to_owned());
            async move {
                // Logged once per key and node: the read is shared by every socket.
                let body = store.read_shared_body(&owned_key).await.map_err(|e| {
                    tracing::warn!(key = %owned_key, error = %e, "reading a shared body failed");
                    e
                })?;
                if body.is_none() {
                    metrics.shared_bodies_missing.inc();
                    tracing::warn!(key = %owned_key, "shared body missing from the store; its events get a rebuilt or empty Body");
                }
                Ok(body.map(Arc::from))
            }
            .boxed()
        })
        .await
    }

    async fn resolve_with(
        &self,
        key: &str,
        read: impl FnOnce() -> BoxFuture<'static, ReadResult>,
    ) -> ReadResult {
        let pending = self.read_of(key, read);
        let result = pending.clone().await;
        if result.is_err() {
            self.forget(key, &pending);
        }
        result
    }

    /// The read of `key` under way or done, started with `read` (and the oldest dropped)
    /// if there is none.
    fn read_of(&self, key: &str, read: impl FnOnce() -> BoxFuture<'static, ReadResult>) -> Read {
        let mut cache = self.lock();
        if let Some(i) = cache.iter().position(|(k, _)| k == key) {
            if let Some(entry) = cache.remove(i) {
                let pending = entry.1.clone();
                cache.push_back(entry);
                return pending;
            }
        }
        let pending = read().shared();
        cache.push_back((key.to_owned(), pending.clone()));
        if cache.len() > CACHED_BODIES {
            cache.pop_front();
        }
        pending
    }

    /// Drops `key`'s failed read, unless a newer read has replaced it.
    fn forget(&self, key: &str, failed: &Read) {
        let mut cache = self.lock();
        cache.retain(|(k, pending)| k != key || !pending.ptr_eq(failed));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Read)>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        bus::{MemoryBus, Router},
        inbox::{EmbeddedInbox, InboxLimits},
        storage::embedded::EmbeddedDb,
        telemetry::Metrics,
    };

    fn bodies(dir: &std::path::Path) -> (Arc<EmbeddedInbox>, SharedBodies) {
        let db = EmbeddedDb::open(dir).expect("db");
        let (router, _unserved) = Router::new(Arc::new(Metrics::default()));
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
        let shared = SharedBodies::new(inbox.clone(), Arc::new(Metrics::default()));
        (inbox, shared)
    }

    /// A read that counts itself in `reads`, yields once (so that waiters pile up), and
    /// answers `answer`.
    fn counted(reads: &Arc<AtomicUsize>, answer: ReadResult) -> BoxFuture<'static, ReadResult> {
        let reads = reads.clone();
        async move {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            answer
        }
        .boxed()
    }

    #[test]
    fn only_member_lists_whose_copies_add_up_are_shared() {
        let list = "x".repeat(SHARE_FROM_BYTES);
        let enough = SHARE_FROM_TOTAL_BYTES / SHARE_FROM_BYTES;
        assert!(worth_sharing(&list, enough));
        assert!(
            !worth_sharing(&list, enough - 1),
            "a few copies cost less than one kept for the age bound"
        );
        let huge = "x".repeat(SHARE_FROM_TOTAL_BYTES);
        assert!(!worth_sharing(&huge, 1), "one recipient: nothing to share");
        assert!(worth_sharing(&huge, 2));
        assert!(
            !worth_sharing(&list[1..], 100_000),
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
        let reads = Arc::new(AtomicUsize::new(0));
        let resolves = (0..50)
            .map(|_| shared.resolve_with("k1", || counted(&reads, Ok(Some(Arc::from("body"))))));
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
    async fn a_failed_read_answers_its_waiters_once_and_the_next_caller_reads_again() {
        use futures_util::{stream::FuturesUnordered, StreamExt};
        let dir = tempfile::tempdir().expect("dir");
        let (_, shared) = bodies(dir.path());
        let reads = Arc::new(AtomicUsize::new(0));
        // The read fails only once every waiter is waiting for it, as when a store outage
        // holds a read while a fan-out's deliveries pile up behind it.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let down = || {
            let (reads, gate) = (reads.clone(), gate.clone());
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let _open = gate.acquire().await;
                Err(StoreError::Unavailable("down".into()))
            }
            .boxed()
        };
        let mut waiting: FuturesUnordered<_> =
            (0..50).map(|_| shared.resolve_with("k1", down)).collect();
        // One pass polls every waiter once: all of them are waiting for the read now.
        assert!(futures_util::poll!(waiting.next()).is_pending());
        gate.add_permits(1);
        let failed: Vec<_> =
            tokio::time::timeout(std::time::Duration::from_secs(10), waiting.collect())
                .await
                .expect("every waiter answered");
        assert_eq!(failed.len(), 50);
        assert!(failed.iter().all(Result::is_err));
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "an outage costs one read per key, not one per socket"
        );
        let again = shared
            .resolve_with("k1", || counted(&reads, Ok(Some(Arc::from("body")))))
            .await;
        assert_eq!(again.expect("read").as_deref(), Some("body"));
        assert_eq!(reads.load(Ordering::SeqCst), 2, "the failure was not kept");
    }

    #[tokio::test]
    async fn a_failed_read_dropped_from_the_cache_does_not_forget_a_newer_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, shared) = bodies(dir.path());
        let reads = Arc::new(AtomicUsize::new(0));
        let gated = |gate: &Arc<tokio::sync::Semaphore>, answer: ReadResult| {
            let (reads, gate) = (reads.clone(), gate.clone());
            move || {
                async move {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let _open = gate.acquire().await;
                    answer
                }
                .boxed()
            }
        };
        let (first_gate, second_gate) = (
            Arc::new(tokio::sync::Semaphore::new(0)),
            Arc::new(tokio::sync::Semaphore::new(0)),
        );
        let down = Err(StoreError::Unavailable("down".into()));
        let mut first = Box::pin(shared.resolve_with("k1", gated(&first_gate, down)));
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        // Other bodies push k1's read out of the cache; a new read of k1 starts.
        for i in 0..CACHED_BODIES {
            let key = format!("other{i}");
            shared
                .resolve_with(&key, || counted(&reads, Ok(Some(Arc::from("x")))))
                .await
                .expect("read");
        }
        let body = Ok(Some(Arc::from("body")));
        let mut second = Box::pin(shared.resolve_with("k1", gated(&second_gate, body)));
        assert!(futures_util::poll!(second.as_mut()).is_pending());

        first_gate.add_permits(1);
        assert!(first.await.is_err());
        // The newer read is still the one a caller joins.
        let mut third = Box::pin(shared.resolve_with("k1", || counted(&reads, Ok(None))));
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        second_gate.add_permits(1);
        assert_eq!(second.await.expect("read").as_deref(), Some("body"));
        assert_eq!(third.await.expect("read").as_deref(), Some("body"));
        assert_eq!(reads.load(Ordering::SeqCst), CACHED_BODIES + 2);
    }

    #[tokio::test]
    async fn old_bodies_make_room_for_new_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, shared) = bodies(dir.path());
        let reads = Arc::new(AtomicUsize::new(0));
        let body = || counted(&reads, Ok(Some(Arc::from("body"))));
        shared.resolve_with("k1", body).await.expect("read");
        for i in 0..CACHED_BODIES {
            shared
                .resolve_with(&format!("other{i}"), body)
                .await
                .expect("read");
        }
        shared.resolve_with("k1", body).await.expect("read");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            CACHED_BODIES + 2,
            "k1 was dropped from the cache, and read again"
        );
        assert!(shared.lock().len() <= CACHED_BODIES);
    }
}
