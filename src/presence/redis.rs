//! Presence in Redis.
//!
//! Keys: `wc:{uid}:on` (hash: node id → that node's socket count for the user),
//! `wc:{node:<id>}:users` (set: the users a node counts), `wc:nodes` (sorted set: node id →
//! last heartbeat, ms), `wc:{uid}:wrote`, `wc:{uid}:heard` and `wc:{uid}:groups` (sets: the
//! contact index; `wc:{uid}:peers` of older versions is no longer read).
//! A node that stops heartbeating for the timeout is cleared by whichever node notices first
//! (it claims the cleanup by removing the dead node from `wc:nodes`).

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{KeysInterface, SetsInterface, SortedSetsInterface},
    types::scripts::Script,
};

use super::{ContactStore, Heartbeat, PresenceStore};
use crate::{
    domain::{now_millis, GroupId, UserId},
    storage::{
        redis::{unavailable, user_key},
        StoreError,
    },
};

/// Adds one socket: returns 1 when it is the user's only socket anywhere.
const UP_LUA: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if n == 1 and redis.call('HLEN', KEYS[1]) == 1 then return 1 end
return 0";

/// Removes one socket (or, with ARGV[2] = 'all', all of a dead node's): returns
/// {1 if this node counts none any more, fields left}.
const DOWN_LUA: &str = r"
local n = 0
if ARGV[2] ~= 'all' then n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return {n <= 0 and 1 or 0, redis.call('HLEN', KEYS[1])}";

const NODES: &str = "wc:nodes";

/// Sets this node's socket count for a user; returns the fields left (1: only this node).
const RECOUNT_LUA: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HLEN', KEYS[1])";

/// [`PresenceStore`] over Redis.
pub struct RedisPresenceStore {
    pool: Pool,
    node: String,
    up: Script,
    down: Script,
    recount: Script,
    timeout_ms: i64,
    /// Whether this node has heartbeated before (a later "added" means it had been dropped).
    beaten: AtomicBool,
}

