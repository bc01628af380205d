//! The Redis connection and key names shared with the chat server.
//!
//! Keys (the `{…}` hash tag keeps one user's keys in one Redis Cluster slot):
//! - `wc:{<uid>}:profile`      cached profile JSON (cache-aside, TTL)
//! - `wc:{<uid>}:profile_ver`  the newest version written (fences stale cache fills)
//! - `wc:{<uid>}:profile_rec`  the profile record when Redis is the system of record
//! - `wc:{<jti>}:revoked`      written by the chat server at logout; read here
//! - `wc:token_secret`         the shared token key when none is configured
//! - channel `wc:profiles`     every successful update, as profile JSON

use fred::{clients::Pool, interfaces::ClientLike};
/// `wc:{<id>}:<suffix>`, the chat server's key scheme.
pub use webchat_core::redis::user_key;
use webchat_core::redis::{build_pool, command_performance, config_from_url};

use crate::store::StoreError;

/// Pub/sub channel of profile updates (payload: the profile JSON of `GET`).
pub const PROFILES_CHANNEL: &str = "wc:profiles";

/// Maps a fred error to [`StoreError::Unavailable`]: at run time every Redis failure we can
/// meet is connectivity or a timeout, which the client may retry.
pub fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Connects a small command pool with the chat server's client settings; fails fast when
/// Redis is unreachable at start-up and reconnects forever afterwards.
pub async fn connect(url: &str) -> Result<Pool, StoreError> {
    let pool = build_pool(config_from_url(url)?, command_performance(), 2).map_err(unavailable)?;
    pool.init().await.map_err(unavailable)?;
    Ok(pool)
}
