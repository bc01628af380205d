//! Redis pub/sub bus: each node SUBSCRIBEs to the channels of its connected users.

use std::sync::Arc;

use async_trait::async_trait;
use fred::{
    clients::{Pool, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    util::group_by_hash_slot,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{encode_live, Bus, Envelope, EventDecoder, Router};
use crate::{
    domain::{UserId, WireEvent},
    storage::{
        embedded::internal,
        redis::{channel_user, ssubscribe_per_slot, unavailable, user_channel, RedisHandles},
        StoreError,
    },
};

/// [`Bus`] over Redis pub/sub: classic channels on a single Redis, sharded channels
/// (SSUBSCRIBE/SPUBLISH) on Redis Cluster, so a message travels only to the shard that owns
/// the receiver's slot instead of being broadcast to every shard.
pub struct RedisBus {
    pool: Pool,
    subscriber: SubscriberClient,
    sharded: bool,
    resubscribed: tokio::sync::watch::Receiver<u64>,
}

impl RedisBus {
    /// A bus over the node's Redis handles. Call [`RedisBus::spawn_listener`] to start
    /// receiving.
    pub fn new(redis: &RedisHandles) -> Self {
        Self {
            pool: redis.pool.clone(),
            subscriber: redis.subscriber.clone(),
            sharded: redis.cluster,
            resubscribed: redis.resubscribed.clone(),
        }
    }

    /// Feeds every message of the subscribed channels to `router` until `shutdown`.
    ///
    /// Messages published while the subscriber was disconnected, or dropped because this
    /// node lagged, are not redelivered by Redis; the router then asks every local socket to
    /// re-read its inbox, so stored events still arrive, in order.
    pub fn spawn_listener(
        &self,
        router: Arc<Router>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut messages = self.subscriber.message_rx();
        let resync_router = router.clone();
        let mut resubscribed = self.resubscribed.clone();
        let resync_shutdown = shutdown.clone();
        // Only once the channels are subscribed again: a resync before that could read the
        // inboxes, then miss an event published before the subscription was back.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = resync_shutdown.cancelled() => return,
                    changed = resubscribed.changed() => if changed.is_err() { return },
                }
                tracing::warn!(
                    "Redis subscriber reconnected and resubscribed; resyncing local sockets"
                );
                resync_router.resync_all();
            }
        });
        tokio::spawn(async move {
            let mut decoder = EventDecoder::default();
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = messages.recv() => m,
                };
                match message {
                    Ok(message) => {
                        let Some(uid) = channel_user(&message.channel) else {
                            continue;
                        };
                        let payload = message.value.as_str();
                        let Some(envelope) = payload.as_deref().and_then(Envelope::read) else {
                            tracing::warn!(uid, "undecodable bus payload dropped");
                            continue;
                        };
                        if let Envelope::Live(skip, _) = &envelope {
                            // Typically the sender's own copy coming back to its node.
                            if !router.has_socket_besides(uid, *skip) {
                                continue;
                            }
                        }
                        match decoder.open(envelope) {
                            Some(decoded) => router.deliver(uid, decoded),
                            None => tracing::warn!(uid, "undecodable bus payload dropped"),
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "bus listener lagged; resyncing local sockets");
                        router.resync_all();
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn subscribe(&self, users: &[String]) -> Result<(), StoreError> {
        let channels: Vec<String> = users.iter().map(|u| user_channel(u)).collect();
        if self.sharded {
            return ssubscribe_per_slot(&self.subscriber, channels).await;
        }
        self.subscriber
            .subscribe(channels)
            .await
            .map_err(unavailable)?;
        // fred may resolve SUBSCRIBE before Redis has processed it. Redis answers a
        // connection's commands in order, so once this PING is answered the subscription is
        // active and nothing published from now on can be missed.
        let _: String = self.subscriber.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    async fn unsubscribe(&self, users: &[String]) -> Result<(), StoreError> {
        let channels: Vec<String> = users.iter().map(|u| user_channel(u)).collect();
        if !self.sharded {
            return self
                .subscriber
                .unsubscribe(channels)
                .await
                .map_err(unavailable);
        }
        let by_slot = group_by_hash_slot(channels).map_err(unavailable)?;
        let per_slot = by_slot
            .into_values()
            .map(|channels| self.subscriber.sunsubscribe(channels));
        futures_util::future::try_join_all(per_slot)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn publish_live(
        &self,
        to: &UserId,
        skip_socket: Option<&str>,
        event: &WireEvent,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(internal)?;
        redis_publish(
            &self.pool,
            self.sharded,
            user_channel(to.as_str()),
            encode_live(skip_socket, &json),
        )
        .await
    }
}

/// PUBLISH, or SPUBLISH on a cluster, `message` on a user's `channel`.
pub async fn redis_publish(
    pool: &Pool,
    sharded: bool,
    channel: String,
    message: String,
) -> Result<(), StoreError> {
    let client = pool.next();
    let _: i64 = if sharded {
        client.spublish(channel, message).await
    } else {
        client.publish(channel, message).await
    }
    .map_err(unavailable)?;
    Ok(())
}
