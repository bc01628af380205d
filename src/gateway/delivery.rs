//! One socket's delivery task: replay the inbox, then forward live events, collecting acks.
//!
//! Ordering: the router subscribed the user's channel *before* this task reads the inbox, so
//! every event is either in the read or queued behind it; queued stored events at or below
//! the last replayed Seq are skipped. A user's Seqs are consecutive, so a live event past
//! the next expected Seq means an earlier publish was lost (a subscriber reconnect): the
//! inbox is read up to it first. Without that, acking the later event would confirm, and
//! drop, the earlier one unseen. Acks are coalesced into one inbox confirmation per
//! [`CONFIRM_DELAY`], since one confirm covers every event up to its Seq.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{future::OptionFuture, stream::FuturesUnordered, Future, StreamExt};
use serde::de::IgnoredAny;
use socketioxide::{extract::SocketRef, SendError, SocketError};
use tokio::time::Instant;

use crate::{
    bus::{Attachment, Delivery},
    domain::{Seq, UserId, WireEvent, WithSeq},
    state::AppState,
    storage::StoreError,
    telemetry::Metrics,
};

/// Events read from the inbox per page during replay.
const REPLAY_PAGE: usize = 500;
/// Longest wait before acked Seqs are confirmed in the inbox. One confirm covers every
/// event up to its Seq, so a user receiving many events costs one inbox write per interval:
/// a member of a group that talks every second costs one write per five messages instead of
/// one each. A closing socket confirms at once. Up to this much of acked events is sent
/// again to a socket of the same user that opens meanwhile (another tab), and after a node
/// dies or a confirm fails; clients dedupe by Seq.
const CONFIRM_DELAY: Duration = Duration::from_secs(5);
/// How long an emit may wait for room in the socket's outgoing buffer before the socket
/// counts as a slow consumer.
const EMIT_PATIENCE: Duration = Duration::from_secs(5);
/// How long a closing socket waits for its last confirmation: past it the acked events are
/// re-sent on the next connect (the client dedupes by Seq), and a node shutting down with
/// its store unreachable is not held up by every socket in turn.
const LAST_CONFIRM_PATIENCE: Duration = Duration::from_secs(3);

type AckFuture = Pin<Box<dyn Future<Output = Option<Seq>> + Send>>;

/// What a cumulative-ack socket (contract §15) was sent and says it has processed, shared by
/// its `ack` handler and its delivery task. Plain atomics: an ack costs no wake-up and no
/// channel, and only the highest values matter.
#[derive(Debug, Clone, Default)]
pub struct ClientAcks(Arc<AckCounters>);

#[derive(Debug, Default)]
struct AckCounters {
    /// Highest Seq handed to the socket (raised just before each stored event is emitted).
    sent: AtomicU64,
    /// Highest Seq the client acked, never above `sent` at the time of its ack.
    acked: AtomicU64,
}

impl ClientAcks {
    /// Records that the client has processed every event up to `seq`, capped at what it has
    /// been sent when the ack arrives: an early or stray ack must not cover events sent
    /// after it (they would be confirmed, and dropped from the inbox, unseen).
    pub fn ack(&self, seq: Seq) {
        let capped = seq.min(self.0.sent.load(Ordering::Acquire));
        self.0.acked.fetch_max(capped, Ordering::AcqRel);
    }

    fn sending(&self, seq: Seq) {
        self.0.sent.fetch_max(seq, Ordering::AcqRel);
    }

    fn acked(&self) -> Seq {
        self.0.acked.load(Ordering::Acquire)
    }

    fn sent(&self) -> Seq {
        self.0.sent.load(Ordering::Acquire)
    }
}

/// An ack future as the pump keeps it: outside tokio's cooperative budget, because
/// [`take_ready`] polls hundreds of them in one task turn, and within the budget (about 128
/// polls a turn) the rest would look pending until the next collection.
fn outside_budget(ack: impl Future<Output = Option<Seq>> + Send + 'static) -> AckFuture {
    Box::pin(tokio::task::unconstrained(ack))
}

