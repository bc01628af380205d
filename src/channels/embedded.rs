//! Channels in the embedded store: settings in the redb file (admin-made channels survive a
//! restart), histories and presence in memory.
//!
//! An embedded node is the only node, so it is the only reader and writer. Its histories
//! live in memory: a restart loses them, and so each channel gets a fresh epoch at start-up,
//! which is exactly what tells clients that their offsets no longer mean anything (§9).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    fresh_epoch, ChannelName, ChannelSettings, ChannelStore, FeedMessage, HistoryBounds,
    NewPublication, PresenceChange, Publication, Published, Recent,
};
use crate::storage::{
    embedded::{internal, EmbeddedDb, ReadableTable, CHANNELS},
    StoreError,
};

/// One channel's history in memory.
struct Log {
    epoch: String,
    latest: u64,
    /// Oldest first.
    history: VecDeque<Arc<Publication>>,
}

impl Log {
    fn new() -> Self {
        Self {
            epoch: fresh_epoch(),
            latest: 0,
            history: VecDeque::new(),
        }
    }

    /// Drops what the bounds no longer keep.
    fn trim(&mut self, bounds: HistoryBounds, now_ms: i64) {
        let size = usize::try_from(bounds.size).unwrap_or(usize::MAX);
        while self.history.len() > size {
            self.history.pop_front();
        }
        let min_at = bounds.min_at(now_ms);
        while self.history.front().is_some_and(|p| p.at < min_at) {
            self.history.pop_front();
        }
    }
}

#[derive(Default)]
struct Memory {
    logs: HashMap<String, Log>,
    /// Idempotency key → (offset, expiry ms).
    dedupe: HashMap<String, (u64, i64)>,
    /// Channel → socket → uid.
    present: HashMap<String, BTreeMap<String, String>>,
}

/// [`ChannelStore`] over the embedded database and memory; publications go to `feed` in
/// offset order (under the lock that allocates the offset).
pub struct EmbeddedChannelStore {
    db: EmbeddedDb,
    memory: Mutex<Memory>,
    feed: mpsc::UnboundedSender<FeedMessage>,
}

impl EmbeddedChannelStore {
    /// A store over `db` whose publications and presence changes go to `feed`.
    pub fn new(db: EmbeddedDb, feed: mpsc::UnboundedSender<FeedMessage>) -> Self {
        Self {
            db,
            memory: Mutex::new(Memory::default()),
            feed,
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // Every change below is complete before anything can panic: the state stays whole.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ChannelStore for EmbeddedChannelStore {
    async fn settings(&self, name: &ChannelName) -> Result<Option<ChannelSettings>, StoreError> {
        let key = name.as_str().to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(CHANNELS).map_err(internal)?;
                let Some(json) = table.get(key.as_str()).map_err(internal)? else {
                    return Ok(None);
                };
                serde_json::from_slice(json.value())
                    .map(Some)
                    .map_err(internal)
            })
            .await
    }

