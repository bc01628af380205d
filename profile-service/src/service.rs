//! What the routes do, without HTTP: reads through the cache, writes to the store then
//! invalidate then publish.

use std::{collections::HashMap, sync::Arc, time::Instant};

use fred::{clients::Pool, interfaces::PubsubInterface};
use futures_util::future::join_all;
use webchat_core::ids::UserId;

use crate::{
    cache::ProfileCache,
    metrics::Metrics,
    profile::{Change, Profile, Versioned},
    redis::{unavailable, PROFILES_CHANNEL},
    store::{Page, ProfileStore, StoreError},
};

/// Profiles: the store, the optional cache in front and the optional update channel.
#[derive(Clone)]
pub struct ProfileService {
    store: Arc<dyn ProfileStore>,
    cache: Option<Arc<ProfileCache>>,
    publisher: Option<Pool>,
    metrics: Arc<Metrics>,
}

impl ProfileService {
    /// Wires the parts; `cache` and `publisher` are set in Redis mode.
    pub fn new(
        store: Arc<dyn ProfileStore>,
        cache: Option<Arc<ProfileCache>>,
        publisher: Option<Pool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            cache,
            publisher,
            metrics,
        }
    }

    /// The store, for health checks.
    pub fn store(&self) -> &Arc<dyn ProfileStore> {
        &self.store
    }

    /// One profile: cache hit, or store read and cache fill.
    pub async fn get(&self, uid: &UserId) -> Result<Option<Profile>, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(self.store.get(uid).await?.map(|v| v.profile));
        };
        if let Some(hit) = self.cache_get(cache, uid.as_str()).await {
            self.metrics.cache_hits.inc();
            return Ok(Some(hit));
        }
        self.metrics.cache_misses.inc();
        let started = Instant::now();
        let record = self.store.get(uid).await?;
        if let Some(record) = &record {
            self.cache_fill(cache, record, started).await;
        }
        Ok(record.map(|v| v.profile))
    }

    /// The profiles of `uids` that exist, in the order asked.
    pub async fn get_many(&self, uids: &[UserId]) -> Result<Vec<Profile>, StoreError> {
        let mut found: HashMap<String, Profile> = HashMap::with_capacity(uids.len());
        let mut missed: Vec<UserId> = uids.to_vec();
        if let Some(cache) = &self.cache {
            let hits = join_all(uids.iter().map(|u| self.cache_get(cache, u.as_str()))).await;
            missed.clear();
            for (uid, hit) in uids.iter().zip(hits) {
                match hit {
                    Some(p) => {
                        self.metrics.cache_hits.inc();
                        found.insert(p.uid.clone(), p);
                    }
                    None => {
                        self.metrics.cache_misses.inc();
                        missed.push(uid.clone());
                    }
                }
            }
        }
        if !missed.is_empty() {
            let started = Instant::now();
            let records = self.store.get_many(&missed).await?;
            if let Some(cache) = &self.cache {
                join_all(records.iter().map(|r| self.cache_fill(cache, r, started))).await;
            }
            for record in records {
                found.insert(record.profile.uid.clone(), record.profile);
            }
        }
        Ok(uids
            .iter()
            .filter_map(|u| found.remove(u.as_str()))
            .collect())
    }

    /// Applies `change`, then makes sure no reader can see the old record from the cache,
    /// then tells the chat server nodes. An update whose cache invalidation failed is
    /// reported as `unavailable` (stored, but possibly not visible everywhere until the TTL);
    /// retrying it is safe.
    pub async fn update(&self, uid: &UserId, change: &Change) -> Result<Profile, StoreError> {
        let record = self.store.put(uid, change, now_ms()).await?;
        if let Some(cache) = &self.cache {
            cache.invalidate(&record).await?;
        }
        self.metrics.updates.inc();
        self.publish(&record).await;
        tracing::info!(uid = %uid, version = record.version, "profile updated");
        Ok(record.profile)
    }

    /// One page of every profile (the legacy full listing).
    pub async fn scan_page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.store.scan_page(cursor, limit).await
    }

    /// A failing cache read is a miss: reads keep working from the store while Redis is away.
    async fn cache_get(&self, cache: &ProfileCache, uid: &str) -> Option<Profile> {
        match cache.get(uid).await {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!(error = %e, "profile cache read failed; reading the store");
                None
            }
        }
    }

    async fn cache_fill(&self, cache: &ProfileCache, record: &Versioned, started: Instant) {
        if let Err(e) = cache.fill(record, started).await {
            tracing::warn!(error = %e, "profile cache fill failed");
        }
    }

    /// Best effort, like all pub/sub: the update is stored and readable either way; a node
    /// that misses the event shows the new profile on its clients' next read.
    async fn publish(&self, record: &Versioned) {
        let Some(pool) = &self.publisher else {
            return;
        };
        let json = match serde_json::to_string(&record.profile) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(error = %e, "profile not serialisable");
                return;
            }
        };
        let sent: Result<i64, _> = pool.next().publish(PROFILES_CHANNEL, json).await;
        if let Err(e) = sent.map_err(unavailable) {
            self.metrics.publish_failures.inc();
            tracing::warn!(error = %e, "publishing the profile update failed");
        }
    }
}

/// Now, unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
