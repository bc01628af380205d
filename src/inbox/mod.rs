//! Durable per-user inboxes: Seq assignment, idempotency, confirmation and replay.
//!
//! Appending an event stores it in the receiver's inbox *and* publishes it on the receiver's
//! channel as one atomic step (a Lua script in Redis; one commit plus an in-order publish in
//! the embedded store), so a node dying in between can neither lose nor reorder an event.
//! Owns the [`InboxStore`] trait and both implementations; does not own sockets or acks.

pub mod claims;
mod embedded;
mod redis;
mod service;
pub mod shared_body;

use async_trait::async_trait;

pub use self::embedded::EmbeddedInbox;
pub use self::redis::{send_claim_key, shared_body_key, RedisInbox};
pub use self::service::{InboxService, ReplayPage};
use crate::{
    domain::{GroupId, MsgId, Seq, UserId, WireEvent},
    storage::StoreError,
};

/// Identifies one logical send for idempotency: the same key within the window is stored once.
#[derive(Debug, Clone)]
pub struct DedupeKey {
    /// The acting user.
    pub sender: UserId,
    /// The EvtType, so a message and its receipts never collide.
    pub kind: &'static str,
    /// The client's MsgID.
    pub msg_id: MsgId,
    /// The group the event belongs to, so one MsgID used in two groups is two events.
    pub group: Option<GroupId>,
}

impl DedupeKey {
    /// The key's text, unique per (sender, kind, group, MsgID); scoped to one receiver by the
    /// store.
    pub fn text(&self) -> String {
        match &self.group {
            None => format!("{}:{}:{}", self.sender, self.kind, self.msg_id),
            Some(gid) => format!("{}:{}:{gid}:{}", self.sender, self.kind, self.msg_id),
        }
    }
}

/// A live copy of an appended event for the acting user's other sockets (not stored).
#[derive(Debug, Clone)]
pub struct Echo {
    /// Whose sockets get the copy.
    pub user: UserId,
    /// The socket that caused the event and must not get it.
    pub skip_socket: String,
    /// Whether the user has other sockets on the acting node. When not, the copy is only
    /// sent if another node holds sockets of the user: most senders have one tab, and a
    /// copy nobody gets costs the store a publish and the node a message to drop.
    pub others_here: bool,
}

impl Echo {
    /// The echo for the `index`-th of several appends of one event: only the first carries
    /// it, so the actor's other sockets get one live copy, not one per recipient.
    pub fn with_first(echo: Option<&Echo>, index: usize) -> Option<&Echo> {
        echo.filter(|_| index == 0)
    }
}

/// An event's call-log entry, for a store that writes it in the same step as the inbox
/// entry (see [`InboxStore::append_logged`]), with the Seq the store assigns.
#[derive(Debug, Clone)]
pub enum LogEntry {
    /// For the call log's queue (the table is elsewhere: DynamoDB): the record as the queue
    /// encodes it, without its Seq.
    Queued {
        /// The record's JSON.
        json: String,
    },
    /// The record's rows in the call-log table, which is in the same Redis: written by the
    /// append itself, so a 1:1 message is logged without a queue entry or a drain.
    Rows(std::sync::Arc<crate::storage::table::CarriedRows>),
}

/// Whether [`InboxStore::append_logged`] wrote the log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// In the same step as the inbox entry.
    Yes,
    /// Not written: the caller queues the record itself (a store that cannot write both at
    /// once, or a duplicate, whose first send was logged but may be logged again).
    No,
}

/// A check or note of another room that a 1:1 message's append can carry in the same store
/// call, so the message costs the store one round trip instead of three (the receiver's
/// block list and the sender's receipt marker were each a round trip of their own, waited
/// for before the append). The room that owns the key describes it
/// (`BlockStore::fused_check`, `ReceiptStore::fused_note`); an inbox that cannot carry it
/// (another kind of store, or a key in another hash slot on Redis Cluster) says so in
/// [`InboxStore::can_carry`], and the caller runs it on its own, as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rider {
    /// Refuse the append, storing and publishing nothing, when `member` is in the set `key`
    /// (checked first, before the idempotency key).
    RefuseIfMember {
        /// The set.
        key: String,
        /// The member that refuses the append.
        member: String,
    },
    /// Set `key` to `value` for `ttl_secs` unless it exists, in the same step as the inbox
    /// entry (so before anyone can be told of the event); not for a duplicate, whose first
    /// send set it.
    SetIfAbsent {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// Its lifetime.
        ttl_secs: u64,
    },
}

/// What [`InboxStore::append_carrying`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarriedAppend {
    /// The append ran (stored or a duplicate), and every rider with it.
    Done(AppendOutcome, Logged),
    /// A [`Rider::RefuseIfMember`] refused it: nothing was stored.
    Refused,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under `seq` and published.
    Stored {
        /// The receiver's new Seq.
        seq: Seq,
    },
    /// Seen before within the window: nothing stored; `sent_at` of the first send.
    Duplicate {
        /// Unix ms of the original acceptance.
        sent_at: i64,
        /// The receiver's Seq of the original, where known.
        seq: Option<Seq>,
    },
}

