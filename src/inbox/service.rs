//! The receiving side of the inbox, as one service for a socket's delivery task: read what
//! is owed (replay), put shared bodies back, and confirm what the client acked.
//!
//! The delivery task (`gateway::delivery`) keeps only what belongs to one socket (what it
//! emitted, which acks are outstanding); every rule about stored events (the age bound,
//! which member list a lost shared body is rebuilt with) lives here, testable without a
//! socket.

use std::sync::Arc;

use super::{shared_body::SharedBodies, InboxLimits, InboxPage, InboxStore};
use crate::{
    domain::{now_millis, GroupId, Seq, UserId, WireEvent},
    groups::GroupStore,
    storage::StoreError,
    telemetry::Metrics,
};

/// Replay, shared bodies and confirmation of users' inboxes.
#[derive(Clone)]
pub struct InboxService {
    store: Arc<dyn InboxStore>,
    shared_bodies: Arc<SharedBodies>,
    groups: Arc<dyn GroupStore>,
    limits: InboxLimits,
}

/// One page of a replay, with the events past the age bound already left out.
#[derive(Debug, Default)]
pub struct ReplayPage {
    /// Events to emit, in Seq order.
    pub events: Vec<(Seq, WireEvent)>,
    /// Seqs of the page that are past the age bound: not emitted, but confirmable.
    pub expired: Vec<Seq>,
    /// As [`InboxPage::head`].
    pub head: Seq,
    /// As [`InboxPage::full`].
    pub full: bool,
}

