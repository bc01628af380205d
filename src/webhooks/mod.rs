//! Reaching users who are not connected: signed webhooks and Web Push (contract §13).
//!
//! Owns the endpoint registry, users' push subscriptions, the durable queue of calls and
//! its workers, and the `message.offline` check. Does not own presence (it asks the presence
//! store), inboxes (it asks whether a message is still unconfirmed) or tickets (the support
//! desk calls [`WebhookService::emit`]).
//!
//! The queue is one store shared by every node (Redis, or the embedded store on one node):
//! each job has a due time; a worker claims due jobs by moving their due time a lease ahead
//! in one atomic step, so two nodes never run the same job at once; a job is removed when
//! done, or given a new due time (exponential backoff with jitter) when a call fails. A node
//! that dies mid-call leaves its jobs leased: another node runs them once the lease is over
//! (at least once; receivers dedupe by the delivery id).
//!
//! `message.offline` is one notice per stored message (not coalesced): when a message is
//! stored for a user with no socket anywhere, a check is queued for
//! `WEBCHAT_OFFLINE_NOTIFY_SECS` later; if the user is still offline and the message still
//! unconfirmed then, the notice goes to the endpoints that subscribe and to each of the
//! user's push subscriptions. Push notifications carry the conversation as their tag, so a
//! device shows one notification per conversation, the newest.

mod embedded;
pub mod events;
pub mod push;
mod redis;
pub mod target;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use dashmap::DashMap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

pub use embedded::EmbeddedWebhookStore;
pub use events::{
    EventKind, GroupCreated, MessageOffline, PresenceChange, TicketData, WebhookEvent,
};
pub use push::{PushError, Subscription, VapidKey};
pub use redis::{vapid_in_redis, RedisWebhookStore};
pub use target::{TargetError, TargetPolicy};

use crate::{
    accounts::AccountService,
    domain::{now_millis, Seq, UserId, WireEvent},
    inbox::InboxStore,
    presence::PresenceStore,
    storage::StoreError,
    telemetry::Metrics,
};

/// Most endpoints the registry holds.
pub const MAX_ENDPOINTS: usize = 100;
/// Most push subscriptions per user (devices); a new one past it replaces the oldest.
pub const MAX_SUBSCRIPTIONS: usize = 10;
/// Longest endpoint secret, in bytes.
const MAX_SECRET_BYTES: usize = 256;
/// Jobs one node runs at once (all endpoints together).
const MAX_IN_FLIGHT: usize = 64;
/// How often an idle worker looks for due jobs (a job queued on this node wakes it at once).
const POLL: Duration = Duration::from_millis(250);
/// A claimed job is another node's to take after this long: longer than any call (the
/// HTTP timeout is capped below it).
const LEASE_MS: i64 = 120_000;
/// How long a job waits when its endpoint is at its concurrency limit (not an attempt).
const BUSY_DELAY_MS: i64 = 200;
/// How often the worker refreshes the backlog gauge.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// TTL of a push message at the push service, in seconds (a day, like the retries).
const PUSH_TTL_SECS: u32 = 86_400;
/// How often each node re-reads the endpoint registry to learn which event types some
/// endpoint takes: an endpoint registered or deleted on another node takes effect here
/// within this (on the node that took the admin request, at once).
pub const ENDPOINTS_REFRESH: Duration = Duration::from_secs(5);

/// A registered webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its id (`wh_<uuid>`).
    pub id: String,
    /// Where calls go (checked by the target guard).
    pub url: String,
    /// The event types it gets.
    pub events: Vec<EventKind>,
    /// The HMAC key of its calls' signatures; never listed.
    pub secret: String,
    /// Unix ms.
    #[serde(rename = "createdAt")]
    pub created_at: i64,
}

/// A queued unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique; for a call, its delivery id.
    pub id: String,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempt: u32,
    /// Unix ms of its creation (retries stop past the retry window from it).
    pub first_at: i64,
    /// What to do.
    pub task: Task,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Task {
    /// POST `body` to endpoint `endpoint` (by id: a deleted endpoint's calls are dropped).
    Call {
        /// The endpoint's id.
        endpoint: String,
        /// The event type (the `Webchat-Event` header).
        event: EventKind,
        /// The JSON envelope, sent as is on every attempt.
        body: String,
    },
    /// Send `payload` (JSON, encrypted per attempt) to one push subscription of `uid`.
    Push {
        /// The subscriber.
        uid: String,
        /// The subscription's endpoint (it is looked up again: a removed one is dropped).
        endpoint: String,
        /// The notification's JSON.
        payload: String,
    },
    /// Decide whether `notice` goes out (the user still offline, the message unconfirmed).
    OfflineCheck {
        /// The notice to send.
        notice: MessageOffline,
    },
}