/// Takes every output of `futures` that is ready, without waiting for the others and
/// without registering a waker: a future still pending is queued inside `futures` when it
/// completes, and taken by a later call.
fn take_ready<T>(
    futures: &mut FuturesUnordered<Pin<Box<dyn Future<Output = T> + Send>>>,
) -> Vec<T> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut ready = Vec::new();
    // `FuturesUnordered` answers Pending once it has polled every queued future (or futures
    // woke themselves while polled); a second pass takes in what completed during the first.
    let mut pending_answers = 2;
    while pending_answers > 0 {
        match futures.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(output)) => ready.push(output),
            Poll::Ready(None) => break,
            Poll::Pending => pending_answers -= 1,
        }
    }
    ready
}

/// A confirmation in flight: the Seq it confirms up to, and how it went.
type ConfirmFuture = Pin<Box<dyn Future<Output = (Seq, Result<(), StoreError>)> + Send>>;

struct Pump {
    socket: SocketRef,
    uid: UserId,
    state: AppState,
    /// Highest stored Seq emitted to this socket.
    last_emitted: Seq,
    /// Highest Seq the client acked.
    max_acked: Seq,
    /// Highest Seq confirmed in the inbox.
    confirmed: Seq,
    /// Per-event acks: one socket.io ack future per emitted stored event.
    acks: FuturesUnordered<AckFuture>,
    /// Cumulative acks (contract §15): set when the socket asked for them, and then stored
    /// events are emitted without an ack request.
    cumulative: Option<ClientAcks>,
    /// Set once the socket counts as a slow consumer (by the router when its queue
    /// overflowed, or here when an emit found no room for [`EMIT_PATIENCE`]): counted once.
    slow: Arc<AtomicBool>,
}

