//! The Redis connection: one command pool and one subscriber connection per node (fred).
//!
//! Key layout (every key of one user carries the hash tag `{uid}` so a user's inbox, counter,
//! idempotency keys and channel live in one Redis Cluster slot):
//! - `wc:{uid}:acct`    account JSON
//! - `wc:{uid}:seq`     last Seq handed out (never expires: clients dedupe by Seq)
//! - `wc:{uid}:inbox`   stream of unconfirmed events, entry id `<Seq>-0`, field `e` = event JSON
//! - `wc:{uid}:dd:<sender>:<kind>:<MsgID>`  idempotency key of a 1:1 event or group receipt →
//!   first SentAt (`SentAt:Seq` for 1:1), expires after the window
//! - `wc:{uid}:sc:<uid>:message:<gid>:<MsgID>`  the state of a group message `uid` sent
//!   (`inbox::claims`), expires after the window
//! - `wc:{uid}:ch`      the user's own pub/sub channel (a sharded channel on Redis Cluster,
//!   so it lives on the shard that holds the user's inbox)
//! - `wc:sb:<key>`      a large body shared by a fan-out's inbox entries (`BodyRef`, see
//!   `inbox::shared_body`), expires an hour after the inbox age bound
//! - `wc:{jti}:revoked` a revoked token id, expires with the token
//! - `wc:token_secret`  the shared token key when none is configured
//! - `wc:users`         every uid (sorted set, equal scores: the address book by prefix)
//! - `wc:<table prefix>calllog`  stream: the call-log write-behind queue (group `writers`)
//! - `wc:{log:<pk>}:*`  call-log rows when Redis is the call-log table (see `calllog`)

use std::time::Duration;

use fred::{
    clients::{Pool, SubscriberClient},
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, PerformanceConfig},
    types::RespVersion,
};

use fred::util::group_by_hash_slot;
use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;

use webchat_core::redis::{
    build_pool, command_performance, config_from_url, connection_config, reconnect_policy,
    COMMAND_TIMEOUT,
};
/// The error mapping and the key scheme are shared with the profile service.
pub use webchat_core::redis::{unavailable, user_key};

use super::StoreError;
/// Messages the bus subscriber buffers for its reader: more than a 10,000-member group's
/// fan-out publishes at once (one message per member). fred gives every notification channel
/// of the client this capacity and tokio allocates each ring whole (~8 MB per channel at
/// 1 << 16): 1 << 14 keeps an idle node on Redis near the embedded node's memory.
const SUBSCRIBER_BUFFER: usize = 1 << 14;

/// The node's Redis handles.
#[derive(Clone)]
pub struct RedisHandles {
    /// Pipelined command connections.
    pub pool: Pool,
    /// The connection that holds this node's channel subscriptions.
    pub subscriber: SubscriberClient,
    /// A connection for blocking reads (the call-log queue), kept off the command pool.
    pub blocking: Pool,
    /// Whether Redis is a cluster (`redis-cluster://` URL): user channels then use sharded
    /// pub/sub (SSUBSCRIBE/SPUBLISH), and scripts only touch keys of one hash slot.
    pub cluster: bool,
    /// Counts the subscriber's restored subscriptions: it changes once every channel the
    /// subscriber held is subscribed again after a reconnect (see [`resubscribe`]).
    pub resubscribed: watch::Receiver<u64>,
}

impl RedisHandles {
    /// Connects both the pool and the subscriber; fails fast when Redis is unreachable at
    /// start-up, and reconnects forever afterwards.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config = config_from_url(url)?;
        // fred ignores `?protocol=resp3` in URLs; RESP3 must be set here.
        config.version = RespVersion::RESP3;
        let cluster = config.server.is_clustered();
        // The command clients publish no messages to anyone: fred's default (small) buffers
        // for their reconnect/error notifications (a deep buffer everywhere held ~110 MB on
        // an idle node).
        let perf = command_performance();
        // The subscriber's message channel is the bus: a lagging receiver loses messages
        // (recovered by a resync, at a cost), so it stays deep.
        let subscriber_perf = PerformanceConfig {
            broadcast_channel_capacity: SUBSCRIBER_BUFFER,
            ..perf.clone()
        };
        let pool = build_pool(config.clone(), perf.clone(), 2).map_err(unavailable)?;
        let blocking = build_pool(
            config.clone(),
            PerformanceConfig {
                // A blocking read waits up to a second on top of the usual time.
                default_command_timeout: COMMAND_TIMEOUT + Duration::from_secs(2),
                ..perf
            },
            1,
        )
        .map_err(unavailable)?;
        let subscriber = Builder::from_config(config)
            .set_performance_config(subscriber_perf)
            .set_connection_config(connection_config())
            .set_policy(reconnect_policy())
            .build_subscriber_client()
            .map_err(unavailable)?;
        pool.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        blocking.init().await.map_err(unavailable)?;
        let resubscribed = spawn_resubscriber(subscriber.clone());
        tracing::info!(cluster, "connected to Redis");
        Ok(Self {
            pool,
            subscriber,
            blocking,
            cluster,
            resubscribed,
        })
    }
}