impl RedisPresenceStore {
    /// Presence for this node (a fresh id per run); other nodes count it dead after
    /// `timeout_secs` without a heartbeat.
    pub fn new(pool: Pool, node: String, timeout_secs: u64) -> Self {
        Self {
            pool,
            node,
            up: Script::from_lua(UP_LUA),
            down: Script::from_lua(DOWN_LUA),
            recount: Script::from_lua(RECOUNT_LUA),
            timeout_ms: i64::try_from(timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            beaten: AtomicBool::new(false),
        }
    }

    fn users_key(node: &str) -> String {
        user_key(&format!("node:{node}"), "users")
    }

    /// Removes `node`'s count for `uid`; true when the user has no socket left anywhere.
    async fn drop_count(&self, uid: &str, node: &str, all: bool) -> Result<bool, StoreError> {
        let (node_done, fields_left): (i64, i64) = self
            .down
            .evalsha_with_reload(
                self.pool.next(),
                vec![user_key(uid, "on")],
                vec![node.to_owned(), if all { "all" } else { "one" }.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        if node_done == 1 && !all {
            let _: i64 = self
                .pool
                .srem(Self::users_key(node), uid)
                .await
                .map_err(unavailable)?;
        }
        Ok(fields_left == 0)
    }
}

#[async_trait]
impl PresenceStore for RedisPresenceStore {
    async fn socket_up(&self, uid: &UserId) -> Result<bool, StoreError> {
        let _: i64 = self
            .pool
            .sadd(Self::users_key(&self.node), uid.as_str())
            .await
            .map_err(unavailable)?;
        let first: i64 = self
            .up
            .evalsha_with_reload(
                self.pool.next(),
                vec![user_key(uid.as_str(), "on")],
                vec![self.node.clone()],
            )
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }

    async fn socket_down(&self, uid: &UserId) -> Result<bool, StoreError> {
        self.drop_count(uid.as_str(), &self.node, false).await
    }

    async fn online(&self, uids: &[String]) -> Result<Vec<bool>, StoreError> {
        // A user is online while their count hash exists (a dead node's entries are cleared
        // by the heartbeats of the others).
        let checks = uids.iter().map(|uid| async move {
            let exists: i64 = self
                .pool
                .exists(user_key(uid, "on"))
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>(exists > 0)
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }

    async fn heartbeat(&self, local: &[(String, u32)]) -> Result<Heartbeat, StoreError> {
        let now = now_millis();
        let added: i64 = self
            .pool
            .zadd(
                NODES,
                None,
                None,
                false,
                false,
                (now as f64, self.node.as_str()),
            )
            .await
            .map_err(unavailable)?;
        let mut beat = Heartbeat::default();
        if added == 1 && self.beaten.swap(true, Ordering::Relaxed) {
            // Another node took us for dead and cleared our users: count them again.
            tracing::warn!(
                users = local.len(),
                "this node had been given up for dead; re-registering its users"
            );
            for (uid, sockets) in local {
                let _: i64 = self
                    .pool
                    .sadd(Self::users_key(&self.node), uid.as_str())
                    .await
                    .map_err(unavailable)?;
                let fields: i64 = self
                    .recount
                    .evalsha_with_reload(
                        self.pool.next(),
                        vec![user_key(uid, "on")],
                        vec![self.node.clone(), sockets.to_string()],
                    )
                    .await
                    .map_err(unavailable)?;
                if fields == 1 {
                    beat.online.push(uid.clone());
                }
            }
        }
        self.beaten.store(true, Ordering::Relaxed);
        let cutoff = (now - self.timeout_ms) as f64;
        let dead: Vec<String> = self
            .pool
            .zrangebyscore(NODES, "-inf", cutoff, false, None)
            .await
            .map_err(unavailable)?;
        for node in dead.into_iter().filter(|n| *n != self.node) {
            let claimed: i64 = self
                .pool
                .zrem(NODES, node.as_str())
                .await
                .map_err(unavailable)?;
            if claimed == 0 {
                continue; // another node is cleaning it up
            }
            let users: Vec<String> = self
                .pool
                .smembers(Self::users_key(&node))
                .await
                .map_err(unavailable)?;
            tracing::warn!(
                node,
                users = users.len(),
                "clearing presence of a node that stopped heartbeating"
            );
            for uid in users {
                if self.drop_count(&uid, &node, true).await? {
                    beat.offline.push(uid);
                }
            }
            let _: i64 = self
                .pool
                .del(Self::users_key(&node))
                .await
                .map_err(unavailable)?;
        }
        Ok(beat)
    }
}

/// [`ContactStore`] over Redis sets.
pub struct RedisContactStore {
    pool: Pool,
}

impl RedisContactStore {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ContactStore for RedisContactStore {
    async fn note_sent(&self, sender: &UserId, recipient: &UserId) -> Result<(), StoreError> {
        // Two keys in two slots (each in its owner's), written side by side.
        let (wrote, heard): (Result<i64, _>, Result<i64, _>) = tokio::join!(
            self.pool
                .sadd(user_key(sender.as_str(), "wrote"), recipient.as_str()),
            self.pool
                .sadd(user_key(recipient.as_str(), "heard"), sender.as_str())
        );
        wrote.map_err(unavailable)?;
        heard.map_err(unavailable)?;
        Ok(())
    }

    async fn peers(&self, uid: &UserId) -> Result<Vec<String>, StoreError> {
        // Both sets carry the user's hash tag, so SINTER is one command on Redis Cluster too.
        self.pool
            .sinter(vec![
                user_key(uid.as_str(), "wrote"),
                user_key(uid.as_str(), "heard"),
            ])
            .await
            .map_err(unavailable)
    }

    async fn joined(&self, gid: &GroupId, members: &[UserId]) -> Result<(), StoreError> {
        let adds = members.iter().map(|m| {
            self.pool
                .sadd::<i64, _, _>(user_key(m.as_str(), "groups"), gid.as_str())
        });
        for result in futures_util::future::join_all(adds).await {
            result.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn left(&self, gid: &GroupId, member: &UserId) -> Result<(), StoreError> {
        let _: i64 = self
            .pool
            .srem(user_key(member.as_str(), "groups"), gid.as_str())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn groups_of(&self, uid: &UserId) -> Result<Vec<String>, StoreError> {
        self.pool
            .smembers(user_key(uid.as_str(), "groups"))
            .await
            .map_err(unavailable)
    }
}