/// How long until `expires_at` (unix seconds; zero once past), or practically never for
/// `None` (the branch waiting for it is disabled then anyway).
fn until_expiry(expires_at: Option<i64>) -> Duration {
    let Some(expires_at) = expires_at else {
        return Duration::from_secs(365 * 24 * 3600);
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let left_ms = expires_at.saturating_mul(1000).saturating_sub(now_ms);
    Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
}

/// Why the pump stopped emitting.
enum Halt {
    /// The socket is gone or too slow.
    Closed,
}

/// Runs until the socket disconnects, its token expires (`expires_at`, unix seconds) or the
/// node stops. `cumulative` is set for a socket that acks with `ack {Seq}` instead of one
/// socket.io ack per event.
pub async fn run(
    socket: SocketRef,
    uid: UserId,
    attachment: Attachment,
    state: AppState,
    cumulative: Option<ClientAcks>,
    expires_at: Option<i64>,
) {
    let Attachment {
        conn_id,
        mut deliveries,
        stop,
        overflowed,
    } = attachment;
    let mut pump = Pump {
        socket,
        uid,
        state,
        last_emitted: 0,
        max_acked: 0,
        confirmed: 0,
        acks: FuturesUnordered::new(),
        cumulative,
        slow: overflowed.clone(),
    };
    // Built once: re-creating cancellation and timer futures on every loop turn costs a
    // lock and a timer-wheel update per event. Polled last, so a turn with a delivery to
    // handle skips its lock; a busy slow consumer is caught by `overflowed` instead.
    let ended = stop.cancelled();
    let confirm_timer = tokio::time::sleep(Duration::ZERO);
    // A token is checked once, at connect: without this a socket opened just before its
    // token expired would keep sending and receiving for as long as it stays up. Here, not in
    // a task of its own, so a socket costs one task and one timer less.
    let expiry = tokio::time::sleep(until_expiry(expires_at));
    tokio::pin!(ended, confirm_timer, expiry);
    // Armed while emitted events wait for their acks: when it fires, the acks that came
    // are collected and confirmed (see `collect_acks`).
    let mut confirm_pending = false;
    // Confirms run beside the loop, never inside it: they are batched node-wide, and one
    // slow batch must not hold up this socket's deliveries.
    let mut confirming: Option<ConfirmFuture> = None;
    // Counted up here and down at the end of this same task, so the two can never swap.
    // Boxed, as every rare await in this task: the task lives as long as its socket, and its
    // future is as large as the largest thing it awaits inline.
    Box::pin(pump.state.presence.socket_up(&pump.uid)).await;
    let mut running = match Box::pin(pump.replay(None)).await {
        Ok(depth) => {
            pump.state.metrics.inbox_depth_at_connect_count.inc();
            pump.state.metrics.inbox_depth_at_connect_sum.add(depth);
            true
        }
        Err(Halt::Closed) => false,
    };
    while running {
        // After anything that emitted (the replay above, a delivery, a resync): acks are
        // awaited, so look for them one interval from now.
        if !confirm_pending && pump.awaiting_acks() {
            confirm_pending = true;
            confirm_timer.as_mut().reset(Instant::now() + CONFIRM_DELAY);
        }
        tokio::select! {
            biased;
            _ = &mut confirm_timer, if confirm_pending && confirming.is_none() => {
                pump.collect_acks();
                confirming = pump.start_confirm();
                // Acks still to come are looked for one interval later (top of the loop).
                confirm_pending = false;
            }
            Some((upto, result)) = OptionFuture::from(confirming.as_mut()), if confirming.is_some() => {
                confirming = None;
                pump.confirmed_up_to(upto, result);
            }
            () = &mut expiry, if expires_at.is_some() => {
                // As a logout closes it: at once (before the last confirm below), and ahead
                // of deliveries, so a busy socket does not outlive its token.
                tracing::info!(uid = %pump.uid, "closing a socket whose token expired");
                let _ = pump.socket.clone().disconnect();
                break;
            }
            delivery = deliveries.recv() => {
                if overflowed.load(Ordering::Relaxed) {
                    tracing::warn!(uid = %pump.uid, "disconnecting slow consumer");
                    break;
                }
                running = match delivery {
                    None => false,
                    Some(Delivery::Stored { seq, event }) => pump.on_stored(seq, &event).await.is_ok(),
                    Some(Delivery::Live(event)) => pump.emit_live(&event).is_ok(),
                    Some(Delivery::Resync) => Box::pin(pump.replay(None)).await.is_ok(),
                };
            }
            _ = &mut ended => {
                if overflowed.load(Ordering::Relaxed) {
                    tracing::warn!(uid = %pump.uid, "disconnecting slow consumer");
                }
                break;
            }
        }
    }
    // Acks that already arrived still count; the rest is replayed on the next connect.
    pump.collect_acks();
    for _ in 0..pump.acks.len() {
        pump.state.metrics.unacked.dec();
    }
    let last = async {
        if let Some(in_flight) = confirming {
            let (upto, result) = in_flight.await;
            pump.confirmed_up_to(upto, result);
        }
        if let Some(confirm) = pump.start_confirm() {
            let (upto, result) = confirm.await;
            pump.confirmed_up_to(upto, result);
        }
    };
    if tokio::time::timeout(LAST_CONFIRM_PATIENCE, last)
        .await
        .is_err()
    {
        tracing::warn!(uid = %pump.uid, "last confirm timed out; acked events will be re-sent");
    }
    pump.state.router.detach(pump.uid.as_str(), conn_id);
    Box::pin(pump.state.presence.socket_down(&pump.uid)).await;
    pump.state.metrics.connections.dec();
    if pump.socket.connected() {
        let _ = pump.socket.clone().disconnect();
    }
    tracing::debug!(uid = %pump.uid, socket = %crate::telemetry::socket_tag(&pump.socket.id), "socket offline");
}

/// What [`patiently`] needs of a pump (not the pump itself: its ack futures are not `Sync`,
/// so a borrow of it cannot be held across an await in a `Send` task).
struct EmitTarget<'a> {
    socket: &'a SocketRef,
    uid: &'a UserId,
    slow: &'a AtomicBool,
    metrics: &'a Metrics,
}

impl Pump {
    fn target(&self) -> EmitTarget<'_> {
        EmitTarget {
            socket: &self.socket,
            uid: &self.uid,
            slow: &self.slow,
            metrics: &self.state.metrics,
        }
    }
}