impl InboxService {
    /// Reads and confirms `store`'s inboxes under `limits`; `groups` rebuilds lost member
    /// lists.
    pub fn new(
        store: Arc<dyn InboxStore>,
        groups: Arc<dyn GroupStore>,
        limits: InboxLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared_bodies: Arc::new(SharedBodies::new(store.clone(), metrics)),
            store,
            groups,
            limits,
        }
    }

    /// Up to `limit` events of `user` after `after`, in Seq order, those past the age bound
    /// set apart (they are trimmed lazily by the store, so a read may still return them).
    pub async fn replay_page(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> Result<ReplayPage, StoreError> {
        let InboxPage { events, head, full } =
            self.store.read_after(user.as_str(), after, limit).await?;
        Ok(self.split_expired(events, head, full, now_millis()))
    }

    fn split_expired(
        &self,
        page: Vec<(Seq, WireEvent)>,
        head: Seq,
        full: bool,
        now: i64,
    ) -> ReplayPage {
        let mut replay = ReplayPage {
            events: Vec::with_capacity(page.len()),
            expired: Vec::new(),
            head,
            full,
        };
        for (seq, event) in page {
            if self.limits.expired(event.sent_at, now) {
                replay.expired.push(seq);
            } else {
                replay.events.push((seq, event));
            }
        }
        replay
    }

    /// The body that `event`, stored for `reader`, names in `BodyRef` under `key` (see
    /// `inbox::shared_body`); an error only when the store could not be read (the event
    /// stays in the inbox, and the client's reconnect replays it).
    ///
    /// A body that is gone (kept an hour past the inbox age bound, so only lost with the
    /// store's data, or on a Redis Cluster shard that failed over before replicating it) is
    /// rebuilt where it can be: a `notify` or `restart` names the group's members, so it
    /// gets the current member list, or an empty one for a reader who is not a member now
    /// (left since, or the group is gone): that is what the `depart` after it in their
    /// inbox says, and they must not see who is in the group without them. Anything else
    /// gets an empty Body rather than holding back every later event.
    pub async fn shared_body(
        &self,
        reader: &UserId,
        key: &str,
        event: &WireEvent,
    ) -> Result<Arc<str>, StoreError> {
        if let Some(body) = self.shared_bodies.resolve(key).await? {
            return Ok(body);
        }
        if !matches!(event.evt_type.as_str(), "notify" | "restart") {
            return Ok(Arc::from(""));
        }
        let Ok(gid) = GroupId::parse(&event.from) else {
            return Ok(Arc::from("[]"));
        };
        let mut members = self
            .groups
            .members(&gid)
            .await?
            .filter(|m| m.iter().any(|member| member == reader.as_str()))
            .unwrap_or_default();
        members.sort();
        Ok(serde_json::to_string(&members)
            .unwrap_or_else(|_| "[]".to_owned())
            .into())
    }

    /// Confirms (drops) every event of `user` up to and including `upto`.
    pub async fn confirm(&self, user: &UserId, upto: Seq) -> Result<(), StoreError> {
        self.store.confirm(user.as_str(), upto).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bus::{MemoryBus, Router},
        groups::EmbeddedGroupStore,
        inbox::EmbeddedInbox,
        storage::embedded::EmbeddedDb,
    };

    fn limits() -> InboxLimits {
        InboxLimits {
            max_len: 100,
            max_age_secs: 60,
            dedupe_window_secs: 60,
        }
    }

    #[test]
    fn events_past_the_age_bound_are_set_apart_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let service = test_service(dir.path());
        let at = |seq: Seq, sent_at: i64| {
            let mut event = WireEvent::new("message", "a", "b", &format!("m{seq}"), "x".into());
            event.sent_at = sent_at;
            (seq, event)
        };
        let now = 1_000_000;
        let page = service.split_expired(
            vec![
                at(1, now - 61_000),
                at(2, now - 1_000),
                at(3, now - 70_000),
                at(4, now),
            ],
            9,
            true,
            now,
        );
        let kept: Vec<Seq> = page.events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(kept, vec![2, 4]);
        assert_eq!(page.expired, vec![1, 3]);
        assert_eq!((page.head, page.full), (9, true));
    }

    #[tokio::test]
    async fn a_lost_member_list_is_rebuilt_only_for_a_current_member() {
        let dir = tempfile::tempdir().expect("dir");
        let service = test_service(dir.path());
        let gid = GroupId::parse("group_lost").expect("gid");
        let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
        service
            .groups
            .create(&gid, &[bob.clone(), alice.clone()])
            .await
            .expect("create");
        let notify = WireEvent::new("notify", gid.as_str(), "x", "m1", String::new());
        let body = service
            .shared_body(&alice, "no-such-body", &notify)
            .await
            .expect("read");
        assert_eq!(&*body, r#"["alice","bob"]"#, "the current members, sorted");
        let body = service
            .shared_body(&carol, "no-such-body", &notify)
            .await
            .expect("read");
        assert_eq!(&*body, "[]", "a reader who is not a member learns nobody");
        let message = WireEvent::new("message", "bob", "alice", "m2", String::new());
        let body = service
            .shared_body(&alice, "no-such-body", &message)
            .await
            .expect("read");
        assert_eq!(&*body, "", "anything else gets an empty Body");
    }

    #[tokio::test]
    async fn a_stored_shared_body_is_served_as_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let service = test_service(dir.path());
        service
            .store
            .put_shared_body("k1", r#"["x","y"]"#)
            .await
            .expect("put");
        let notify = WireEvent::new("notify", "group_g", "x", "m1", String::new());
        let body = service
            .shared_body(&uid("x"), "k1", &notify)
            .await
            .expect("read");
        assert_eq!(&*body, r#"["x","y"]"#);
    }

    fn uid(name: &str) -> UserId {
        UserId::parse(name).expect("uid")
    }

    /// A service on a fresh embedded store (kept in `dir`).
    fn test_service(dir: &std::path::Path) -> InboxService {
        let db = EmbeddedDb::open(dir).expect("db");
        let metrics = Arc::new(Metrics::default());
        let (router, _unserved) = Router::new(metrics.clone());
        let bus = Arc::new(MemoryBus::new(router));
        let store: Arc<dyn InboxStore> = Arc::new(EmbeddedInbox::new(db.clone(), bus, limits()));
        let groups: Arc<dyn GroupStore> = Arc::new(EmbeddedGroupStore::new(db));
        InboxService::new(store, groups, limits(), metrics)
    }
}
