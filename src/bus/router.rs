//! The local routing table: which sockets of which users are on this node.
//!
//! Subscriptions follow the table. Changes go through one reconciler task that compares
//! "has local sockets" with "is subscribed" at the moment it runs, so a connect racing a
//! disconnect of the same user can never leave the channel unsubscribed while a socket waits.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Bus, BusMessage};
use crate::{
    domain::{Seq, WireEvent},
    storage::StoreError,
    telemetry::Metrics,
};

/// What a socket's delivery task receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A stored event to emit with an ack request.
    Stored {
        /// Inbox position.
        seq: Seq,
        /// The event.
        event: Arc<WireEvent>,
    },
    /// A live-only event.
    Live(Arc<WireEvent>),
    /// Live messages may have been missed: re-read the inbox after the last emitted Seq.
    Resync,
}

/// A socket's place in the routing table.
pub struct Attachment {
    /// Identifies this socket's entry for [`Router::detach`].
    pub conn_id: u64,
    /// Deliveries for this socket, in channel order.
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Cancelled when the socket's delivery must end: disconnect or node shutdown.
    pub stop: CancellationToken,
    /// Set when the socket fell too far behind and must be disconnected (`stop` is then
    /// cancelled too, which wakes an idle delivery task). A busy task, which always has a
    /// delivery at hand and so does not poll `stop`, checks this after each delivery: one
    /// atomic load, where the token would take a lock per check.
    pub overflowed: Arc<AtomicBool>,
}

struct LocalConn {
    id: u64,
    socket_id: String,
    tx: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl LocalConn {
    /// Flags the socket of `uid` as a slow consumer (its queue had no room for `what`), once:
    /// counted, logged, and its delivery task stopped (it may have emptied its queue
    /// meanwhile and gone to sleep, so the flag alone would not reach it).
    fn flag_slow(&self, uid: &str, what: &str, metrics: &Metrics) {
        if !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!(uid, socket = %crate::telemetry::socket_tag(&self.socket_id), what, "slow consumer: queue full, disconnecting");
            metrics.slow_consumers.inc();
            self.stop.cancel();
        }
    }
}

type Reconcile = (String, Option<oneshot::Sender<Result<(), StoreError>>>);

/// The subscription changes a [`Router`] asks for, until [`Router::keep_subscribed`] hands
/// them to the bus. The router and the bus are built in two steps because each needs the
/// other: the bus delivers what arrives to the router, and the router's table decides what
/// the bus subscribes. Requests made in between wait, unanswered, for the bus.
pub struct SubscriptionRequests(mpsc::UnboundedReceiver<Reconcile>);

/// Maps users to the sockets this node holds for them.
pub struct Router {
    conns: DashMap<String, Vec<LocalConn>>,
    next_id: AtomicU64,
    reconcile: mpsc::UnboundedSender<Reconcile>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// An empty routing table, and the subscription changes it will ask for: hand them to
    /// [`Router::keep_subscribed`] once the bus exists.
    pub fn new(metrics: Arc<Metrics>) -> (Arc<Self>, SubscriptionRequests) {
        let (reconcile, requests) = mpsc::unbounded_channel();
        let router = Arc::new(Self {
            conns: DashMap::new(),
            next_id: AtomicU64::new(1),
            reconcile,
            metrics,
        });
        (router, SubscriptionRequests(requests))
    }

