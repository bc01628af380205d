//! Logout reaches open sockets: every node keeps which of its sockets were opened with which
//! token id, and closes them when that token is revoked anywhere (Redis channel
//! [`REVOCATION_CHANNEL`], or directly in a single embedded node).
//!
//! A revocation can meet a socket still in its connect middleware: after the token was
//! verified but before the socket is indexed, or indexed but not yet in the namespace (so
//! its disconnect does not stick). Revoked ids are therefore remembered for a while
//! ([`RecentRevocations`]): the middleware refuses to index a socket under one, and the
//! connect handler closes a socket whose index entry a revocation took away.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dashmap::DashMap;
use fred::{
    clients::{Pool, SubscriberClient},
    interfaces::PubsubInterface,
};
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use crate::storage::{
    redis::{on_channel, unavailable},
    StoreError,
};

/// Where a logout's token id is announced to every node.
pub const REVOCATION_CHANNEL: &str = "wc:revocations";

/// What the index needs of a socket: its id, and a way to close it.
pub trait IndexedSocket: Send + Sync + 'static {
    /// The socket's id.
    fn socket_id(&self) -> &str;
    /// Disconnects the socket (best effort: it may be gone already).
    fn close(&self);
}

impl IndexedSocket for SocketRef {
    fn socket_id(&self) -> &str {
        self.id.as_str()
    }

    fn close(&self) {
        let _ = self.clone().disconnect();
    }
}

/// This node's sockets by the token id they authenticated with.
pub struct TokenSockets<S = SocketRef> {
    by_jti: DashMap<String, Vec<S>>,
    revoked: RecentRevocations,
    /// Set with Redis: revocations are published there for every node (this one included).
    publisher: Option<Pool>,
}

impl<S: IndexedSocket> TokenSockets<S> {
    /// An index that announces revocations through `publisher` (Redis), or only locally.
    pub fn new(publisher: Option<Pool>) -> Arc<Self> {
        Arc::new(Self {
            by_jti: DashMap::new(),
            revoked: RecentRevocations::default(),
            publisher,
        })
    }

    /// Notes that `socket` authenticated with token id `jti`; false, and not noted, when
    /// `jti` was revoked since it was verified (the socket must be refused).
    pub fn insert(&self, jti: &str, socket: S) -> bool {
        // Checked under the entry's lock, which `close` takes too: a revocation lands either
        // before (seen here) or after (finds the socket to close).
        let mut sockets = self.by_jti.entry(jti.to_owned()).or_default();
        if self.revoked.contains(jti, Instant::now()) {
            drop(sockets);
            self.by_jti.remove_if(jti, |_, sockets| sockets.is_empty());
            return false;
        }
        sockets.push(socket);
        true
    }

    /// Whether `socket_id` is still indexed under `jti`: false once a revocation closed it.
    pub fn holds(&self, jti: &str, socket_id: &str) -> bool {
        self.by_jti
            .get(jti)
            .is_some_and(|sockets| sockets.iter().any(|s| s.socket_id() == socket_id))
    }

    /// Forgets a closed socket.
    pub fn remove(&self, jti: &str, socket_id: &str) {
        if let Some(mut sockets) = self.by_jti.get_mut(jti) {
            sockets.retain(|s| s.socket_id() != socket_id);
        }
        self.by_jti.remove_if(jti, |_, sockets| sockets.is_empty());
    }

    /// Closes this node's sockets opened with `jti`.
    pub fn close(&self, jti: &str) -> usize {
        // Marked before the entry is taken: an `insert` either saw the mark or had pushed
        // its socket already (both under the entry's lock), which the removal then finds.
        self.revoked.mark(jti, Instant::now());
        let Some((_, sockets)) = self.by_jti.remove(jti) else {
            return 0;
        };
        for socket in &sockets {
            socket.close();
        }
        tracing::info!(
            sockets = sockets.len(),
            "closed the sockets of a revoked token"
        );
        sockets.len()
    }

    /// Closes the sockets of `jti` on every node.
    pub async fn revoke_everywhere(&self, jti: &str) -> Result<(), StoreError> {
        match &self.publisher {
            Some(pool) => {
                let _: i64 = pool
                    .next()
                    .publish(REVOCATION_CHANNEL, jti)
                    .await
                    .map_err(unavailable)?;
            }
            None => {
                self.close(jti);
            }
        }
        Ok(())
    }

