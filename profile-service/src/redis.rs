//! The Redis connection and key names shared with the chat server.
//!
//! Keys (the `{…}` hash tag keeps one user's keys in one Redis Cluster slot):
//! - `wc:{<uid>}:profile`      cached profile JSON (cache-aside, TTL)
//! - `wc:{<uid>}:profile_ver`  the newest version written (fences stale cache fills)
//! - `wc:{<uid>}:profile_rec`  the profile record when Redis is the system of record
//! - `wc:{<jti>}:revoked`      written by the chat server at logout; read here
//! - `wc:token_secret`         the shared token key when none is configured
//! - channel `wc:profiles`     every successful update, as profile JSON

use std::time::Duration;

use fred::{
    clients::Pool,
    interfaces::ClientLike,
    prelude::{Builder, Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy},
};

use crate::store::StoreError;

/// Pub/sub channel of profile updates (payload: the profile JSON of `GET`).
pub const PROFILES_CHANNEL: &str = "wc:profiles";

/// Commands that do not answer within this fail, so a request gets `unavailable` instead of
/// hanging while Redis is away.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// `wc:{<id>}:<suffix>`, the chat server's key scheme.
pub fn user_key(id: &str, suffix: &str) -> String {
    format!("wc:{{{id}}}:{suffix}")
}

/// Maps a fred error to [`StoreError::Unavailable`]: at run time every Redis failure we can
/// meet is connectivity or a timeout, which the client may retry.
pub fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Connects a small command pool; fails fast when Redis is unreachable at start-up and
/// reconnects forever afterwards.
pub async fn connect(url: &str) -> Result<Pool, StoreError> {
    let config =
        Config::from_url(url).map_err(|e| StoreError::Internal(format!("bad Redis URL: {e}")))?;
    let perf = PerformanceConfig {
        default_command_timeout: COMMAND_TIMEOUT,
        ..PerformanceConfig::default()
    };
    let connection = ConnectionConfig {
        connection_timeout: Duration::from_secs(5),
        max_command_attempts: 3,
        ..ConnectionConfig::default()
    };
    let pool = Builder::from_config(config)
        .set_performance_config(perf)
        .set_connection_config(connection)
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build_pool(2)
        .map_err(unavailable)?;
    pool.init().await.map_err(unavailable)?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_chat_servers_scheme() {
        assert_eq!(user_key("abc", "revoked"), "wc:{abc}:revoked");
        assert_eq!(user_key("alice", "profile"), "wc:{alice}:profile");
    }
}