/// After every reconnect of the subscriber, subscribes again to every channel it held
/// (retrying while Redis answers errors), then bumps the returned counter.
///
/// fred's own `manage_subscriptions` is not used: it also re-sends PSUBSCRIBE with no
/// pattern, which Redis refuses, and gives up before the sharded channels, so on a cluster
/// no user channel came back.
fn spawn_resubscriber(subscriber: SubscriberClient) -> watch::Receiver<u64> {
    let (done, resubscribed) = watch::channel(0u64);
    let mut reconnects = subscriber.reconnect_rx();
    tokio::spawn(async move {
        loop {
            match reconnects.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
            let mut attempt = 0u32;
            loop {
                match resubscribe(&subscriber).await {
                    Ok(()) => break,
                    Err(e) if attempt < 50 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "resubscribing failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(20))))
                            .await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "resubscribing failed; giving up until the next reconnect");
                        break;
                    }
                }
            }
            done.send_modify(|n| *n += 1);
        }
    });
    resubscribed
}

/// Subscribes `subscriber` again to every channel it tracks: classic channels in one
/// SUBSCRIBE, sharded channels in one SSUBSCRIBE per hash slot.
pub async fn resubscribe(subscriber: &SubscriberClient) -> Result<(), StoreError> {
    let classic: Vec<String> = subscriber
        .tracked_channels()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    if !classic.is_empty() {
        subscriber.subscribe(classic).await.map_err(unavailable)?;
        // Answered in order on the same connection: after this PING the subscriptions are
        // active (fred may resolve SUBSCRIBE earlier).
        let _: String = subscriber.ping(None).await.map_err(unavailable)?;
    }
    let sharded: Vec<String> = subscriber
        .tracked_shard_channels()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    ssubscribe_per_slot(subscriber, sharded).await
}

/// SSUBSCRIBEs to `channels`: one command per hash slot (a sharded subscription may only name
/// channels of one slot), all slots at once; returns once every subscription is active.
pub async fn ssubscribe_per_slot(
    subscriber: &SubscriberClient,
    channels: Vec<String>,
) -> Result<(), StoreError> {
    let by_slot = group_by_hash_slot(channels).map_err(unavailable)?;
    let per_slot = by_slot.into_values().map(|channels| async move {
        let probe = channels.front().cloned();
        subscriber.ssubscribe(channels).await?;
        // fred may resolve SSUBSCRIBE before the shard processed it; a command on a key of
        // the same slot travels on the same connection to the same shard, so its answer
        // means the subscription is active.
        if let Some(probe) = probe {
            let _: i64 = subscriber.exists(probe).await?;
        }
        Ok::<_, fred::error::Error>(())
    });
    futures_util::future::try_join_all(per_slot)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// The user's own pub/sub channel.
pub fn user_channel(uid: &str) -> String {
    user_key(uid, "ch")
}

/// The uid of a channel made by [`user_channel`].
pub fn channel_user(channel: &str) -> Option<&str> {
    channel.strip_prefix("wc:{")?.strip_suffix("}:ch")
}

/// Subscribes `subscriber` to `channel` and calls `handle` with each message's text until
/// `shutdown`. For node-wide announcements (profile updates, revocations), which are
/// live-only: a message lost while lagging is only logged, as `what`.
pub async fn on_channel(
    subscriber: &SubscriberClient,
    channel: &'static str,
    what: &'static str,
    shutdown: CancellationToken,
    handle: impl Fn(String) + Send + 'static,
) -> Result<(), StoreError> {
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(channel).await.map_err(unavailable)?;
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = messages.recv() => m,
            };
            match message {
                Ok(m) if &*m.channel == channel => {
                    if let Some(text) = m.value.as_string() {
                        handle(text);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, what, "listener lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let ch = user_channel("a.b@c");
        assert_eq!(ch, "wc:{a.b@c}:ch");
        assert_eq!(channel_user(&ch), Some("a.b@c"));
        assert_eq!(channel_user("other"), None);
    }
}