/// The registry, subscriptions and queue.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds or replaces an endpoint.
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;
    /// Every endpoint.
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
    /// One endpoint.
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError>;
    /// Removes an endpoint; whether it existed.
    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError>;
    /// Adds or replaces (by endpoint URL) a push subscription of `uid`.
    async fn put_subscription(&self, uid: &str, sub: &Subscription) -> Result<(), StoreError>;
    /// `uid`'s push subscriptions.
    async fn subscriptions(&self, uid: &str) -> Result<Vec<Subscription>, StoreError>;
    /// Whether anyone ever stored a push subscription here (a deployment whose users never
    /// turned push on skips the offline check of every stored message). May say yes after
    /// every subscription is gone; never no while one exists.
    async fn push_ever_used(&self) -> Result<bool, StoreError>;
    /// Removes one; whether it existed.
    async fn delete_subscription(&self, uid: &str, endpoint: &str) -> Result<bool, StoreError>;
    /// Queues each job at its due time (unix ms), unless a job with its id is queued.
    async fn schedule(&self, jobs: &[(Job, i64)]) -> Result<(), StoreError>;
    /// Up to `max` jobs due at `now`, each leased until `now + lease_ms` (no other claim
    /// returns it before then), in due order.
    async fn claim(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Job>, StoreError>;
    /// Stores `job` (its new attempt count) due at `due`.
    async fn reschedule(&self, job: &Job, due: i64) -> Result<(), StoreError>;
    /// Removes a job.
    async fn finish(&self, id: &str) -> Result<(), StoreError>;
    /// Jobs queued (every node's).
    async fn queued(&self) -> Result<u64, StoreError>;
}

/// Why a webhook or push request is refused (400, nothing stored).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The target URL is refused.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// Push subscription keys are malformed.
    #[error("{0}")]
    Push(#[from] PushError),
    /// Another input rule (events, secret).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How calls are retried and bounded.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Delay before the first retry; doubled for each one after.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// Retries stop (the job is dropped) once this long has passed since the event.
    pub retry_window: Duration,
    /// Calls one node makes to one endpoint at once.
    pub per_endpoint: usize,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Delay before `message.offline` is decided.
    pub offline_after: Duration,
}

impl DeliveryPolicy {
    /// The delay before attempt `attempt + 1` (1-based failures): `base * 2^(attempt-1)`,
    /// capped, then drawn uniformly from its upper half (jitter, so endpoints that come back
    /// are not hit by every queued call at once).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .retry_base
            .saturating_mul(1u32 << exp)
            .min(self.retry_max);
        let half = full / 2;
        half + full
            .saturating_sub(half)
            .mul_f64(rand::thread_rng().gen::<f64>())
    }
}

struct Inner {
    store: Arc<dyn WebhookStore>,
    presence: Arc<dyn PresenceStore>,
    inbox: Arc<dyn InboxStore>,
    accounts: AccountService,
    metrics: Arc<Metrics>,
    policy: DeliveryPolicy,
    targets: TargetPolicy,
    http: reqwest::Client,
    vapid: VapidKey,
    /// Per-endpoint concurrency on this node.
    busy: DashMap<String, Arc<Semaphore>>,
    /// Wakes this node's worker when it queued something.
    wake: Notify,
    /// Which event types some endpoint takes, as this node last read the registry.
    kinds: EndpointKinds,
    /// Whether some user may have a push subscription, as this node last read the store
    /// (with the endpoint types, see [`ENDPOINTS_REFRESH`]); true until first read.
    push_used: AtomicBool,
}

/// The event types at least one endpoint takes, as this node last read the registry. An
/// event of any other type is dropped where it happens, before any task or store read: a
/// presence change comes with every connect and disconnect, and most deployments register
/// no endpoint for it.
struct EndpointKinds {
    /// One bit per [`EventKind`] ([`EventKind::bit`]). Every bit until the registry is first
    /// read: not knowing yet means asking the store, as if every type had an endpoint.
    bits: AtomicU32,
    /// Held while the registry is read and `bits` replaced, and while this node registers or
    /// deletes an endpoint: a read that began before a registration must not replace, with
    /// what it read, the bits the registration set after it.
    updating: tokio::sync::Mutex<()>,
}