    /// Closes local sockets for every revocation announced on Redis, until `shutdown`. A
    /// missed revocation still refuses the token on its next use (REST, reconnect); only an
    /// open socket would stay open.
    pub async fn listen(
        self: Arc<Self>,
        subscriber: SubscriberClient,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        on_channel(
            &subscriber,
            REVOCATION_CHANNEL,
            "revocations",
            shutdown,
            move |jti| {
                self.close(&jti);
            },
        )
        .await
    }
}

/// How long a revoked token id is remembered: far longer than a connect middleware takes
/// from verifying a token to indexing its socket (one store read).
const REMEMBER_REVOKED: Duration = Duration::from_secs(60);

/// Token ids revoked in the last [`REMEMBER_REVOKED`].
#[derive(Default)]
pub struct RecentRevocations {
    at: Mutex<HashMap<String, Instant>>,
}

impl RecentRevocations {
    /// Remembers that `jti` was revoked at `now`, and forgets revocations too old to matter.
    pub fn mark(&self, jti: &str, now: Instant) {
        let mut at = self.lock();
        at.retain(|_, since| now.saturating_duration_since(*since) < REMEMBER_REVOKED);
        at.insert(jti.to_owned(), now);
    }

    /// Whether `jti` was revoked less than [`REMEMBER_REVOKED`] before `now`.
    pub fn contains(&self, jti: &str, now: Instant) -> bool {
        self.lock()
            .get(jti)
            .is_some_and(|since| now.saturating_duration_since(*since) < REMEMBER_REVOKED)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_is_remembered_for_a_while_then_forgotten() {
        let revoked = RecentRevocations::default();
        let t0 = Instant::now();
        assert!(!revoked.contains("a", t0));
        revoked.mark("a", t0);
        assert!(revoked.contains("a", t0));
        assert!(revoked.contains("a", t0 + REMEMBER_REVOKED - Duration::from_millis(1)));
        assert!(!revoked.contains("a", t0 + REMEMBER_REVOKED));
        assert!(!revoked.contains("b", t0));
    }

    #[test]
    fn old_revocations_are_pruned_when_new_ones_come() {
        let revoked = RecentRevocations::default();
        let t0 = Instant::now();
        revoked.mark("a", t0);
        revoked.mark("b", t0 + REMEMBER_REVOKED);
        assert_eq!(revoked.lock().len(), 1);
        assert!(revoked.contains("b", t0 + REMEMBER_REVOKED));
    }

    /// A socket that counts its closes.
    struct FakeSocket {
        id: &'static str,
        closes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl IndexedSocket for FakeSocket {
        fn socket_id(&self) -> &str {
            self.id
        }

        fn close(&self) {
            self.closes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn fake(id: &'static str) -> (FakeSocket, Arc<std::sync::atomic::AtomicUsize>) {
        let closes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (
            FakeSocket {
                id,
                closes: closes.clone(),
            },
            closes,
        )
    }

    #[test]
    fn a_revocation_closes_the_indexed_sockets_and_takes_them_out() {
        let index = TokenSockets::<FakeSocket>::new(None);
        let (a, a_closes) = fake("a");
        let (b, b_closes) = fake("b");
        assert!(index.insert("jti-1", a));
        assert!(index.insert("jti-2", b));
        assert!(index.holds("jti-1", "a"));
        assert_eq!(index.close("jti-1"), 1);
        assert_eq!(a_closes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(b_closes.load(std::sync::atomic::Ordering::SeqCst), 0);
        // What the connect handler asks of a socket that was still connecting.
        assert!(!index.holds("jti-1", "a"));
        assert!(index.holds("jti-2", "b"));
    }

    #[test]
    fn a_socket_verified_before_a_revocation_is_refused_after_it() {
        let index = TokenSockets::<FakeSocket>::new(None);
        // The revocation reaches this node between the token check and the indexing.
        assert_eq!(index.close("jti-1"), 0);
        let (late, closes) = fake("late");
        assert!(!index.insert("jti-1", late));
        assert!(!index.holds("jti-1", "late"));
        assert!(
            index.by_jti.get("jti-1").is_none(),
            "no empty entry left behind"
        );
        assert_eq!(closes.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Other tokens are not affected.
        let (other, _) = fake("other");
        assert!(index.insert("jti-2", other));
    }
}
