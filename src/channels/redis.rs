//! Channels in Redis (one Redis or Redis Cluster).
//!
//! Key layout (every key of one channel carries the hash tag `{ch:<name>}`, so on Redis
//! Cluster a channel's history, epoch, idempotency keys, presence and feed live on one shard
//! and one script touches them all):
//! - `wc:channels`               hash: name → settings JSON
//! - `wc:{ch:<name>}:meta`       hash: `epoch`, `offset` (the newest); never expires
//! - `wc:{ch:<name>}:hist`       stream, entry id `<offset>-0`, fields `p` (publication JSON),
//!   `t` (accepted at, ms); trimmed to the history size, expires with the history age
//! - `wc:{ch:<name>}:dd:<publisher>\n<MsgID>`  first offset of a MsgID, expires after the window
//! - `wc:{ch:<name>}:pres`       sorted set: `<uid>\n<node>\n<socket>` → last refresh (ms)
//! - `wc:{ch:<name>}:pub`        the channel's feed (a sharded channel on Redis Cluster)
//!
//! The epoch lives beside the history: when Redis loses the channel (flushed, or restarted
//! without persistence) the epoch goes with it and the next read or publish makes a new one,
//! which tells clients their offsets are void.

use async_trait::async_trait;
use fred::{
    clients::{Pool, SubscriberClient},
    interfaces::{
        ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
        SortedSetsInterface,
    },
    types::scripts::Script,
    util::group_by_hash_slot,
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    fresh_epoch, ChannelFeed, ChannelName, ChannelSettings, ChannelStore, FeedMessage,
    HistoryBounds, NewPublication, PresenceChange, Publication, Published, Recent,
};
use crate::storage::{
    embedded::internal,
    redis::{ssubscribe_per_slot, unavailable, RedisHandles},
    StoreError,
};

const PUBLISH_LUA: &str = include_str!("publish.lua");
const READ_LUA: &str = include_str!("read.lua");
/// Every channel's settings.
const SETTINGS: &str = "wc:channels";
/// A presence entry not refreshed for this long belongs to a node that died.
pub const PRESENCE_STALE_MS: i64 = 90_000;

fn key(name: &str, suffix: &str) -> String {
    format!("wc:{{ch:{name}}}:{suffix}")
}

/// The feed (pub/sub channel) of a channel.
pub fn feed_channel(name: &str) -> String {
    key(name, "pub")
}

/// The channel name of a feed made by [`feed_channel`].
pub fn feed_name(channel: &str) -> Option<&str> {
    channel.strip_prefix("wc:{ch:")?.strip_suffix("}:pub")
}

/// [`ChannelStore`] over Redis.
pub struct RedisChannelStore {
    pool: Pool,
    sharded: bool,
    node: String,
    publish: Script,
    read: Script,
}

impl RedisChannelStore {
    /// A store over the node's Redis; `node` names this node's presence entries.
    pub fn new(redis: &RedisHandles, node: String) -> Self {
        Self {
            pool: redis.pool.clone(),
            sharded: redis.cluster,
            node,
            publish: Script::from_lua(PUBLISH_LUA),
            read: Script::from_lua(READ_LUA),
        }
    }

    async fn read(
        &self,
        name: &ChannelName,
        mode: &str,
        offset: u64,
        count: u32,
    ) -> Result<(String, u64, Vec<(String, i64)>), StoreError> {
        let keys = vec![key(name.as_str(), "meta"), key(name.as_str(), "hist")];
        let args = vec![
            mode.to_owned(),
            offset.to_string(),
            count.to_string(),
            fresh_epoch(),
        ];
        let answer: Vec<String> = self
            .read
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable)?;
        let mut fields = answer.into_iter();
        let epoch = fields.next().ok_or_else(|| internal("empty read answer"))?;
        let latest = fields
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| internal("read answer without an offset"))?;
        let mut entries = Vec::new();
        while let (Some(json), Some(at)) = (fields.next(), fields.next()) {
            entries.push((json, at.parse().unwrap_or(0)));
        }
        Ok((epoch, latest, entries))
    }
}

/// The publications of `entries` accepted at or after `min_at`, in the given order.
fn parse_fresh(entries: Vec<(String, i64)>, min_at: i64) -> Result<Vec<Publication>, StoreError> {
    entries
        .into_iter()
        .filter(|(_, at)| *at >= min_at)
        .map(|(json, _)| serde_json::from_str(&json).map_err(internal))
        .collect()
}