impl EndpointKinds {
    fn unknown() -> Self {
        Self {
            bits: AtomicU32::new(EventKind::ALL.iter().fold(0, |bits, k| bits | k.bit())),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    fn has(&self, kind: EventKind) -> bool {
        self.bits.load(Ordering::Acquire) & kind.bit() != 0
    }

    fn bits_of(endpoints: &[Endpoint]) -> u32 {
        endpoints
            .iter()
            .flat_map(|e| &e.events)
            .fold(0, |bits, kind| bits | kind.bit())
    }
}

/// Webhooks and Web Push; cheap to clone.
#[derive(Clone)]
pub struct WebhookService {
    inner: Arc<Inner>,
}

/// The back-ends and rules of a [`WebhookService`].
pub struct WebhookDeps {
    /// The registry, subscriptions and queue.
    pub store: Arc<dyn WebhookStore>,
    /// Who is online anywhere.
    pub presence: Arc<dyn PresenceStore>,
    /// Whether a message is still unconfirmed.
    pub inbox: Arc<dyn InboxStore>,
    /// Senders' display names.
    pub accounts: AccountService,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Retries and limits.
    pub policy: DeliveryPolicy,
    /// Which targets may be called.
    pub targets: TargetPolicy,
    /// The VAPID key.
    pub vapid: VapidKey,
}

/// A registration request, parsed.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// The URL as given.
    pub url: String,
    /// Event type names as given.
    pub events: Vec<String>,
    /// The secret as given.
    pub secret: String,
}

impl WebhookService {
    /// A service over `deps`; fails only when the HTTP client cannot be built.
    pub fn new(deps: WebhookDeps) -> Result<Self, reqwest::Error> {
        let timeout = deps.policy.timeout.min(Duration::from_millis(
            u64::try_from(LEASE_MS / 2).unwrap_or(60_000),
        ));
        let http = deps.targets.client(timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store: deps.store,
                presence: deps.presence,
                inbox: deps.inbox,
                accounts: deps.accounts,
                metrics: deps.metrics,
                policy: deps.policy,
                targets: deps.targets,
                http,
                vapid: deps.vapid,
                busy: DashMap::new(),
                wake: Notify::new(),
                kinds: EndpointKinds::unknown(),
                push_used: AtomicBool::new(true),
            }),
        })
    }

    /// The VAPID public key browsers subscribe with.
    pub fn vapid_public_key(&self) -> String {
        self.inner.vapid.public_key()
    }

    /// Registers an endpoint: the URL checked (and resolved), at least one known event
    /// type, a non-empty secret. Nothing is stored when any of it is refused.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, new: NewEndpoint) -> Result<Endpoint, WebhookError> {
        let mut events = Vec::new();
        for name in &new.events {
            let kind = EventKind::parse(name)
                .ok_or_else(|| WebhookError::Invalid(format!("unknown event type {name:?}")))?;
            if !events.contains(&kind) {
                events.push(kind);
            }
        }
        if events.is_empty() {
            return Err(WebhookError::Invalid(
                "events must name at least one event type".into(),
            ));
        }
        if new.secret.is_empty() || new.secret.len() > MAX_SECRET_BYTES {
            return Err(WebhookError::Invalid(format!(
                "secret must be 1 to {MAX_SECRET_BYTES} bytes"
            )));
        }
        let url = self.inner.targets.check_resolved(&new.url).await?;
        if self.inner.store.endpoints().await?.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::Invalid(format!(
                "at most {MAX_ENDPOINTS} endpoints"
            )));
        }
        let endpoint = Endpoint {
            id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
            url: url.to_string(),
            events,
            secret: new.secret,
            created_at: now_millis(),
        };
        {
            let kinds = &self.inner.kinds;
            let _updating = kinds.updating.lock().await;
            self.inner.store.put_endpoint(&endpoint).await?;
            // At once on this node; other nodes learn of it within ENDPOINTS_REFRESH.
            kinds.bits.fetch_or(
                EndpointKinds::bits_of(std::slice::from_ref(&endpoint)),
                Ordering::AcqRel,
            );
        }
        tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, "webhook endpoint registered");
        Ok(endpoint)
    }

    /// Every endpoint.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let mut all = self.inner.store.endpoints().await?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Removes an endpoint (its queued calls are dropped when their turn comes).
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = self.inner.store.delete_endpoint(id).await?;
        if deleted {
            // Knowing a type has an endpoint when it no longer has only costs queue work
            // (the calls are dropped), so a failed re-read is logged, not answered.
            if let Err(e) = self.refresh_endpoint_kinds().await {
                tracing::warn!(error = %e, "webhook endpoints not re-read after a delete");
            }
        }
        Ok(deleted)
    }

    /// Whether some endpoint takes `kind`, as this node last read the registry (see
    /// [`ENDPOINTS_REFRESH`]); events of a type none takes are dropped without a store read.
    pub fn has_endpoints_for(&self, kind: EventKind) -> bool {
        self.inner.kinds.has(kind)
    }

    /// Re-reads the registry and keeps which event types some endpoint takes. The worker
    /// ([`WebhookService::run`]) does this every [`ENDPOINTS_REFRESH`]; start-up once first.
    pub async fn refresh_endpoint_kinds(&self) -> Result<(), StoreError> {
        let kinds = &self.inner.kinds;
        let _updating = kinds.updating.lock().await;
        let endpoints = self.inner.store.endpoints().await?;
        let push_used = self.inner.store.push_ever_used().await?;
        self.inner.push_used.store(push_used, Ordering::Release);
        let bits = EndpointKinds::bits_of(&endpoints);
        let before = kinds.bits.swap(bits, Ordering::AcqRel);
        if before != bits {
            let taken: Vec<&str> = EventKind::ALL
                .into_iter()
                .filter(|k| bits & k.bit() != 0)
                .map(EventKind::as_str)
                .collect();
            tracing::info!(event_types = ?taken, "webhook event types with an endpoint changed");
        }
        Ok(())
    }

    /// Stores a push subscription of `uid` (the endpoint checked, the keys parsed); past
    /// [`MAX_SUBSCRIPTIONS`] the oldest is dropped.
    #[tracing::instrument(skip_all, fields(uid = %uid))]
    pub async fn subscribe(
        &self,
        uid: &UserId,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<(), WebhookError> {
        let sub = Subscription::parse(endpoint, p256dh, auth)?;
        let url = self.inner.targets.check_resolved(&sub.endpoint).await?;
        let sub = Subscription {
            endpoint: url.to_string(),
            ..sub
        };
        let store = &self.inner.store;
        store.put_subscription(uid.as_str(), &sub).await?;
        // At once on this node; other nodes read it within ENDPOINTS_REFRESH.
        self.inner.push_used.store(true, Ordering::Release);
        let mut all = store.subscriptions(uid.as_str()).await?;
        if all.len() > MAX_SUBSCRIPTIONS {
            all.sort_by_key(|s| s.created_at);
            for old in &all[..all.len() - MAX_SUBSCRIPTIONS] {
                store
                    .delete_subscription(uid.as_str(), &old.endpoint)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes `uid`'s subscription at `endpoint`; whether there was one.
    pub async fn unsubscribe(&self, uid: &UserId, endpoint: &str) -> Result<bool, StoreError> {
        let endpoint = match self.inner.targets.check_url(endpoint) {
            Ok(url) => url.to_string(),
            Err(_) => endpoint.trim().to_owned(),
        };
        self.inner
            .store
            .delete_subscription(uid.as_str(), &endpoint)
            .await
    }

    /// `uid`'s push subscriptions (their endpoints).
    pub async fn subscriptions(&self, uid: &UserId) -> Result<Vec<Subscription>, StoreError> {
        self.inner.store.subscriptions(uid.as_str()).await
    }

    /// Queues one call of `event` to every endpoint that subscribes to its type; how many.
    /// The support desk calls this for `ticket.opened` and `ticket.claimed`. Each call's id
    /// is [`WebhookEvent::delivery_id`]: the same event emitted again while its call is still
    /// queued is not queued twice.
    #[tracing::instrument(skip_all, fields(event = event.kind().as_str()))]
    pub async fn emit(&self, event: WebhookEvent) -> Result<usize, StoreError> {
        let kind = event.kind();
        if !self.has_endpoints_for(kind) {
            return Ok(0);
        }
        let endpoints = self.inner.store.endpoints().await?;
        let now = now_millis();
        let jobs: Vec<(Job, i64)> = endpoints
            .iter()
            .filter(|e| e.events.contains(&kind))
            .map(|e| {
                let id = event.delivery_id(&e.id);
                let body = event.envelope(&id, now);
                let job = Job {
                    id,
                    attempt: 0,
                    first_at: now,
                    task: Task::Call {
                        endpoint: e.id.clone(),
                        event: kind,
                        body,
                    },
                };
                (job, now)
            })
            .collect();
        self.queue(&jobs, |m| &m.webhook_queued).await?;
        Ok(jobs.len())
    }

    /// [`WebhookService::emit`] in the background, for callers on a hot path that must not
    /// wait for (or fail with) the queue: a failure is logged.
    pub fn emit_later(&self, event: WebhookEvent) {
        if !self.has_endpoints_for(event.kind()) {
            // The common case for presence (every connect and disconnect): no task at all.
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let kind = event.kind();
            if let Err(e) = service.emit(event).await {
                tracing::warn!(event = kind.as_str(), error = %e, "webhook event not queued");
            }
        });
    }

    /// A `message` was stored in `to`'s inbox under `seq`: see
    /// [`WebhookService::messages_stored`].
    pub fn message_stored(&self, to: &UserId, seq: Seq, event: &WireEvent) {
        self.messages_stored(vec![(to.to_string(), seq)], event);
    }

    /// A `message` was stored in each recipient's inbox under its Seq: for each recipient
    /// with no socket anywhere, when someone would be told (an endpoint takes
    /// `message.offline`, or the recipient has push subscriptions), the offline check is
    /// queued for the notify delay. Runs in the background: the sender's ack never waits
    /// for it (a node that dies in between loses the check, not the message).
    pub fn messages_stored(&self, stored: Vec<(String, Seq)>, event: &WireEvent) {
        if stored.is_empty() || event.evt_type != "message" || !self.tells_offline() {
            return;
        }
        let (from, gid) = if event.originated.is_empty() {
            (event.from.clone(), None)
        } else {
            (event.originated.clone(), Some(event.from.clone()))
        };
        let template = MessageOffline {
            uid: String::new(),
            from,
            from_name: String::new(),
            gid,
            msg_id: event.msg_id.clone(),
            seq: 0,
            sent_at: event.sent_at,
            preview: events::preview(&event.body),
        };
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(e) = service.plan_offline_checks(stored, template).await {
                tracing::warn!(error = %e, "offline checks not queued");
            }
        });
    }

    /// Whether a recipient's offline message may be told to anyone: some endpoint takes
    /// `message.offline`, or push subscriptions are in use. Otherwise a stored message costs
    /// no task and no store read (it was one presence read per message on the hot path).
    pub fn tells_offline(&self) -> bool {
        self.has_endpoints_for(EventKind::MessageOffline)
            || self.inner.push_used.load(Ordering::Acquire)
    }

    async fn plan_offline_checks(
        &self,
        stored: Vec<(String, Seq)>,
        template: MessageOffline,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let uids: Vec<String> = stored.iter().map(|(uid, _)| uid.clone()).collect();
        let online = inner.presence.online(&uids).await?;
        let offline: Vec<(String, Seq)> = stored
            .into_iter()
            .zip(online)
            .filter_map(|(entry, online)| (!online).then_some(entry))
            .collect();
        if offline.is_empty() {
            return Ok(());
        }
        let endpoints_want = self.has_endpoints_for(EventKind::MessageOffline);
        let now = now_millis();
        let delay = i64::try_from(inner.policy.offline_after.as_millis()).unwrap_or(i64::MAX);
        let mut jobs = Vec::new();
        for (uid, seq) in offline {
            if !endpoints_want && inner.store.subscriptions(&uid).await?.is_empty() {
                continue;
            }
            let notice = MessageOffline {
                uid,
                seq,
                ..template.clone()
            };
            let job = Job {
                // One check per message and recipient, however often it is planned.
                id: format!("off_{}_{}", notice.uid, notice.seq),
                attempt: 0,
                first_at: now,
                task: Task::OfflineCheck { notice },
            };
            jobs.push((job, now.saturating_add(delay)));
        }
        if !jobs.is_empty() {
            inner.store.schedule(&jobs).await?;
            inner.wake.notify_one();
        }
        Ok(())
    }

    async fn queue(
        &self,
        jobs: &[(Job, i64)],
        counter: impl Fn(&Metrics) -> &crate::telemetry::Counter,
    ) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.inner.store.schedule(jobs).await?;
        counter(&self.inner.metrics).add(jobs.len() as u64);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Jobs queued on every node (the `/metrics` gauge).
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        self.inner.store.queued().await
    }

    /// Runs this node's worker until `shutdown`: claims due jobs and runs them, at most
    /// [`MAX_IN_FLIGHT`] at once; on shutdown lets the calls in flight end (each bounded by
    /// the call timeout) so they are finished or rescheduled rather than left leased. Beside
    /// it (in the same task), re-reads the registry every [`ENDPOINTS_REFRESH`].
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::join!(
            self.clone().refresh_endpoint_kinds_until(shutdown.clone()),
            self.work(shutdown),
        );
    }

    /// Keeps [`WebhookService::has_endpoints_for`] within [`ENDPOINTS_REFRESH`] of the
    /// registry, which other nodes change too.
    async fn refresh_endpoint_kinds_until(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(ENDPOINTS_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = self.refresh_endpoint_kinds().await {
                tracing::warn!(error = %e, "webhook endpoints not re-read; the types last read still hold");
            }
        }
    }

    /// The worker of [`WebhookService::run`].
    async fn work(self, shutdown: CancellationToken) {
        let mut in_flight = JoinSet::new();
        let mut gauge_at = tokio::time::Instant::now();
        loop {
            while in_flight.try_join_next().is_some() {}
            if gauge_at.elapsed() >= BACKLOG_EVERY {
                gauge_at = tokio::time::Instant::now();
                if let Ok(n) = self.backlog().await {
                    self.inner
                        .metrics
                        .webhook_backlog
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let mut claimed = 0;
            if room > 0 {
                match self.inner.store.claim(now_millis(), LEASE_MS, room).await {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            in_flight.spawn(self.clone().process(job));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhook queue unavailable"),
                }
            }
            if claimed == room && room > 0 {
                // There may be more due: look again as soon as a slot frees.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = in_flight.join_next() => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
        if let Ok(backlog) = self.backlog().await {
            tracing::debug!(backlog, "webhook worker stopped");
        }
    }

    /// Runs one claimed job to its end: finished, rescheduled or dropped.
    async fn process(self, job: Job) {
        let outcome = match &job.task {
            Task::Call {
                endpoint,
                event,
                body,
            } => self.call(&job, endpoint, *event, body).await,
            Task::Push {
                uid,
                endpoint,
                payload,
            } => self.push(uid, endpoint, payload).await,
            Task::OfflineCheck { notice } => self.offline_check(notice).await,
        };
        let store = &self.inner.store;
        let result = match outcome {
            Outcome::Done => {
                if let Some(counters) = self.counters(&job.task) {
                    counters.delivered.inc();
                }
                store.finish(&job.id).await
            }
            Outcome::Busy => {
                store
                    .reschedule(&job, now_millis().saturating_add(BUSY_DELAY_MS))
                    .await
            }
            Outcome::Drop(reason) => {
                tracing::warn!(job = %job.id, reason, "webhook job dropped");
                if let Some(counters) = self.counters(&job.task) {
                    counters.dropped.inc();
                }
                store.finish(&job.id).await
            }
            Outcome::Retry(reason) => self.retry(job.clone(), &reason).await,
        };
        if let Err(e) = result {
            // The lease runs out and the job is run again: at least once.
            tracing::warn!(job = %job.id, error = %e, "webhook job outcome not stored");
        }
    }

    async fn retry(&self, mut job: Job, reason: &str) -> Result<(), StoreError> {
        let policy = &self.inner.policy;
        let counters = self.counters(&job.task);
        job.attempt = job.attempt.saturating_add(1);
        let now = now_millis();
        let age = Duration::from_millis(u64::try_from(now - job.first_at).unwrap_or(0));
        if age >= policy.retry_window {
            tracing::warn!(job = %job.id, attempts = job.attempt, reason, "webhook job dropped after its retry window");
            if let Some(counters) = counters {
                counters.dropped.inc();
            }
            return self.inner.store.finish(&job.id).await;
        }
        let delay = policy.backoff(job.attempt);
        tracing::info!(job = %job.id, attempt = job.attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), reason, "webhook job failed; retrying");
        if let Some(counters) = counters {
            counters.retried.inc();
        }
        let due = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        self.inner.store.reschedule(&job, due).await
    }

    /// The counters of a call or a push (an offline check is neither).
    fn counters(&self, task: &Task) -> Option<Counters<'_>> {
        let m = &self.inner.metrics;
        match task {
            Task::Call { .. } => Some(Counters {
                delivered: &m.webhook_delivered,
                retried: &m.webhook_retried,
                dropped: &m.webhook_dropped,
            }),
            Task::Push { .. } => Some(Counters {
                delivered: &m.push_delivered,
                retried: &m.push_retried,
                dropped: &m.push_dropped,
            }),
            Task::OfflineCheck { .. } => None,
        }
    }

    fn permit(&self, key: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let limit = self.inner.policy.per_endpoint.max(1);
        let semaphore = self
            .inner
            .busy
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }

    async fn call(&self, job: &Job, endpoint_id: &str, event: EventKind, body: &str) -> Outcome {
        let endpoint = match self.inner.store.endpoint(endpoint_id).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return Outcome::Drop("endpoint deleted"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let url = match self.inner.targets.check_url(&endpoint.url) {
            Ok(url) => url,
            Err(_) => return Outcome::Drop("endpoint no longer allowed"),
        };
        let Some(_permit) = self.permit(&endpoint.id) else {
            return Outcome::Busy;
        };
        let t = chrono::Utc::now().timestamp();
        let signature = events::signature(&endpoint.secret, t, body);
        let sent = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Webchat-Event", event.as_str())
            .header("Webchat-Delivery", job.id.as_str())
            .header("Webchat-Signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => {
                tracing::debug!(endpoint = %endpoint.id, delivery = %job.id, "webhook delivered");
                Outcome::Done
            }
            Ok(res) => Outcome::Retry(format!("status {}", res.status().as_u16())),
            Err(e) => Outcome::Retry(error_chain(&e)),
        }
    }

    async fn push(&self, uid: &str, endpoint: &str, payload: &str) -> Outcome {
        let subs = match self.inner.store.subscriptions(uid).await {
            Ok(subs) => subs,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let Some(sub) = subs.into_iter().find(|s| s.endpoint == endpoint) else {
            return Outcome::Drop("subscription removed");
        };
        let url = match self.inner.targets.check_url(&sub.endpoint) {
            Ok(url) => url,
            Err(_) => return Outcome::Drop("push endpoint no longer allowed"),
        };
        let origin = url.origin().ascii_serialization();
        let Some(_permit) = self.permit(&origin) else {
            return Outcome::Busy;
        };
        let body = match sub.encrypt(payload.as_bytes()) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(uid, error = %e, "push payload not encrypted");
                return Outcome::Drop("payload not encryptable");
            }
        };
        let authorization = self
            .inner
            .vapid
            .authorization(&url, chrono::Utc::now().timestamp());
        let sent = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header("TTL", PUSH_TTL_SECS.to_string())
            .header("Urgency", "normal")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => Outcome::Done,
            // The subscription is gone (RFC 8030 §7.3): it never comes back.
            Ok(res) if matches!(res.status().as_u16(), 404 | 410) => {
                match self.inner.store.delete_subscription(uid, endpoint).await {
                    Ok(_) => {
                        self.inner.metrics.push_subscriptions_removed.inc();
                        tracing::info!(
                            uid,
                            status = res.status().as_u16(),
                            "push subscription gone; removed"
                        );
                        Outcome::Drop("subscription gone")
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            // Refused for good (bad VAPID key, payload, request): retrying changes nothing.
            Ok(res)
                if res.status().is_client_error()
                    && !matches!(res.status().as_u16(), 408 | 429) =>
            {
                Outcome::Drop("push service refused the message")
            }
            Ok(res) => Outcome::Retry(format!("status {}", res.status().as_u16())),
            Err(e) => Outcome::Retry(error_chain(&e)),
        }
    }

    async fn offline_check(&self, notice: &MessageOffline) -> Outcome {
        let inner = &self.inner;
        match inner
            .presence
            .online(std::slice::from_ref(&notice.uid))
            .await
        {
            Ok(online) if matches!(online.as_slice(), [true]) => return Outcome::Done,
            Ok(_) => {}
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        let page = match inner
            .inbox
            .read_after(&notice.uid, notice.seq.saturating_sub(1), 1)
            .await
        {
            Ok(page) => page,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if !page.events.iter().any(|(seq, _)| *seq == notice.seq) {
            // Confirmed (or trimmed) meanwhile: nobody needs telling.
            return Outcome::Done;
        }
        let mut notice = notice.clone();
        notice.from_name = match UserId::parse(&notice.from) {
            Ok(from) => match inner.accounts.display_name(&from).await {
                Ok(Some(name)) => name,
                _ => notice.from.clone(),
            },
            Err(_) => notice.from.clone(),
        };
        let payload = serde_json::json!({
            "type": EventKind::MessageOffline.as_str(),
            "fromName": notice.from_name,
            "preview": notice.preview,
            "conversation": notice.conversation(),
        })
        .to_string();
        let subs = match inner.store.subscriptions(&notice.uid).await {
            Ok(subs) => subs,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let now = now_millis();
        let pushes: Vec<(Job, i64)> = subs
            .into_iter()
            .map(|sub| {
                let job = Job {
                    id: format!("p_{}", uuid::Uuid::new_v4().simple()),
                    attempt: 0,
                    first_at: now,
                    task: Task::Push {
                        uid: notice.uid.clone(),
                        endpoint: sub.endpoint,
                        payload: payload.clone(),
                    },
                };
                (job, now)
            })
            .collect();
        // The pushes and the calls are queued before the check is finished: a failure here
        // runs the check again (at least once).
        if let Err(e) = self.queue(&pushes, |m| &m.push_queued).await {
            return Outcome::Retry(e.to_string());
        }
        if let Err(e) = self.emit(WebhookEvent::MessageOffline(notice)).await {
            return Outcome::Retry(e.to_string());
        }
        Outcome::Done
    }
}

impl crate::presence::PresenceObserver for WebhookService {
    fn changed(&self, uid: &UserId, online: bool) {
        if uid.as_str().starts_with(crate::accounts::GUEST_UID_PREFIX) {
            // A guest is an anonymous visitor with a uid the server made up for one visit:
            // nobody the app knows, so its comings and goings are nothing to tell it.
            return;
        }
        self.emit_later(WebhookEvent::Presence(PresenceChange {
            uid: uid.to_string(),
            state: if online { "online" } else { "offline" }.to_owned(),
            changed_at: now_millis(),
        }));
    }
}

/// The outcome counters of one kind of job.
#[derive(Clone, Copy)]
struct Counters<'a> {
    delivered: &'a crate::telemetry::Counter,
    retried: &'a crate::telemetry::Counter,
    dropped: &'a crate::telemetry::Counter,
}

/// How a job's run ended.
enum Outcome {
    /// Done: remove it.
    Done,
    /// Its endpoint is at its concurrency limit: run it a moment later (not an attempt).
    Busy,
    /// Nothing to retry: remove it and count it dropped.
    Drop(&'static str),
    /// Failed: retry after the backoff, within the retry window.
    Retry(String),
}

/// An error with its causes (reqwest's own message hides the connect error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The VAPID key kept in `<dir>/vapid_private_key`, created if missing.
pub fn vapid_in_data_dir(dir: &std::path::Path, subject: &str) -> Result<VapidKey, StoreError> {
    let path = dir.join("vapid_private_key");
    if let Some(text) = webchat_core::store::read_key_file(&path)? {
        return VapidKey::from_private(&text, subject)
            .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())));
    }
    let (key, encoded) = VapidKey::generate(subject);
    webchat_core::store::write_key_file(dir, &path, &encoded)?;
    tracing::info!(path = %path.display(), "created a VAPID key for Web Push");
    Ok(key)
}

/// Endpoints as the admin API lists them (no secrets).
pub fn listed(endpoint: &Endpoint) -> serde_json::Value {
    serde_json::json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "createdAt": endpoint.created_at,
    })
}

/// Decodes stored JSON, logging (and skipping) what does not decode.
fn decode_all<T: serde::de::DeserializeOwned>(what: &str, raw: HashMap<String, String>) -> Vec<T> {
    raw.into_iter()
        .filter_map(|(key, json)| match serde_json::from_str(&json) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(what, key, error = %e, "undecodable record skipped");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
