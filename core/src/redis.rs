//! Redis plumbing both binaries share: the client settings, the key scheme and the mapping of
//! fred's errors. Connections themselves stay with each binary (the chat server adds a
//! subscriber and a blocking pool, the profile service needs one small pool).

use std::time::Duration;

use fred::{
    clients::Pool,
    prelude::{Builder, Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy},
};

use crate::store::StoreError;

/// Commands that do not answer within this are failed, so a request gets `unavailable`
/// instead of hanging while Redis is away.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Maps a fred error to [`StoreError::Unavailable`]: with Redis, every failure we can meet at
/// run time is a connectivity or timeout problem the client may retry.
pub fn unavailable(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `wc:{<id>}:<suffix>`: a key in the hash slot of `id` (a uid, or a token id), so that every
/// key of one user lives in one Redis Cluster slot.
pub fn user_key(id: &str, suffix: &str) -> String {
    format!("wc:{{{id}}}:{suffix}")
}

/// The client configuration of a Redis `url` (`redis://…` or `redis-cluster://…`).
pub fn config_from_url(url: &str) -> Result<Config, StoreError> {
    Config::from_url(url).map_err(|e| StoreError::Internal(format!("bad Redis URL: {e}")))
}

/// Performance settings of a command client: fred's defaults but the [`COMMAND_TIMEOUT`].
/// fred's default (small) notification buffers are kept on purpose: tokio's broadcast
/// channels allocate their whole ring up front, for each of a client's notification channels.
pub fn command_performance() -> PerformanceConfig {
    PerformanceConfig {
        default_command_timeout: COMMAND_TIMEOUT,
        ..PerformanceConfig::default()
    }
}

/// Connection settings of every client: a connection attempt fails within five seconds, and
/// a command is tried three times across reconnects.
pub fn connection_config() -> ConnectionConfig {
    ConnectionConfig {
        connection_timeout: Duration::from_secs(5),
        max_command_attempts: 3,
        ..ConnectionConfig::default()
    }
}

/// Reconnect forever, backing off from 50 ms to 2 s.
pub fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 50, 2_000, 2)
}

/// A pool of `size` command connections with `performance`, [`connection_config`] and
/// [`reconnect_policy`]; not connected yet (`init` it).
pub fn build_pool(
    config: Config,
    performance: PerformanceConfig,
    size: usize,
) -> Result<Pool, fred::error::Error> {
    Builder::from_config(config)
        .set_performance_config(performance)
        .set_connection_config(connection_config())
        .set_policy(reconnect_policy())
        .build_pool(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_carry_the_id_as_hash_tag() {
        assert_eq!(user_key("abc", "revoked"), "wc:{abc}:revoked");
        assert_eq!(user_key("alice", "profile"), "wc:{alice}:profile");
    }
}