/// What [`InboxStore::swap_send_claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The claim now holds the new value.
    Swapped,
    /// The claim held something else (`None`: nothing), and was left as it was.
    Holds(Option<String>),
}

/// Bounds applied to every inbox.
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Most events kept per user (oldest dropped first).
    pub max_len: u64,
    /// Oldest event kept, seconds.
    pub max_age_secs: u64,
    /// Idempotency window, seconds.
    pub dedupe_window_secs: u64,
}

/// A user's durable inbox of unconfirmed events.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Stores `event` (whose `sent_at` is set) in `to`'s inbox under the next Seq and publishes
    /// it on `to`'s channel, unless `dedupe` was seen within the window. When stored, `echo`
    /// also gets a live copy, in the same step.
    async fn append(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Result<AppendOutcome, StoreError>;

    /// [`InboxStore::append`], and where the store can (one Redis holding both the inbox and
    /// the call log's queue) `log` queued in the same step, at no extra round trip.
    async fn append_logged(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
        _log: &LogEntry,
    ) -> Result<(AppendOutcome, Logged), StoreError> {
        Ok((self.append(to, event, dedupe, echo).await?, Logged::No))
    }

    /// Whether an append to `to` can carry `rider` in the same store call (see [`Rider`]).
    fn can_carry(&self, _to: &UserId, _rider: &Rider) -> bool {
        false
    }

    /// [`InboxStore::append_logged`] (or [`InboxStore::append`] without `log`) carrying
    /// `riders`, each of which [`InboxStore::can_carry`] accepted for `to`.
    async fn append_carrying(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
        log: Option<&LogEntry>,
        riders: &[Rider],
    ) -> Result<CarriedAppend, StoreError> {
        if !riders.is_empty() {
            return Err(StoreError::Internal("this inbox carries no riders".into()));
        }
        let (outcome, logged) = match log {
            Some(log) => self.append_logged(to, event, dedupe, echo, log).await?,
            None => (self.append(to, event, dedupe, echo).await?, Logged::No),
        };
        Ok(CarriedAppend::Done(outcome, logged))
    }

    /// Appends the same `event` to each of `recipients`' inboxes, as [`InboxStore::append`]
    /// would one by one (all at once; `echo` goes with the first), for a group message. A
    /// store may encode the event once for all of them. One outcome per recipient, in order.
    async fn append_to_each(
        &self,
        recipients: &[UserId],
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        let appends = recipients
            .iter()
            .enumerate()
            .map(|(i, to)| self.append(to, event, dedupe, Echo::with_first(echo, i)));
        futures_util::future::join_all(appends).await
    }

    /// The claim of a group message's send `key` (see [`claims`]), if any.
    async fn read_send_claim(&self, key: &DedupeKey) -> Result<Option<String>, StoreError>;

    /// Sets the claim of a group message's send `key` to `new` (`None`: drops it) if it
    /// holds `expected` (`None`: there is no claim; a new claim lasts the idempotency
    /// window), atomically; otherwise leaves it and tells what it holds.
    async fn swap_send_claim(
        &self,
        key: &DedupeKey,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<SwapOutcome, StoreError>;

    /// Stores `body` under `key` for the inbox entries that name it in `BodyRef` (see
    /// [`shared_body`]), for as long as an inbox keeps events. Done before the first such
    /// entry is appended, so every entry finds its body.
    async fn put_shared_body(&self, key: &str, body: &str) -> Result<(), StoreError>;

    /// The body stored under `key` by [`InboxStore::put_shared_body`]; `None` once it
    /// outlived the inbox age bound.
    async fn read_shared_body(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Confirms (drops) every event of `user` up to and including `upto`.
    async fn confirm(&self, user: &str, upto: Seq) -> Result<(), StoreError>;

    /// Up to `limit` unconfirmed events with Seq > `after`, in Seq order, and the inbox's head
    /// as the read began. Events past the age bound may still be among them (they are
    /// trimmed lazily); see [`InboxLimits::expired`].
    async fn read_after(
        &self,
        user: &str,
        after: Seq,
        limit: usize,
    ) -> Result<InboxPage, StoreError>;
}

/// One read of an inbox.
#[derive(Debug, Default)]
pub struct InboxPage {
    /// Up to the asked number of events after the asked Seq, in Seq order.
    pub events: Vec<(Seq, WireEvent)>,
    /// The last Seq the inbox had handed out before the read (0 for none). Every event up to
    /// it was stored before the read, so it is in `events`, past a full page, or already
    /// confirmed or trimmed: a reader whose page was not full has seen all of them, and the
    /// next event it can be told of live is `head + 1`.
    pub head: Seq,
    /// The read stopped at the asked number of entries, so more may follow (counted before
    /// any unreadable entry was left out of `events`).
    pub full: bool,
}

impl InboxLimits {
    /// Whether an event sent at `sent_at_ms` has outlived the age bound at `now_ms`.
    pub fn expired(&self, sent_at_ms: i64, now_ms: i64) -> bool {
        let max_age_ms = i64::try_from(self.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        now_ms.saturating_sub(sent_at_ms) > max_age_ms
    }
}