    /// Keeps `bus` subscribed to the channels of exactly the users with sockets here, until
    /// `shutdown`: one task applies `requests` in batches.
    pub fn keep_subscribed(
        self: &Arc<Self>,
        bus: Arc<dyn Bus>,
        requests: SubscriptionRequests,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_reconciler(
            Arc::downgrade(self),
            bus,
            requests.0,
            shutdown,
        ))
    }

    /// Adds a socket of `uid` and returns once its user's channel is subscribed, so nothing
    /// published from now on is missed. Its delivery stops with `shutdown`.
    pub async fn attach(
        &self,
        uid: &str,
        socket_id: &str,
        queue: usize,
        shutdown: &CancellationToken,
    ) -> Result<Attachment, StoreError> {
        let (tx, deliveries) = mpsc::channel(queue.max(1));
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = shutdown.child_token();
        let overflowed = Arc::new(AtomicBool::new(false));
        self.conns
            .entry(uid.to_owned())
            .or_default()
            .push(LocalConn {
                id: conn_id,
                socket_id: socket_id.to_owned(),
                tx,
                overflowed: overflowed.clone(),
                stop: stop.clone(),
            });
        let (done, subscribed) = oneshot::channel();
        let _ = self.reconcile.send((uid.to_owned(), Some(done)));
        let result = subscribed
            .await
            .unwrap_or_else(|_| Err(StoreError::Internal("router stopped".into())));
        if let Err(e) = result {
            self.detach(uid, conn_id);
            return Err(e);
        }
        Ok(Attachment {
            conn_id,
            deliveries,
            stop,
            overflowed,
        })
    }

    /// Removes a socket; the channel is unsubscribed once its user has none left here.
    pub fn detach(&self, uid: &str, conn_id: u64) {
        let now_empty = match self.conns.get_mut(uid) {
            Some(mut list) => {
                list.retain(|c| c.id != conn_id);
                list.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.conns.remove_if(uid, |_, list| list.is_empty());
            let _ = self.reconcile.send((uid.to_owned(), None));
        }
    }

    /// Hands a bus message to every local socket of `uid`. Never blocks: a socket whose queue
    /// is full is flagged as a slow consumer (its events stay stored for replay).
    pub fn deliver(&self, uid: &str, message: BusMessage) {
        let Some(list) = self.conns.get(uid) else {
            return;
        };
        for conn in list.iter() {
            let delivery = match &message {
                BusMessage::Stored { seq, event } => Delivery::Stored {
                    seq: *seq,
                    event: event.clone(),
                },
                BusMessage::Live { skip_socket, event } => {
                    if skip_socket.as_deref() == Some(conn.socket_id.as_str()) {
                        continue;
                    }
                    Delivery::Live(event.clone())
                }
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = conn.tx.try_send(delivery) {
                conn.flag_slow(uid, "delivery", &self.metrics);
            }
        }
    }

    /// Asks every local socket to re-read its inbox (after lost pub/sub messages).
    pub fn resync_all(&self) {
        for list in self.conns.iter() {
            for conn in list.iter() {
                match conn.tx.try_send(Delivery::Resync) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        conn.flag_slow(list.key(), "resync", &self.metrics);
                    }
                    // The entry outlived its delivery task: nothing to wake.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::debug!(uid = %list.key(), socket = %crate::telemetry::socket_tag(&conn.socket_id), "resync for a socket whose delivery ended");
                    }
                }
            }
        }
    }

    /// Whether `uid` has a socket on this node other than `skip_socket`.
    pub fn has_socket_besides(&self, uid: &str, skip_socket: Option<&str>) -> bool {
        self.conns.get(uid).is_some_and(|list| {
            list.iter()
                .any(|c| Some(c.socket_id.as_str()) != skip_socket)
        })
    }

    /// Every user with sockets on this node, with how many.
    pub fn local_socket_counts(&self) -> Vec<(String, u32)> {
        self.conns
            .iter()
            .map(|e| {
                (
                    e.key().clone(),
                    u32::try_from(e.value().len()).unwrap_or(u32::MAX),
                )
            })
            .collect()
    }

    /// Whether `uid` has a socket on this node.
    pub fn is_local(&self, uid: &str) -> bool {
        self.conns.contains_key(uid)
    }

    /// How many sockets `uid` has on this node.
    pub fn local_sockets_of(&self, uid: &str) -> usize {
        self.conns.get(uid).map_or(0, |c| c.len())
    }
}

/// Longest a subscription change may take; past it the change counts as failed, so a stuck
/// connection can never stall every later connect on this node.
const SUBSCRIPTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn bounded(
    change: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    tokio::time::timeout(SUBSCRIPTION_TIMEOUT, change)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "subscription change timed out".into(),
            ))
        })
}

async fn run_reconciler(
    router: std::sync::Weak<Router>,
    bus: Arc<dyn Bus>,
    mut requests: mpsc::UnboundedReceiver<Reconcile>,
    shutdown: CancellationToken,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut batch = Vec::new();
    loop {
        batch.clear();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            n = requests.recv_many(&mut batch, 1024) => if n == 0 { return },
        }
        // The router is gone only when the node is: nothing is left to subscribe for.
        let Some(router) = router.upgrade() else {
            return;
        };
        let mut to_subscribe = Vec::new();
        let mut to_unsubscribe = Vec::new();
        let mut seen = HashSet::new();
        for (uid, _) in &batch {
            if !seen.insert(uid.clone()) {
                continue;
            }
            match (router.is_local(uid), subscribed.contains(uid)) {
                (true, false) => to_subscribe.push(uid.clone()),
                (false, true) => to_unsubscribe.push(uid.clone()),
                _ => {}
            }
        }
        let sub_result = if to_subscribe.is_empty() {
            Ok(())
        } else {
            bounded(bus.subscribe(&to_subscribe)).await
        };
        match &sub_result {
            Ok(()) => subscribed.extend(to_subscribe.iter().cloned()),
            Err(e) => tracing::warn!(error = %e, users = to_subscribe.len(), "subscribe failed"),
        }
        if !to_unsubscribe.is_empty() {
            match bounded(bus.unsubscribe(&to_unsubscribe)).await {
                Ok(()) => {
                    for uid in &to_unsubscribe {
                        subscribed.remove(uid);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unsubscribe failed; retried on next change"),
            }
        }
        for (uid, waiter) in batch.drain(..) {
            let Some(waiter) = waiter else { continue };
            // Not subscribed after an Ok: detached again before we ran, nothing to wait for.
            let result = if subscribed.contains(&uid) {
                Ok(())
            } else {
                sub_result.clone()
            };
            let _ = waiter.send(result);
        }
    }
}
