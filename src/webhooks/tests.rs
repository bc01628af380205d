//! The queue contract every [`WebhookStore`] must keep, run here on the embedded store (the
//! Redis store runs the same scenarios in `tests/api/webhooks.rs` through real nodes).

use super::*;
use crate::storage::embedded::EmbeddedDb;

fn job(id: &str) -> Job {
    Job {
        id: id.to_owned(),
        attempt: 0,
        first_at: 0,
        task: Task::Call {
            endpoint: "wh_1".into(),
            event: EventKind::Presence,
            body: "{}".into(),
        },
    }
}

#[tokio::test]
async fn a_claimed_job_is_leased_until_finished_or_rescheduled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedWebhookStore::new(EmbeddedDb::open(dir.path()).expect("db"));
    store
        .schedule(&[(job("a"), 10), (job("b"), 20), (job("c"), 1_000)])
        .await
        .expect("schedule");
    // Scheduling an id that is queued changes nothing.
    store.schedule(&[(job("a"), 5_000)]).await.expect("again");
    assert_eq!(store.queued().await.expect("queued"), 3);

    let first = store.claim(100, 1_000, 10).await.expect("claim");
    let ids: Vec<_> = first.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "due ones, in due order");
    assert!(
        store.claim(500, 1_000, 10).await.expect("claim").is_empty(),
        "leased jobs are not claimed again"
    );
    let mut retried = job("a");
    retried.attempt = 1;
    store.reschedule(&retried, 600).await.expect("reschedule");
    store.finish("b").await.expect("finish");
    let next = store.claim(700, 1_000, 10).await.expect("claim");
    assert_eq!(next, vec![retried]);
    // The lease ran out: claimed again (the node that held it died).
    let again = store.claim(1_100, 1_000, 10).await.expect("claim");
    let ids: Vec<_> = again.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["c"]);
    let again = store.claim(1_800, 1_000, 10).await.expect("claim");
    assert_eq!(again.len(), 1, "a's lease (until 1700) is over");
    assert_eq!(store.queued().await.expect("queued"), 2);
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
    let policy = DeliveryPolicy {
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(1_000),
        retry_window: Duration::from_secs(86_400),
        per_endpoint: 1,
        timeout: Duration::from_secs(1),
        offline_after: Duration::from_secs(1),
    };
    for _ in 0..50 {
        let first = policy.backoff(1);
        assert!((50..=100).contains(&first.as_millis()), "{first:?}");
        let third = policy.backoff(3);
        assert!((200..=400).contains(&third.as_millis()), "{third:?}");
        let late = policy.backoff(40);
        assert!((500..=1_000).contains(&late.as_millis()), "{late:?}");
    }
}

/// A [`WebhookStore`] that counts every call made to it.
struct CountingStore {
    inner: EmbeddedWebhookStore,
    calls: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) -> &EmbeddedWebhookStore {
        self.calls.fetch_add(1, Ordering::SeqCst);
        &self.inner
    }
}

#[async_trait]
impl WebhookStore for CountingStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        self.count().put_endpoint(endpoint).await
    }
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.count().endpoints().await
    }
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.count().endpoint(id).await
    }
    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        self.count().delete_endpoint(id).await
    }
    async fn put_subscription(&self, uid: &str, sub: &Subscription) -> Result<(), StoreError> {
        self.count().put_subscription(uid, sub).await
    }
    async fn subscriptions(&self, uid: &str) -> Result<Vec<Subscription>, StoreError> {
        self.count().subscriptions(uid).await
    }
    async fn push_ever_used(&self) -> Result<bool, StoreError> {
        self.count().push_ever_used().await
    }
    async fn delete_subscription(&self, uid: &str, endpoint: &str) -> Result<bool, StoreError> {
        self.count().delete_subscription(uid, endpoint).await
    }
    async fn schedule(&self, jobs: &[(Job, i64)]) -> Result<(), StoreError> {
        self.count().schedule(jobs).await
    }
    async fn claim(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Job>, StoreError> {
        self.count().claim(now, lease_ms, max).await
    }
    async fn reschedule(&self, job: &Job, due: i64) -> Result<(), StoreError> {
        self.count().reschedule(job, due).await
    }
    async fn finish(&self, id: &str) -> Result<(), StoreError> {
        self.count().finish(id).await
    }
    async fn queued(&self) -> Result<u64, StoreError> {
        self.count().queued().await
    }
}