/// Runs `emit` until it finds room in the socket's outgoing buffer, for up to
/// [`EMIT_PATIENCE`]: a stored event is never dropped (unlike a live one), and a client
/// that reads slower than that counts as gone, and as a slow consumer: a client that
/// stops reading while events trickle in never fills the router's queue, so this is
/// where it is caught.
async fn patiently<T>(
    to: EmitTarget<'_>,
    mut emit: impl FnMut(&SocketRef) -> Result<T, SendError>,
) -> Result<T, Halt> {
    let deadline = Instant::now() + EMIT_PATIENCE;
    loop {
        match emit(to.socket) {
            Ok(sent) => return Ok(sent),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                if Instant::now() >= deadline {
                    if !to.slow.swap(true, Ordering::Relaxed) {
                        tracing::warn!(uid = %to.uid, "slow consumer: no room to emit, disconnecting");
                        to.metrics.slow_consumers.inc();
                    }
                    return Err(Halt::Closed);
                }
                // The client reads slower than we write; wait for the buffer to drain.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => {
                tracing::debug!(uid = %to.uid, error = %e, "emit failed");
                return Err(Halt::Closed);
            }
        }
    }
}

/// Where a stored event told live stands against what the socket was sent.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    /// Already emitted (by a replay that read it).
    AlreadySent,
    /// The next Seq: emit it.
    Next,
    /// Seqs in between were never told live: read them from the inbox first.
    AfterGap,
}

impl Arrival {
    fn of(seq: Seq, last_emitted: Seq) -> Self {
        if seq <= last_emitted {
            Self::AlreadySent
        } else if seq == last_emitted + 1 {
            Self::Next
        } else {
            Self::AfterGap
        }
    }
}

impl Pump {
    /// Takes in every ack that has arrived, without waiting for the rest.
    ///
    /// The ack futures are polled only here, with a waker that does nothing, never from the
    /// select loop: an ack then costs no wake-up of this task (a large group's message
    /// reaches thousands of sockets, and each acks it), and a future first polled after its
    /// ack arrived never starts its timeout timer (socketioxide's timeout looks at the ack
    /// first). A pending future that was polled once gets its ack queued inside `acks`, for
    /// the next call. Each ack future runs outside tokio's cooperative budget (see
    /// [`outside_budget`]).
    fn collect_acks(&mut self) {
        if let Some(client) = &self.cumulative {
            // Already capped at what the socket was sent when the ack came (`ClientAcks::ack`).
            let acked = client.acked();
            if acked > self.max_acked {
                self.state.metrics.acks.inc();
                self.max_acked = acked;
            }
            return;
        }
        for acked in take_ready(&mut self.acks) {
            self.state.metrics.unacked.dec();
            if let Some(seq) = acked {
                self.state.metrics.acks.inc();
                self.max_acked = self.max_acked.max(seq);
            }
        }
    }

    /// Whether some emitted stored event still waits for the client's ack, or an ack came
    /// that is not collected yet (either needs the confirm timer).
    fn awaiting_acks(&self) -> bool {
        match &self.cumulative {
            Some(client) => client.acked() < client.sent() || client.acked() > self.max_acked,
            None => !self.acks.is_empty(),
        }
    }

    async fn on_stored(&mut self, seq: Seq, event: &WireEvent) -> Result<(), Halt> {
        match Arrival::of(seq, self.last_emitted) {
            Arrival::AlreadySent => Ok(()),
            Arrival::Next => self.emit_stored(seq, event).await,
            Arrival::AfterGap => {
                self.state.metrics.live_gaps.inc();
                tracing::debug!(uid = %self.uid, seq, last_emitted = self.last_emitted, "gap in live Seqs; reading the inbox");
                // Only the missing ones: this event is in hand even if the inbox no longer
                // has it (another socket of the user confirmed it), and later ones follow
                // live, in order.
                // Boxed: a replay's future (a store read) is large and rare, and inline it
                // would be part of every idle socket's delivery task.
                Box::pin(self.replay(Some(seq))).await?;
                if seq > self.last_emitted {
                    self.emit_stored(seq, event).await?;
                }
                Ok(())
            }
        }
    }

