//! Typed settings for the profile service: defaults, then CLI flags, then `WEBCHAT_*` env vars
//! (clap resolves a flag before its env var). The env vars are the chat server's wherever the
//! meaning is shared, so one environment configures both. Owns parsing only.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// `WEBCHAT_AUTH` means the same to the chat server and the profile service.
pub use webchat_core::config::AuthMode;

/// Every option of the `webchat-profile` binary. Each flag also reads the env var beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webchat-profile",
    version,
    about = "Profile service of webchat: names, statuses and avatars shared with contacts"
)]
pub struct Settings {
    /// Address the profile service listens on.
    #[arg(long, env = "WEBCHAT_PROFILE_LISTEN", default_value = "0.0.0.0:4040")]
    pub listen: SocketAddr,

    /// Authentication mode: `token` (default) or `open` (trusted networks only).
    #[arg(long, env = "WEBCHAT_AUTH", value_enum, default_value_t = AuthMode::Token)]
    pub auth: AuthMode,

    /// Key that verifies tokens; must be the chat server's. When unset it is read from Redis
    /// (if configured) or from `<data dir>/token_secret`, as the chat server does.
    #[arg(long, env = "WEBCHAT_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Directory of the embedded store (`profiles.redb`) and of the token key file.
    #[arg(long, env = "WEBCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Redis URL: turns on the cache, token revocation checks and the `wc:profiles` channel.
    #[arg(long, env = "WEBCHAT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// DynamoDB endpoint (e.g. DynamoDB Local); set, profiles live in DynamoDB.
    #[arg(long, env = "WEBCHAT_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,

    /// Prefix of DynamoDB table names; the table is `<prefix>profiles`.
    #[arg(long, env = "WEBCHAT_TABLE_PREFIX", default_value = "webchat_")]
    pub table_prefix: String,

    /// Lifetime of a cached profile in Redis, in seconds.
    #[arg(long, env = "WEBCHAT_PROFILE_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,

    /// Comma-separated origins allowed to call the service from a browser, or `*`.
    /// Unset: same origin only.
    #[arg(long, env = "WEBCHAT_CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "WEBCHAT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Settings {
    /// Settings with every default, in token mode, listening on an ephemeral loopback port and
    /// touching no back-end but `data_dir` (for tests). Env vars are ignored on purpose.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: AuthMode::Token,
            token_secret: None,
            data_dir,
            redis_url: None,
            dynamodb_endpoint: None,
            table_prefix: "webchat_".into(),
            cache_ttl_secs: 300,
            cors_origins: None,
            log_format: "text".into(),
        }
    }

    /// The DynamoDB table of profiles.
    pub fn table_name(&self) -> String {
        format!("{}profiles", self.table_prefix)
    }

    /// The cache TTL as a [`Duration`] (at least one second: Redis refuses `EX 0`).
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::parse_from(["webchat-profile"]);
        assert_eq!(s.listen.port(), 4040);
        assert_eq!(s.auth, AuthMode::Token);
        assert_eq!(s.cache_ttl_secs, 300);
        assert_eq!(s.table_name(), "webchat_profiles");
    }

    #[test]
    fn flags_override_defaults() {
        let s = Settings::parse_from([
            "webchat-profile",
            "--auth",
            "open",
            "--listen",
            "127.0.0.1:0",
            "--table-prefix",
            "t1_",
        ]);
        assert_eq!(s.auth, AuthMode::Open);
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.table_name(), "t1_profiles");
    }
}