/// A service over `store` and embedded back-ends in `db` (its worker not running).
fn service_over(store: Arc<dyn WebhookStore>, db: EmbeddedDb) -> WebhookService {
    use crate::accounts::hashing::{HashLimits, HashPool};
    let metrics = Arc::new(Metrics::default());
    let (router, _requests) = crate::bus::Router::new(metrics.clone());
    let bus = Arc::new(crate::bus::MemoryBus::new(router));
    let limits = crate::inbox::InboxLimits {
        max_len: 100,
        max_age_secs: 3_600,
        dedupe_window_secs: 60,
    };
    let hashing = HashLimits {
        workers: 1,
        queue: 1,
        max_wait: Duration::from_secs(1),
    };
    WebhookService::new(WebhookDeps {
        store,
        presence: Arc::new(crate::presence::MemoryPresenceStore::default()),
        inbox: Arc::new(crate::inbox::EmbeddedInbox::new(db.clone(), bus, limits)),
        accounts: AccountService::new(
            Arc::new(crate::accounts::EmbeddedAccountStore::new(db)),
            crate::accounts::token::TokenSigner::new(b"webhook-tests".to_vec()),
            3_600,
            Arc::new(HashPool::new(hashing, metrics.clone())),
        ),
        metrics,
        policy: DeliveryPolicy {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            retry_window: Duration::from_secs(60),
            per_endpoint: 1,
            timeout: Duration::from_secs(1),
            offline_after: Duration::from_secs(1),
        },
        targets: TargetPolicy {
            allow_private: true,
        },
        vapid: VapidKey::generate("mailto:webhook-tests@localhost").0,
    })
    .expect("service")
}

/// A service over a [`CountingStore`] on a fresh embedded store (kept while the directory
/// lives).
fn counting_service() -> (Arc<CountingStore>, WebhookService, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("db");
    let store = Arc::new(CountingStore {
        inner: EmbeddedWebhookStore::new(db.clone()),
        calls: Default::default(),
    });
    let hooks = service_over(store.clone(), db);
    (store, hooks, dir)
}

#[tokio::test]
async fn a_presence_change_with_no_endpoint_for_it_spawns_nothing_and_reads_no_store() {
    use crate::presence::PresenceObserver;
    let (store, hooks, _dir) = counting_service();
    // An endpoint for another type only: presence still has none.
    store
        .put_endpoint(&Endpoint {
            id: "wh_groups".into(),
            url: "http://127.0.0.1:9/groups".into(),
            events: vec![EventKind::GroupCreated],
            secret: "s".into(),
            created_at: 0,
        })
        .await
        .expect("put");
    hooks.refresh_endpoint_kinds().await.expect("registry read");
    assert!(!hooks.has_endpoints_for(EventKind::Presence));
    assert!(hooks.has_endpoints_for(EventKind::GroupCreated));

    let ann = UserId::parse("ann").expect("uid");
    let runtime = tokio::runtime::Handle::current().metrics();
    let (tasks, calls) = (runtime.num_alive_tasks(), store.calls());
    for online in [true, false, true, false] {
        hooks.changed(&ann, online);
    }
    // A current-thread runtime: a task spawned above is alive until this test yields.
    assert_eq!(runtime.num_alive_tasks(), tasks, "no task spawned");
    let presence = WebhookEvent::Presence(PresenceChange {
        uid: "ann".into(),
        state: "online".into(),
        changed_at: 1,
    });
    assert_eq!(hooks.emit(presence).await.expect("emit"), 0);
    assert_eq!(store.calls(), calls, "no store call");

    // The control: once the registry has a presence endpoint (put there by another node, so
    // learnt by the refresh), the same change is queued.
    store
        .put_endpoint(&Endpoint {
            id: "wh_presence".into(),
            url: "http://127.0.0.1:9/presence".into(),
            events: vec![EventKind::Presence],
            secret: "s".into(),
            created_at: 0,
        })
        .await
        .expect("put");
    assert!(
        !hooks.has_endpoints_for(EventKind::Presence),
        "not yet read"
    );
    hooks.refresh_endpoint_kinds().await.expect("registry read");
    assert!(hooks.has_endpoints_for(EventKind::Presence));
    hooks.changed(&ann, true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.inner.queued().await.expect("queued") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the change queued");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_stored_message_nobody_would_be_told_of_spawns_nothing_and_reads_no_store() {
    let (store, hooks, _dir) = counting_service();
    hooks.refresh_endpoint_kinds().await.expect("registry read");
    let message = WireEvent::new("message", "ann", "bob", "m1", "hi".into());
    let runtime = tokio::runtime::Handle::current().metrics();
    let (tasks, calls) = (runtime.num_alive_tasks(), store.calls());
    for seq in 1..=5 {
        hooks.message_stored(&UserId::parse("bob").expect("uid"), seq, &message);
    }
    // A current-thread runtime: a task spawned above is alive until this test yields.
    assert_eq!(
        runtime.num_alive_tasks(),
        tasks,
        "no endpoint takes message.offline and nobody uses push: no task"
    );
    assert_eq!(store.calls(), calls, "no store call");

    // The control: once someone has a push subscription (stored by another node, so learnt
    // by the refresh), a stored message for an offline recipient is planned: a task.
    store
        .put_subscription(
            "bob",
            &Subscription {
                endpoint: "https://push.example/bob".into(),
                p256dh: String::new(),
                auth: String::new(),
                created_at: 0,
            },
        )
        .await
        .expect("subscription");
    hooks.refresh_endpoint_kinds().await.expect("registry read");
    hooks.message_stored(&UserId::parse("bob").expect("uid"), 6, &message);
    assert_eq!(
        runtime.num_alive_tasks(),
        tasks + 1,
        "the offline check planned"
    );
}
