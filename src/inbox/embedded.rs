//! Inboxes in the embedded store, published on the in-process bus after each commit.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};

use super::{AppendOutcome, DedupeKey, Echo, InboxLimits, InboxPage, InboxStore, SwapOutcome};
use crate::{
    bus::MemoryBus,
    domain::{now_millis, Seq, UserId, WireEvent},
    storage::{
        embedded::{
            internal, EmbeddedDb, DEDUPE, DEDUPE_SEQ, INBOX, SEND_CLAIMS, SEQS, SHARED_BODIES,
        },
        StoreError,
    },
};

/// [`InboxStore`] over the embedded database.
pub struct EmbeddedInbox {
    db: EmbeddedDb,
    bus: Arc<MemoryBus>,
    limits: InboxLimits,
}

impl EmbeddedInbox {
    /// Inboxes in `db`, publishing on `bus`.
    pub fn new(db: EmbeddedDb, bus: Arc<MemoryBus>, limits: InboxLimits) -> Self {
        Self { db, bus, limits }
    }
}

impl EmbeddedInbox {
    /// Drops idempotency keys, send claims and shared bodies that have expired (Redis
    /// expires them by itself).
    pub async fn sweep_expired_keys(&self) -> Result<(), StoreError> {
        self.db
            .write(
                |txn| {
                    let mut table = txn.open_table(DEDUPE).map_err(internal)?;
                    let now = now_millis();
                    let mut expired = Vec::new();
                    table
                        .retain(|key, (_, expires_at)| {
                            let keep = expires_at > now;
                            if !keep {
                                expired.push(key.to_owned());
                            }
                            keep
                        })
                        .map_err(internal)?;
                    let mut seqs = txn.open_table(DEDUPE_SEQ).map_err(internal)?;
                    for key in &expired {
                        seqs.remove(key.as_str()).map_err(internal)?;
                    }
                    for table in [SEND_CLAIMS, SHARED_BODIES] {
                        txn.open_table(table)
                            .map_err(internal)?
                            .retain(|_, (_, expires_at)| expires_at > now)
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    /// The text held under `key` in `table` (send claims, shared bodies: text with an
    /// expiry in Unix ms), unless it has expired.
    async fn read_unexpired(
        &self,
        table: TableDefinition<'static, &'static str, (&'static str, i64)>,
        key: String,
    ) -> Result<Option<String>, StoreError> {
        self.db
            .read(move |txn| {
                let held = txn
                    .open_table(table)
                    .map_err(internal)?
                    .get(key.as_str())
                    .map_err(internal)?;
                Ok(held.and_then(|h| {
                    let (text, expires_at) = h.value();
                    (expires_at > now_millis()).then(|| text.to_owned())
                }))
            })
            .await
    }
}

/// `secs` in milliseconds, for an expiry time: bounded so that adding it to now cannot
/// overflow.
fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl InboxStore for EmbeddedInbox {
    async fn put_shared_body(&self, key: &str, body: &str) -> Result<(), StoreError> {
        let (key, body) = (key.to_owned(), body.to_owned());
        // As long as an inbox keeps events, and an hour for clocks that disagree.
        let keep_ms = millis(self.limits.max_age_secs.saturating_add(3600));
        self.db
            .write(
                move |txn| {
                    let mut bodies = txn.open_table(SHARED_BODIES).map_err(internal)?;
                    let expires_at = now_millis().saturating_add(keep_ms);
                    bodies
                        .insert(key.as_str(), (body.as_str(), expires_at))
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn read_shared_body(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read_unexpired(SHARED_BODIES, key.to_owned()).await
    }

    async fn read_send_claim(&self, key: &DedupeKey) -> Result<Option<String>, StoreError> {
        self.read_unexpired(SEND_CLAIMS, key.text()).await
    }

    async fn swap_send_claim(
        &self,
        key: &DedupeKey,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<SwapOutcome, StoreError> {
        let key = key.text();
        let expected = expected.map(str::to_owned);
        let new = new.map(str::to_owned);
        let window_ms = millis(self.limits.dedupe_window_secs);
        self.db
            .write(
                move |txn| {
                    let mut claims = txn.open_table(SEND_CLAIMS).map_err(internal)?;
                    let now = now_millis();
                    let held = claims.get(key.as_str()).map_err(internal)?.and_then(|h| {
                        let (state, expires_at) = h.value();
                        (expires_at > now).then(|| (state.to_owned(), expires_at))
                    });
                    if held.as_ref().map(|(state, _)| state) != expected.as_ref() {
                        return Ok(SwapOutcome::Holds(held.map(|(state, _)| state)));
                    }
                    let Some(new) = new else {
                        claims.remove(key.as_str()).map_err(internal)?;
                        return Ok(SwapOutcome::Swapped);
                    };
                    // An update keeps the claim's expiry; a new claim lasts the window.
                    let expires_at = held.map_or(now.saturating_add(window_ms), |(_, e)| e);
                    claims
                        .insert(key.as_str(), (new.as_str(), expires_at))
                        .map_err(internal)?;
                    Ok(SwapOutcome::Swapped)
                },
                |_| {},
            )
            .await
    }

    async fn append(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Result<AppendOutcome, StoreError> {
        let to = to.to_string();
        let json = serde_json::to_vec(event).map_err(internal)?;
        let dedupe_key = dedupe.map(|d| format!("{to}\u{0}{}", d.text()));
        let remember_seq = dedupe.is_some_and(|d| d.group.is_none());
        let limits = self.limits;
        let sent_at = event.sent_at;
        let published = Arc::new(event.clone());
        let bus = self.bus.clone();
        let to_for_publish = to.clone();
        let echo = echo.cloned();
        self.db
            .write(
                move |txn| {
                    if let Some(key) = &dedupe_key {
                        let mut table = txn.open_table(DEDUPE).map_err(internal)?;
                        let now = now_millis();
                        if let Some(seen) = table.get(key.as_str()).map_err(internal)? {
                            let (first_sent_at, expires_at) = seen.value();
                            if expires_at > now {
                                let seqs = txn.open_table(DEDUPE_SEQ).map_err(internal)?;
                                let seq =
                                    seqs.get(key.as_str()).map_err(internal)?.map(|s| s.value());
                                return Ok(AppendOutcome::Duplicate {
                                    sent_at: first_sent_at,
                                    seq,
                                });
                            }
                        }
                        let window_ms = millis(limits.dedupe_window_secs);
                        table
                            .insert(key.as_str(), (sent_at, now.saturating_add(window_ms)))
                            .map_err(internal)?;
                    }
                    let mut seqs = txn.open_table(SEQS).map_err(internal)?;
                    let seq = seqs
                        .get(to.as_str())
                        .map_err(internal)?
                        .map_or(0, |v| v.value())
                        + 1;
                    seqs.insert(to.as_str(), seq).map_err(internal)?;
                    if let (Some(key), true) = (&dedupe_key, remember_seq) {
                        // A re-send learns which Seq the first send got (for the call log;
                        // 1:1 only, group messages are logged without a recipient's Seq).
                        let mut first_seqs = txn.open_table(DEDUPE_SEQ).map_err(internal)?;
                        first_seqs.insert(key.as_str(), seq).map_err(internal)?;
                    }
                    let mut inbox = txn.open_table(INBOX).map_err(internal)?;
                    inbox
                        .insert((to.as_str(), seq), json.as_slice())
                        .map_err(internal)?;
                    // Seqs are consecutive, so this keeps at most max_len events.
                    if seq > limits.max_len {
                        let oldest_kept = seq - limits.max_len + 1;
                        inbox
                            .retain_in((to.as_str(), 0)..(to.as_str(), oldest_kept), |_, _| false)
                            .map_err(internal)?;
                    }
                    Ok(AppendOutcome::Stored { seq })
                },
                move |outcome| {
                    if let AppendOutcome::Stored { seq } = outcome {
                        bus.publish_stored(&to_for_publish, *seq, published.clone());
                        // One node: with no other socket here, nobody would get the copy.
                        if let Some(echo) = echo.filter(|e| e.others_here) {
                            bus.publish_echo(echo.user.as_str(), &echo.skip_socket, published);
                        }
                    }
                },
            )
            .await
    }

    async fn confirm(&self, user: &str, upto: Seq) -> Result<(), StoreError> {
        let user = user.to_owned();
        self.db
            .write(
                move |txn| {
                    let mut inbox = txn.open_table(INBOX).map_err(internal)?;
                    inbox
                        .retain_in((user.as_str(), 0)..=(user.as_str(), upto), |_, _| false)
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn read_after(
        &self,
        user: &str,
        after: Seq,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let user = user.to_owned();
        self.db
            .read(move |txn| {
                // One read transaction: the head and the events are one snapshot.
                let head = txn
                    .open_table(SEQS)
                    .map_err(internal)?
                    .get(user.as_str())
                    .map_err(internal)?
                    .map_or(0, |v| v.value());
                let inbox = txn.open_table(INBOX).map_err(internal)?;
                let mut events = Vec::new();
                let range = inbox
                    .range((user.as_str(), after.saturating_add(1))..=(user.as_str(), u64::MAX))
                    .map_err(internal)?;
                for entry in range {
                    let (key, value) = entry.map_err(internal)?;
                    let event: WireEvent =
                        serde_json::from_slice(value.value()).map_err(internal)?;
                    events.push((key.value().1, event));
                    if events.len() >= limit {
                        break;
                    }
                }
                let full = events.len() >= limit;
                Ok(InboxPage { events, head, full })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus::Router, domain::MsgId, telemetry::Metrics};
    use redb::ReadableTableMetadata;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).expect("uid")
    }

    fn inbox(dir: &std::path::Path, max_len: u64, dedupe_window_secs: u64) -> EmbeddedInbox {
        let db = EmbeddedDb::open(dir).expect("db");
        let (router, _unserved) = Router::new(Arc::new(Metrics::default()));
        let limits = InboxLimits {
            max_len,
            max_age_secs: 3600,
            dedupe_window_secs,
        };
        EmbeddedInbox::new(db, Arc::new(MemoryBus::new(router)), limits)
    }

    fn event(id: &str) -> WireEvent {
        WireEvent::new("message", "alice", "bob", id, "hi".into())
    }

    fn key(id: &str) -> DedupeKey {
        DedupeKey {
            sender: uid("alice"),
            kind: "message",
            msg_id: MsgId::parse(id).expect("id"),
            group: None,
        }
    }

    #[tokio::test]
    async fn seqs_increase_confirm_drops_and_max_len_bounds_the_inbox() {
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 3, 60);
        for i in 1..=5 {
            let out = inbox
                .append(
                    &uid("bob"),
                    &event(&format!("m{i}")),
                    Some(&key(&format!("m{i}"))),
                    None,
                )
                .await
                .expect("append");
            assert_eq!(out, AppendOutcome::Stored { seq: i });
        }
        let kept: Vec<Seq> = inbox
            .read_after("bob", 0, 10)
            .await
            .expect("read")
            .events
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(kept, vec![3, 4, 5], "only the newest max_len are kept");
        inbox.confirm("bob", 4).await.expect("confirm");
        let kept: Vec<Seq> = inbox
            .read_after("bob", 0, 10)
            .await
            .expect("read")
            .events
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(kept, vec![5]);
        let dup = inbox
            .append(&uid("bob"), &event("m5"), Some(&key("m5")), None)
            .await
            .expect("append");
        assert!(matches!(dup, AppendOutcome::Duplicate { .. }));
        assert!(inbox
            .read_after("carol", 0, 10)
            .await
            .expect("read")
            .events
            .is_empty());
    }

    #[tokio::test]
    async fn the_sweep_drops_idempotency_keys_past_their_window() {
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 0);
        inbox
            .append(&uid("bob"), &event("m1"), Some(&key("m1")), None)
            .await
            .expect("append");
        let count = |inbox: &EmbeddedInbox| {
            let db = inbox.db.clone();
            async move {
                db.read(|txn| {
                    txn.open_table(DEDUPE)
                        .map_err(internal)?
                        .len()
                        .map_err(internal)
                })
                .await
                .expect("count")
            }
        };
        assert_eq!(count(&inbox).await, 1);
        inbox.sweep_expired_keys().await.expect("sweep");
        assert_eq!(count(&inbox).await, 0);
    }

    #[tokio::test]
    async fn a_shared_body_is_read_until_it_expires_and_then_swept() {
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 60);
        inbox.put_shared_body("live", "[\"a\"]").await.expect("put");
        // One whose time is up, as the clock would leave it after the age bound.
        inbox
            .db
            .write(
                |txn| {
                    let mut bodies = txn.open_table(SHARED_BODIES).map_err(internal)?;
                    bodies
                        .insert("old", ("[\"b\"]", now_millis() - 1))
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
            .expect("write");
        assert_eq!(
            inbox
                .read_shared_body("live")
                .await
                .expect("read")
                .as_deref(),
            Some("[\"a\"]")
        );
        assert_eq!(inbox.read_shared_body("old").await.expect("read"), None);
        inbox.sweep_expired_keys().await.expect("sweep");
        let left = inbox
            .db
            .read(|txn| {
                txn.open_table(SHARED_BODIES)
                    .map_err(internal)?
                    .len()
                    .map_err(internal)
            })
            .await
            .expect("count");
        assert_eq!(left, 1, "only the expired body is swept");
    }

    fn group_key(id: &str) -> DedupeKey {
        DedupeKey {
            group: Some(crate::domain::GroupId::parse("group_1").expect("gid")),
            ..key(id)
        }
    }

    #[tokio::test]
    async fn a_send_claim_changes_only_from_what_it_holds() {
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 3600);
        let k = group_key("m1");
        assert_eq!(inbox.read_send_claim(&k).await.expect("read"), None);
        assert_eq!(
            inbox
                .swap_send_claim(&k, None, Some("a"))
                .await
                .expect("swap"),
            SwapOutcome::Swapped
        );
        // A second first claim loses, and learns what is there.
        assert_eq!(
            inbox
                .swap_send_claim(&k, None, Some("b"))
                .await
                .expect("swap"),
            SwapOutcome::Holds(Some("a".into()))
        );
        assert_eq!(
            inbox
                .swap_send_claim(&k, Some("x"), Some("b"))
                .await
                .expect("swap"),
            SwapOutcome::Holds(Some("a".into()))
        );
        assert_eq!(
            inbox
                .swap_send_claim(&k, Some("a"), Some("b"))
                .await
                .expect("swap"),
            SwapOutcome::Swapped
        );
        assert_eq!(
            inbox.read_send_claim(&k).await.expect("read"),
            Some("b".into())
        );
        // Another MsgID, or the same MsgID in 1:1, is another claim.
        assert_eq!(
            inbox.read_send_claim(&group_key("m2")).await.expect("read"),
            None
        );
        assert_eq!(inbox.read_send_claim(&key("m1")).await.expect("read"), None);
    }

    #[tokio::test]
    async fn a_send_claim_lasts_the_idempotency_window() {
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 0);
        let k = group_key("m1");
        inbox
            .swap_send_claim(&k, None, Some("a"))
            .await
            .expect("swap");
        // A zero window: gone at once, so a new first claim wins, and the sweep drops it.
        assert_eq!(inbox.read_send_claim(&k).await.expect("read"), None);
        assert_eq!(
            inbox
                .swap_send_claim(&k, None, Some("b"))
                .await
                .expect("swap"),
            SwapOutcome::Swapped
        );
        inbox.sweep_expired_keys().await.expect("sweep");
        let left = inbox
            .db
            .read(|txn| {
                txn.open_table(SEND_CLAIMS)
                    .map_err(internal)?
                    .len()
                    .map_err(internal)
            })
            .await
            .expect("count");
        assert_eq!(left, 0);
    }

    /// An inbox that tells when a waiting re-send looked at a claim again.
    struct WatchedClaims {
        inner: EmbeddedInbox,
        looked: tokio::sync::Notify,
    }

    #[async_trait]
    impl InboxStore for WatchedClaims {
        async fn append(
            &self,
            to: &UserId,
            event: &WireEvent,
            dedupe: Option<&DedupeKey>,
            echo: Option<&Echo>,
        ) -> Result<AppendOutcome, StoreError> {
            self.inner.append(to, event, dedupe, echo).await
        }

        async fn put_shared_body(&self, key: &str, body: &str) -> Result<(), StoreError> {
            self.inner.put_shared_body(key, body).await
        }

        async fn read_shared_body(&self, key: &str) -> Result<Option<String>, StoreError> {
            self.inner.read_shared_body(key).await
        }

        async fn read_send_claim(&self, key: &DedupeKey) -> Result<Option<String>, StoreError> {
            let held = self.inner.read_send_claim(key).await;
            self.looked.notify_one();
            held
        }

        async fn swap_send_claim(
            &self,
            key: &DedupeKey,
            expected: Option<&str>,
            new: Option<&str>,
        ) -> Result<SwapOutcome, StoreError> {
            self.inner.swap_send_claim(key, expected, new).await
        }

        async fn confirm(&self, user: &str, upto: Seq) -> Result<(), StoreError> {
            self.inner.confirm(user, upto).await
        }

        async fn read_after(
            &self,
            user: &str,
            after: Seq,
            limit: usize,
        ) -> Result<InboxPage, StoreError> {
            self.inner.read_after(user, after, limit).await
        }
    }

    #[tokio::test]
    async fn a_re_send_waits_for_the_send_under_way_then_reports_it_delivered() {
        use super::super::claims::{claim_send, finish_send, Claim, SendEnd};
        let dir = tempfile::tempdir().expect("dir");
        let inbox = std::sync::Arc::new(WatchedClaims {
            inner: inbox(dir.path(), 10, 3600),
            looked: tokio::sync::Notify::new(),
        });
        let k = group_key("m1");
        let first = claim_send(inbox.as_ref(), &k, 1_000).await.expect("claim");
        let Claim::FanOut {
            recipients: None,
            echo_owed: true,
            fresh: true,
            claimed,
        } = first
        else {
            panic!("a first send fans out to everyone, got {first:?}");
        };
        assert_eq!(claimed.sent_at(), 1_000);
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            let k = k.clone();
            async move { claim_send(inbox.as_ref(), &k, 2_000).await }
        });
        // The re-send found the first send under way, and looked again: still waiting.
        inbox.looked.notified().await;
        assert!(!waiting.is_finished());
        // Once the first send ended, the re-send is told it was delivered, first SentAt.
        finish_send(inbox.as_ref(), &k, &claimed, SendEnd::Delivered)
            .await
            .expect("finish");
        let again = waiting.await.expect("join").expect("claim");
        assert_eq!(again, Claim::Delivered { sent_at: 1_000 });
    }

    #[tokio::test]
    async fn a_first_send_that_stored_nothing_leaves_no_claim() {
        use super::super::claims::{claim_send, finish_send, Claim, SendEnd};
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 3600);
        let k = group_key("m1");
        let Claim::FanOut { claimed, .. } = claim_send(&inbox, &k, 1_000).await.expect("claim")
        else {
            panic!("a first send fans out");
        };
        finish_send(&inbox, &k, &claimed, SendEnd::NothingStored)
            .await
            .expect("finish");
        assert_eq!(inbox.read_send_claim(&k).await.expect("read"), None);
        // The re-send is a first send again: to everyone, with its live copy, new SentAt.
        let again = claim_send(&inbox, &k, 2_000).await.expect("claim");
        assert!(
            matches!(
                &again,
                Claim::FanOut {
                    recipients: None,
                    echo_owed: true,
                    fresh: true,
                    ..
                }
            ),
            "{again:?}"
        );
        assert_eq!(again.sent_at(), 2_000);
    }

    #[tokio::test]
    async fn a_send_that_missed_some_is_completed_for_them_only() {
        use super::super::claims::{claim_send, finish_send, Claim, SendEnd};
        let dir = tempfile::tempdir().expect("dir");
        let inbox = inbox(dir.path(), 10, 3600);
        let k = group_key("m1");
        let Claim::FanOut { claimed, .. } = claim_send(&inbox, &k, 1_000).await.expect("claim")
        else {
            panic!("a first send fans out");
        };
        finish_send(
            &inbox,
            &k,
            &claimed,
            SendEnd::Incomplete {
                missing: vec!["carol".into()],
                echoed: false,
            },
        )
        .await
        .expect("finish");
        let Claim::FanOut {
            recipients,
            echo_owed,
            fresh: false,
            claimed,
        } = claim_send(&inbox, &k, 5_000).await.expect("claim")
        else {
            panic!("an incomplete send is completed");
        };
        assert_eq!(recipients, Some(vec!["carol".to_owned()]));
        assert!(
            echo_owed,
            "the live copy that was lost goes with the completion"
        );
        assert_eq!(claimed.sent_at(), 1_000, "with the first SentAt");
        finish_send(&inbox, &k, &claimed, SendEnd::Delivered)
            .await
            .expect("finish");
        assert_eq!(
            claim_send(&inbox, &k, 9_000).await.expect("claim"),
            Claim::Delivered { sent_at: 1_000 }
        );
    }
}
