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