#[async_trait]
impl ChannelStore for RedisChannelStore {
    async fn settings(&self, name: &ChannelName) -> Result<Option<ChannelSettings>, StoreError> {
        let json: Option<String> = self
            .pool
            .hget(SETTINGS, name.as_str())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(internal))
            .transpose()
    }

    async fn put_settings(
        &self,
        name: &ChannelName,
        settings: &ChannelSettings,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(internal)?;
        let _: i64 = self
            .pool
            .hset(SETTINGS, (name.as_str(), json))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, name: &ChannelName) -> Result<bool, StoreError> {
        let removed: i64 = self
            .pool
            .hdel(SETTINGS, name.as_str())
            .await
            .map_err(unavailable)?;
        // One slot: one DEL of both keys is valid on a cluster too.
        let _: i64 = self
            .pool
            .del(vec![key(name.as_str(), "meta"), key(name.as_str(), "hist")])
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn list(&self) -> Result<Vec<(String, ChannelSettings)>, StoreError> {
        let all: std::collections::HashMap<String, String> =
            self.pool.hgetall(SETTINGS).await.map_err(unavailable)?;
        all.into_iter()
            .map(|(name, json)| Ok((name, serde_json::from_str(&json).map_err(internal)?)))
            .collect()
    }

    async fn publish(&self, new: NewPublication) -> Result<Published, StoreError> {
        let name = new.channel.as_str();
        let mut keys = vec![key(name, "meta"), key(name, "hist")];
        if let Some(dedupe) = &new.dedupe {
            keys.push(key(name, &format!("dd:{dedupe}")));
        }
        let head = format!(
            "{{\"channel\":{},\"offset\":",
            serde_json::to_string(name).map_err(internal)?
        );
        let tail = format!(
            ",\"data\":{},\"from\":{},\"at\":{}}}",
            serde_json::to_string(&new.data).map_err(internal)?,
            serde_json::to_string(&new.from).map_err(internal)?,
            new.at
        );
        let args = vec![
            fresh_epoch(),
            new.bounds.size.to_string(),
            new.bounds.ttl_ms.max(1).to_string(),
            new.dedupe_window_secs.max(1).to_string(),
            if self.sharded { "SPUBLISH" } else { "PUBLISH" }.to_owned(),
            feed_channel(name),
            new.at.to_string(),
            head,
            tail,
        ];
        let answer: Vec<String> = self
            .publish
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [epoch, offset, duplicate] => Ok(Published {
                offset: offset.parse().map_err(internal)?,
                epoch: epoch.clone(),
                duplicate: duplicate == "1",
            }),
            other => Err(internal(format!("publish answered {other:?}"))),
        }
    }

    async fn recent(
        &self,
        name: &ChannelName,
        bounds: HistoryBounds,
        after: Option<u64>,
    ) -> Result<Recent, StoreError> {
        let min_at = bounds.min_at(crate::domain::now_millis());
        let (epoch, latest, publications) = match after {
            Some(after) => {
                let (epoch, latest, entries) = self.read(name, "after", after, bounds.size).await?;
                (epoch, latest, parse_fresh(entries, min_at)?)
            }
            None => {
                let (epoch, latest, entries) = self.read(name, "newest", 0, bounds.size).await?;
                let mut publications = parse_fresh(entries, min_at)?;
                publications.reverse();
                (epoch, latest, publications)
            }
        };
        Ok(Recent {
            epoch,
            latest,
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
        let count = u32::try_from(limit).unwrap_or(u32::MAX);
        let (_, _, entries) = self.read(name, "page", before.unwrap_or(0), count).await?;
        parse_fresh(entries, bounds.min_at(crate::domain::now_millis()))
    }

    async fn announce(&self, change: &PresenceChange) -> Result<(), StoreError> {
        let channel = feed_channel(&change.channel);
        let message = FeedMessage::encode_presence(change);
        crate::bus::redis_publish(&self.pool, self.sharded, channel, message).await
    }

    async fn set_present(
        &self,
        channel: &ChannelName,
        uid: &str,
        socket: &str,
        present: bool,
    ) -> Result<(), StoreError> {
        let member = format!("{uid}\n{}\n{socket}", self.node);
        let set = key(channel.as_str(), "pres");
        if present {
            let now = crate::domain::now_millis() as f64;
            let _: i64 = self
                .pool
                .zadd(set, None, None, false, false, (now, member))
                .await
                .map_err(unavailable)?;
        } else {
            let _: i64 = self.pool.zrem(set, member).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn present(&self, channel: &ChannelName) -> Result<Vec<String>, StoreError> {
        let cutoff = (crate::domain::now_millis() - PRESENCE_STALE_MS) as f64;
        let set = key(channel.as_str(), "pres");
        // Entries of dead nodes are dropped as they are found.
        let _: i64 = self
            .pool
            .zremrangebyscore(&set, "-inf", cutoff)
            .await
            .map_err(unavailable)?;
        let members: Vec<String> = self
            .pool
            .zrangebyscore(&set, cutoff, "+inf", false, None)
            .await
            .map_err(unavailable)?;
        let mut uids: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.split('\n').next().map(str::to_owned))
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn subscribers(&self, channel: &ChannelName) -> Result<u64, StoreError> {
        let cutoff = (crate::domain::now_millis() - PRESENCE_STALE_MS) as f64;
        let count: u64 = self
            .pool
            .zcount(key(channel.as_str(), "pres"), cutoff, f64::MAX)
            .await
            .map_err(unavailable)?;
        Ok(count)
    }
}

/// [`ChannelFeed`] over Redis pub/sub: SUBSCRIBE on one Redis, SSUBSCRIBE on a cluster (the
/// feed lives on the shard that holds the channel).
pub struct RedisChannelFeed {
    subscriber: SubscriberClient,
    sharded: bool,
}

impl RedisChannelFeed {
    /// A feed over the node's subscriber connection.
    pub fn new(redis: &RedisHandles) -> Self {
        Self {
            subscriber: redis.subscriber.clone(),
            sharded: redis.cluster,
        }
    }

    /// Forwards every feed message the subscriber receives to `to`, in arrival order (which
    /// is offset order per channel), until `shutdown`. A lag of the subscriber's buffer, or a
    /// reconnect (`resubscribed` changes), sends [`FeedMessage::Lost`]: the hub then re-reads
    /// the histories of its channels.
    pub fn spawn_listener(
        &self,
        redis: &RedisHandles,
        to: mpsc::UnboundedSender<FeedMessage>,
        shutdown: CancellationToken,
    ) {
        let mut messages = self.subscriber.message_rx();
        let mut resubscribed = redis.resubscribed.clone();
        let lost = to.clone();
        let resync_shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = resync_shutdown.cancelled() => return,
                    changed = resubscribed.changed() => if changed.is_err() { return },
                }
                let _ = lost.send(FeedMessage::Lost);
            }
        });
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = messages.recv() => m,
                };
                match message {
                    Ok(message) => {
                        let Some(name) = feed_name(&message.channel) else {
                            continue;
                        };
                        let decoded = message.value.as_str().and_then(|p| FeedMessage::decode(&p));
                        match decoded {
                            Some(feed) => {
                                if to.send(feed).is_err() {
                                    break;
                                }
                            }
                            None => tracing::warn!(
                                channel = name,
                                "undecodable channel feed message dropped"
                            ),
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "channel feed lagged; re-reading histories");
                        let _ = to.send(FeedMessage::Lost);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
}

#[async_trait]
impl ChannelFeed for RedisChannelFeed {
    async fn listen(&self, channel: &ChannelName) -> Result<(), StoreError> {
        let feed = feed_channel(channel.as_str());
        if self.sharded {
            return ssubscribe_per_slot(&self.subscriber, vec![feed]).await;
        }
        self.subscriber.subscribe(feed).await.map_err(unavailable)?;
        // Answered in order on the same connection: the subscription is active after it.
        let _: String = self.subscriber.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    async fn stop(&self, channel: &ChannelName) -> Result<(), StoreError> {
        let feed = feed_channel(channel.as_str());
        if !self.sharded {
            return self.subscriber.unsubscribe(feed).await.map_err(unavailable);
        }
        let by_slot = group_by_hash_slot(vec![feed]).map_err(unavailable)?;
        for channels in by_slot.into_values() {
            self.subscriber
                .sunsubscribe(channels)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

/// The embedded node's feed: publications reach its hub straight from the store.
pub struct LocalChannelFeed;

#[async_trait]
impl ChannelFeed for LocalChannelFeed {
    async fn listen(&self, _channel: &ChannelName) -> Result<(), StoreError> {
        Ok(())
    }

    async fn stop(&self, _channel: &ChannelName) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_round_trip_and_share_the_channels_slot() {
        assert_eq!(feed_channel("stock:1"), "wc:{ch:stock:1}:pub");
        assert_eq!(feed_name(&feed_channel("stock:1")), Some("stock:1"));
        assert_eq!(feed_name("wc:{alice}:ch"), None);
        assert!(key("a", "meta").contains("{ch:a}") && key("a", "hist").contains("{ch:a}"));
    }
}