    async fn put_settings(
        &self,
        name: &ChannelName,
        settings: &ChannelSettings,
    ) -> Result<(), StoreError> {
        let key = name.as_str().to_owned();
        let json = serde_json::to_vec(settings).map_err(internal)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CHANNELS).map_err(internal)?;
                    table
                        .insert(key.as_str(), json.as_slice())
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn delete(&self, name: &ChannelName) -> Result<bool, StoreError> {
        let key = name.as_str().to_owned();
        let existed = self
            .db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CHANNELS).map_err(internal)?;
                    let existed = table.remove(key.as_str()).map_err(internal)?.is_some();
                    Ok(existed)
                },
                |_| {},
            )
            .await?;
        self.memory().logs.remove(name.as_str());
        Ok(existed)
    }

    async fn list(&self) -> Result<Vec<(String, ChannelSettings)>, StoreError> {
        self.db
            .read(|txn| {
                let table = txn.open_table(CHANNELS).map_err(internal)?;
                let mut all = Vec::new();
                for entry in table.iter().map_err(internal)? {
                    let (name, json) = entry.map_err(internal)?;
                    let settings = serde_json::from_slice(json.value()).map_err(internal)?;
                    all.push((name.value().to_owned(), settings));
                }
                Ok(all)
            })
            .await
    }

    async fn publish(&self, new: NewPublication) -> Result<Published, StoreError> {
        let mut memory = self.memory();
        let Memory { logs, dedupe, .. } = &mut *memory;
        let log = logs
            .entry(new.channel.as_str().to_owned())
            .or_insert_with(Log::new);
        if let Some(key) = &new.dedupe {
            if let Some((offset, expiry)) = dedupe.get(key) {
                if *expiry > new.at {
                    return Ok(Published {
                        offset: *offset,
                        epoch: log.epoch.clone(),
                        duplicate: true,
                    });
                }
            }
        }
        log.latest += 1;
        let publication = Arc::new(Publication {
            channel: new.channel.as_str().to_owned(),
            offset: log.latest,
            epoch: log.epoch.clone(),
            data: new.data,
            from: new.from,
            at: new.at,
        });
        log.history.push_back(publication.clone());
        log.trim(new.bounds, new.at);
        if let Some(key) = new.dedupe {
            let window =
                i64::try_from(new.dedupe_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            dedupe.retain(|_, (_, expiry)| *expiry > new.at);
            dedupe.insert(key, (publication.offset, new.at.saturating_add(window)));
        }
        let published = Published {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
            duplicate: false,
        };
        // Under the lock: the feed sees publications in offset order.
        let _ = self.feed.send(FeedMessage::Publication(publication));
        Ok(published)
    }

    async fn recent(
        &self,
        name: &ChannelName,
        bounds: HistoryBounds,
        after: Option<u64>,
    ) -> Result<Recent, StoreError> {
        let mut memory = self.memory();
        let log = memory
            .logs
            .entry(name.as_str().to_owned())
            .or_insert_with(Log::new);
        log.trim(bounds, crate::domain::now_millis());
        let publications = match after {
            Some(after) => log
                .history
                .iter()
                .filter(|p| p.offset > after)
                .map(|p| Publication::clone(p))
                .collect(),
            None => {
                let size = usize::try_from(bounds.size).unwrap_or(usize::MAX);
                let skip = log.history.len().saturating_sub(size);
                log.history
                    .iter()
                    .skip(skip)
                    .map(|p| Publication::clone(p))
                    .collect()
            }
        };
        Ok(Recent {
            epoch: log.epoch.clone(),
            latest: log.latest,
            publications,
        })
    }

    async fn page(
        &self,
        name: &ChannelName,
        bounds: HistoryBounds,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Publication>, StoreError> {
        let mut memory = self.memory();
        let Some(log) = memory.logs.get_mut(name.as_str()) else {
            return Ok(Vec::new());
        };
        log.trim(bounds, crate::domain::now_millis());
        Ok(log
            .history
            .iter()
            .rev()
            .filter(|p| before.is_none_or(|b| p.offset < b))
            .take(limit)
            .map(|p| Publication::clone(p))
            .collect())
    }

    async fn announce(&self, change: &PresenceChange) -> Result<(), StoreError> {
        let _ = self.feed.send(FeedMessage::Presence(change.clone()));
        Ok(())
    }

    async fn set_present(
        &self,
        channel: &ChannelName,
        uid: &str,
        socket: &str,
        present: bool,
    ) -> Result<(), StoreError> {
        let mut memory = self.memory();
        let sockets = memory
            .present
            .entry(channel.as_str().to_owned())
            .or_default();
        if present {
            sockets.insert(socket.to_owned(), uid.to_owned());
        } else {
            sockets.remove(socket);
        }
        Ok(())
    }

    async fn present(&self, channel: &ChannelName) -> Result<Vec<String>, StoreError> {
        let mut uids: Vec<String> = self
            .memory()
            .present
            .get(channel.as_str())
            .map(|sockets| sockets.values().cloned().collect())
            .unwrap_or_default();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn subscribers(&self, channel: &ChannelName) -> Result<u64, StoreError> {
        Ok(self
            .memory()
            .present
            .get(channel.as_str())
            .map_or(0, |sockets| {
                u64::try_from(sockets.len()).unwrap_or(u64::MAX)
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{ChannelService, Since};

    fn store() -> (
        tempfile::TempDir,
        Arc<EmbeddedChannelStore>,
        mpsc::UnboundedReceiver<FeedMessage>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = EmbeddedDb::open(dir.path()).expect("db");
        let (tx, rx) = mpsc::unbounded_channel();
        (dir, Arc::new(EmbeddedChannelStore::new(db, tx)), rx)
    }

    #[tokio::test]
    async fn history_is_bounded_offsets_are_consecutive_and_recovery_is_exact() {
        let (_dir, store, mut feed) = store();
        let service = ChannelService::new(store.clone(), true, 100, 60);
        let general = ChannelName::parse("general").expect("name");
        let settings = ChannelSettings {
            history_size: 3,
            ..ChannelSettings::default()
        };
        service.put(&general, &settings).await.expect("put");
        let user =
            crate::channels::Publisher::User(crate::domain::UserId::parse("u").expect("uid"));
        for i in 1..=5u64 {
            let p = service
                .publish(&user, &general, format!("d{i}"), None)
                .await
                .expect("publish");
            assert_eq!(p.offset, i);
            match feed.recv().await {
                Some(FeedMessage::Publication(p)) => assert_eq!(p.offset, i),
                other => panic!("unexpected {other:?}"),
            }
        }
        let fresh = service
            .recover(&general, settings.clone(), None)
            .await
            .expect("recover");
        assert_eq!(fresh.latest, 5);
        assert!(!fresh.recovered);
        assert_eq!(
            fresh
                .publications
                .iter()
                .map(|p| p.offset)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let since = |offset| Since {
            offset,
            epoch: fresh.epoch.clone(),
        };
        let back = service
            .recover(&general, settings.clone(), Some(&since(3)))
            .await
            .expect("recover");
        assert!(back.recovered);
        assert_eq!(
            back.publications
                .iter()
                .map(|p| p.offset)
                .collect::<Vec<_>>(),
            [4, 5]
        );
        let too_old = service
            .recover(&general, settings.clone(), Some(&since(1)))
            .await
            .expect("recover");
        assert!(!too_old.recovered, "offset 2 is gone");
        assert_eq!(too_old.publications.len(), 3);
        let stale = Since {
            offset: 4,
            epoch: "other".into(),
        };
        let stale = service
            .recover(&general, settings.clone(), Some(&stale))
            .await
            .expect("recover");
        assert!(!stale.recovered);
        let future = service
            .recover(&general, settings, Some(&since(9)))
            .await
            .expect("recover");
        assert!(
            !future.recovered,
            "an offset beyond the newest is not trusted"
        );
    }

    #[tokio::test]
    async fn a_re_sent_msgid_is_published_once() {
        let (_dir, store, mut feed) = store();
        let service = ChannelService::new(store, true, 100, 60);
        let general = ChannelName::parse("general").expect("name");
        let msg = crate::domain::MsgId::parse("m1").expect("msg");
        let a = crate::channels::Publisher::User(crate::domain::UserId::parse("a").expect("uid"));
        let first = service
            .publish(&a, &general, "x".into(), Some(msg.clone()))
            .await
            .expect("one");
        let again = service
            .publish(&a, &general, "x".into(), Some(msg.clone()))
            .await
            .expect("two");
        assert_eq!(first.offset, again.offset);
        assert!(again.duplicate);
        let other = service
            .publish(
                &crate::channels::Publisher::Admin,
                &general,
                "x".into(),
                Some(msg),
            )
            .await
            .expect("three");
        assert_eq!(other.offset, 2, "another publisher's MsgID is its own");
        assert!(feed.recv().await.is_some());
        assert!(feed.recv().await.is_some());
        assert!(feed.try_recv().is_err(), "the re-send was not fed");
    }

    #[tokio::test]
    async fn bad_publishes_are_refused_with_the_contracts_codes() {
        let (_dir, store, _feed) = store();
        let service = ChannelService::new(store, true, 10, 60);
        let name = |n| ChannelName::parse(n).expect("name");
        let user =
            crate::channels::Publisher::User(crate::domain::UserId::parse("u").expect("uid"));
        let guest = crate::channels::Publisher::Guest(
            crate::domain::UserId::parse("guest-1").expect("uid"),
        );
        let code = |r: Result<Published, crate::domain::ChatError>| r.map_err(|e| e.code.as_str());
        assert_eq!(
            code(
                service
                    .publish(&user, &name("nope"), "x".into(), None)
                    .await
            ),
            Err("not_found")
        );
        assert_eq!(
            code(
                service
                    .publish(&user, &name("general"), "x".repeat(11), None)
                    .await
            ),
            Err("too_large")
        );
        assert_eq!(
            code(
                service
                    .publish(&guest, &name("general"), "x".into(), None)
                    .await
            ),
            Err("forbidden")
        );
        let feed = name("stock");
        let server = ChannelSettings {
            publish: super::super::PublishPolicy::Server,
            ..ChannelSettings::default()
        };
        service.put(&feed, &server).await.expect("put");
        assert_eq!(
            code(service.publish(&user, &feed, "x".into(), None).await),
            Err("forbidden")
        );
        assert!(service
            .publish(
                &crate::channels::Publisher::Service("shop".into()),
                &feed,
                "x".into(),
                None
            )
            .await
            .is_ok());
        assert_eq!(
            service
                .delete(&name("general"))
                .await
                .map_err(|e| e.code.as_str()),
            Err("forbidden")
        );
        service.delete(&feed).await.expect("delete");
        assert_eq!(
            service.settings(&feed).await.map_err(|e| e.code.as_str()),
            Err("not_found")
        );
        let off = ChannelService::new(service.store().clone(), false, 10, 60);
        assert_eq!(
            off.settings(&name("general"))
                .await
                .map_err(|e| e.code.as_str()),
            Err("not_found")
        );
    }
}