    /// Emits every stored event after `last_emitted` (and before `before`, when given), page
    /// by page, in Seq order; returns how many it emitted. Afterwards `last_emitted` is at
    /// least the inbox's head at the last read (or `before - 1`), so the next live event is
    /// expected right after it.
    async fn replay(&mut self, before: Option<Seq>) -> Result<u64, Halt> {
        let mut emitted = 0;
        loop {
            let page = match self
                .state
                .inbox
                .replay_page(&self.uid, self.last_emitted, REPLAY_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(uid = %self.uid, error = %e, "replay read failed; disconnecting so the client retries");
                    return Err(Halt::Closed);
                }
            };
            // Expired events sort among the others by Seq; walk both in one Seq order.
            let mut expired = page.expired.into_iter().peekable();
            for (seq, event) in page.events {
                while let Some(old) = expired.next_if(|old| *old < seq) {
                    if self.pass_expired(old, before) {
                        return Ok(emitted);
                    }
                }
                if let Some(before) = before.filter(|b| seq >= *b) {
                    self.last_emitted = self.last_emitted.max(before - 1);
                    return Ok(emitted);
                }
                self.state.metrics.replayed.inc();
                self.emit_stored(seq, &event).await?;
                emitted += 1;
            }
            for old in expired {
                if self.pass_expired(old, before) {
                    return Ok(emitted);
                }
            }
            if !page.full {
                // Seqs up to the head that were not in the read were confirmed or trimmed.
                let known = before.map_or(page.head, |b| page.head.min(b - 1));
                self.last_emitted = self.last_emitted.max(known);
                return Ok(emitted);
            }
        }
    }

    /// Steps over an event of a replay that is past the age bound; `true` when it is at or
    /// past `before`, where the replay ends (as for any event there).
    fn pass_expired(&mut self, seq: Seq, before: Option<Seq>) -> bool {
        if let Some(before) = before.filter(|b| seq >= *b) {
            self.last_emitted = self.last_emitted.max(before - 1);
            return true;
        }
        self.last_emitted = self.last_emitted.max(seq);
        // Skipped, and confirmed with the next confirm (at the latest when the socket
        // closes), but only while no emitted event awaits its ack: a confirm covers every
        // Seq up to its own, and SentAts are not strictly in Seq order (a group message
        // keeps its acceptance time while a later 1:1 message overtakes its append), so an
        // expired event can follow one still unacked. (An event whose ack failed is
        // covered, as by any later ack.) Otherwise it stays until a later ack confirms
        // past it.
        if !self.awaiting_acks() {
            self.max_acked = self.max_acked.max(seq);
        }
        false
    }

    async fn emit_stored(&mut self, seq: Seq, event: &WireEvent) -> Result<(), Halt> {
        let resolved = match &event.body_ref {
            Some(key) => match self.state.inbox.shared_body(&self.uid, key, event).await {
                Ok(body) => Some(body),
                Err(e) => {
                    // The event stays in the inbox, and the client's reconnect replays it.
                    tracing::debug!(uid = %self.uid, key, error = %e, "reading a shared body failed; disconnecting so the client retries");
                    return Err(Halt::Closed);
                }
            },
            None => None,
        };
        let event = WithSeq {
            event,
            seq,
            shared_body: resolved.as_deref(),
        };
        if let Some(client) = &self.cumulative {
            // No ack request: the client's `ack {Seq}` covers this event and those before it.
            // Counted as sent first, so an ack of it can never arrive before the count does.
            client.sending(seq);
            patiently(self.target(), |socket| socket.emit("chat", &event)).await?;
            self.last_emitted = seq;
            self.state.metrics.events_out.inc();
            return Ok(());
        }
        let stream = patiently(self.target(), |socket| {
            socket.emit_with_ack::<_, IgnoredAny>("chat", &event)
        })
        .await?;
        self.last_emitted = seq;
        self.state.metrics.events_out.inc();
        self.state.metrics.unacked.inc();
        self.acks.push(outside_budget(async move {
            // A client that answers the ack with arguments we cannot decode still acked.
            match stream.await {
                Ok(_) | Err(socketioxide::AckError::Decode(_)) => Some(seq),
                Err(_) => None,
            }
        }));
        Ok(())
    }

    fn emit_live(&self, event: &WireEvent) -> Result<(), Halt> {
        // Shared bodies are only stored (fan-outs carry no live copy), never told live.
        debug_assert!(event.body_ref.is_none(), "a live event names a shared body");
        match self.socket.emit("chat", event) {
            Ok(()) => {
                self.state.metrics.events_out.inc();
                Ok(())
            }
            // Live-only events are best effort: a full buffer drops them, nothing stored is lost.
            Err(SendError::Socket(SocketError::InternalChannelFull)) => Ok(()),
            Err(_) => Err(Halt::Closed),
        }
    }

    /// A confirmation of everything acked so far, unless that is confirmed already.
    fn start_confirm(&self) -> Option<ConfirmFuture> {
        if self.max_acked <= self.confirmed {
            return None;
        }
        let (state, uid, upto) = (self.state.clone(), self.uid.clone(), self.max_acked);
        Some(Box::pin(async move {
            (upto, state.inbox.confirm(&uid, upto).await)
        }))
    }

    fn confirmed_up_to(&mut self, upto: Seq, result: Result<(), StoreError>) {
        match result {
            Ok(()) => self.confirmed = self.confirmed.max(upto),
            // Unconfirmed events are only re-sent later, never lost; the client dedupes by Seq.
            Err(e) => tracing::warn!(uid = %self.uid, error = %e, "confirm failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::stream::FuturesUnordered;

    use super::{outside_budget, take_ready, Arrival};

    /// Hundreds of acks that arrived are all taken in one call, inside a task (where tokio's
    /// cooperative budget applies); later ones are taken by the next call.
    #[tokio::test]
    async fn every_arrived_ack_is_taken_in_one_collection() {
        let (first, later, left) = tokio::spawn(async {
            let mut acks = FuturesUnordered::new();
            let mut senders = Vec::new();
            for seq in 1..=300u64 {
                let (ack, arrived) = tokio::sync::oneshot::channel::<()>();
                acks.push(outside_budget(async move {
                    // The shape of socketioxide's ack future: a oneshot under a timeout.
                    match tokio::time::timeout(Duration::from_secs(60), arrived).await {
                        Ok(Ok(())) => Some(seq),
                        _ => None,
                    }
                }));
                senders.push(ack);
            }
            let still_to_come = senders.split_off(290);
            for ack in senders {
                let _ = ack.send(());
            }
            let first = take_ready(&mut acks);
            for ack in still_to_come {
                let _ = ack.send(());
            }
            (first, take_ready(&mut acks), acks.len())
        })
        .await
        .expect("collector task");
        assert_eq!(first.len(), 290, "all that arrived, past the budget");
        assert!(first.iter().all(|seq| seq.is_some_and(|s| s <= 290)));
        assert_eq!(later.len(), 10);
        assert_eq!(left, 0);
    }

    #[test]
    fn a_cumulative_ack_never_covers_events_sent_after_it() {
        let client = super::ClientAcks::default();
        client.ack(1_000_000);
        assert_eq!(
            client.acked(),
            0,
            "an ack before anything was sent covers nothing"
        );
        client.sending(1);
        client.sending(2);
        client.ack(1_000_000);
        assert_eq!(client.acked(), 2, "capped at what was sent when it came");
        client.sending(3);
        assert_eq!(
            client.acked(),
            2,
            "a later send is not covered by the earlier ack"
        );
        client.ack(1);
        assert_eq!(client.acked(), 2, "acks never go back");
        assert_eq!(client.sent(), 3);
    }

    #[test]
    fn a_live_event_is_placed_against_the_last_emitted_seq() {
        assert_eq!(Arrival::of(4, 5), Arrival::AlreadySent);
        assert_eq!(Arrival::of(5, 5), Arrival::AlreadySent);
        assert_eq!(Arrival::of(6, 5), Arrival::Next);
        assert_eq!(Arrival::of(1, 0), Arrival::Next);
        assert_eq!(Arrival::of(7, 5), Arrival::AfterGap);
        assert_eq!(Arrival::of(2, 0), Arrival::AfterGap);
    }
}
