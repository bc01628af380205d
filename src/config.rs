//! Typed settings for the chat server: defaults, then CLI flags, then `WEBCHAT_*` env vars
//! (clap resolves a flag before its env var). Owns parsing only; nothing here opens sockets
//! or files.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

/// `WEBCHAT_AUTH` means the same to the chat server and the profile service.
pub use webchat_core::config::AuthMode;

/// Every option of the `webchat` binary. Each flag also reads the env var named beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webchat",
    version,
    about = "Realtime chat server for socket.io clients"
)]
pub struct Settings {
    /// Address the chat server listens on (HTTP, socket.io, REST and the web client).
    #[arg(long, env = "WEBCHAT_LISTEN", default_value = "0.0.0.0:4000")]
    pub listen: SocketAddr,

    /// Authentication mode: `token` (default) or `open` (trusted networks only).
    #[arg(long, env = "WEBCHAT_AUTH", value_enum, default_value_t = AuthMode::Token)]
    pub auth: AuthMode,

    /// Key that signs tokens; every node and the profile service must share it. When unset it
    /// is shared through Redis (if configured) or kept in the data dir.
    #[arg(long, env = "WEBCHAT_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "WEBCHAT_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub token_ttl_secs: u64,

    /// Bearer token of the admin API; unset turns the admin API off.
    #[arg(long, env = "WEBCHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Directory of the embedded store (used when Redis is not configured).
    #[arg(long, env = "WEBCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Redis URL: `redis://host:port` for one Redis, or
    /// `redis-cluster://host:port?node=host:port&node=host:port` for Redis Cluster (any
    /// masters; the rest are discovered). Set it on every node to run several. Unset: the
    /// embedded store, one node.
    #[arg(long, env = "WEBCHAT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// DynamoDB endpoint (e.g. DynamoDB Local, `http://127.0.0.1:8000`); region and
    /// credentials come from the usual AWS variables (us-east-1 and dummy keys when none are
    /// set). Set: accounts, group membership and the call log live in DynamoDB.
    #[arg(long, env = "WEBCHAT_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,

    /// Prefix of the DynamoDB table names.
    #[arg(long, env = "WEBCHAT_TABLE_PREFIX", default_value = "webchat_")]
    pub table_prefix: String,

    /// Log every conversation event to the call log (`false` only for benchmarks).
    #[arg(long, env = "WEBCHAT_CALL_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub call_log: bool,

    /// Days Redis keeps the call log when it is the call-log table (Redis without DynamoDB):
    /// older rows are trimmed in the background. 0 keeps them forever, and Redis then grows
    /// with every message. Ignored when DynamoDB holds the call log (long-term history belongs
    /// there).
    #[arg(long, env = "WEBCHAT_CALL_LOG_RETENTION_DAYS", default_value_t = 30)]
    pub call_log_retention_days: u32,

    /// Largest accepted message Body, in bytes.
    #[arg(long, env = "WEBCHAT_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Largest packet a client may send (websocket message or long-polling body), in bytes;
    /// never below what a Body at the limit needs (8 × max body + 4 KiB). It bounds the
    /// member list of one `create` or `refer` (a 1 MiB frame holds about 30,000 uids of 20
    /// characters): larger groups are built with several `refer`s.
    #[arg(long, env = "WEBCHAT_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Most unconfirmed events kept per user inbox; older ones are dropped first.
    #[arg(long, env = "WEBCHAT_INBOX_MAX_LEN", default_value_t = 10_000)]
    pub inbox_max_len: u64,

    /// Longest time an unconfirmed event waits in an inbox, in seconds.
    #[arg(long, env = "WEBCHAT_INBOX_MAX_AGE_SECS", default_value_t = 30 * 24 * 3600)]
    pub inbox_max_age_secs: u64,

    /// Most members a group may have.
    #[arg(long, env = "WEBCHAT_MAX_GROUP_SIZE", default_value_t = 100_000)]
    pub max_group_size: usize,

    /// Idle time after which a group goes dormant; its next message first restarts it.
    #[arg(long, env = "WEBCHAT_GROUP_IDLE_SECS", default_value_t = 86_400)]
    pub group_idle_secs: u64,

    /// How long after sending it a message can be edited by its sender, in seconds (§11).
    #[arg(long, env = "WEBCHAT_EDIT_WINDOW_SECS", default_value_t = crate::lifecycle::DEFAULT_EDIT_WINDOW_SECS)]
    pub edit_window_secs: u64,

    /// How often a node proves it is alive for presence, in seconds.
    #[arg(long, env = "WEBCHAT_PRESENCE_HEARTBEAT_SECS", default_value_t = 10)]
    pub presence_heartbeat_secs: u64,

    /// Groups larger than this do not share presence among their members (a presence change
    /// would otherwise be sent to every member of every large group).
    #[arg(long, env = "WEBCHAT_PRESENCE_GROUP_LIMIT", default_value_t = 1_000)]
    pub presence_group_limit: usize,

    /// How long a user must stay offline before contacts are told, in milliseconds: a reloaded
    /// tab, or one closed as another opens, then shows no offline/online flicker (0: at once).
    #[arg(
        long,
        env = "WEBCHAT_PRESENCE_OFFLINE_GRACE_MS",
        default_value_t = 2_000
    )]
    pub presence_offline_grace_ms: u64,

    /// A node silent for this long counts as dead and its users go offline, in seconds.
    #[arg(long, env = "WEBCHAT_PRESENCE_TIMEOUT_SECS", default_value_t = 30)]
    pub presence_timeout_secs: u64,

    /// Window in which a re-sent (sender, MsgID) is acknowledged again but not delivered twice.
    #[arg(long, env = "WEBCHAT_DEDUPE_WINDOW_SECS", default_value_t = 24 * 3600)]
    pub dedupe_window_secs: u64,

    /// How long the server waits for a client to acknowledge a stored event before leaving it
    /// for the next replay, in seconds.
    #[arg(long, env = "WEBCHAT_ACK_TIMEOUT_SECS", default_value_t = 30)]
    pub ack_timeout_secs: u64,

    /// Events queued for one socket before it counts as a slow consumer and is disconnected
    /// (it gets everything stored by replay when it reconnects).
    #[arg(long, env = "WEBCHAT_SOCKET_QUEUE", default_value_t = 8192)]
    pub socket_queue: usize,

    /// Events one socket may have queued or in progress before further ones are refused
    /// with `rate_limited` (events of one socket are handled in order, one at a time).
    #[arg(long, env = "WEBCHAT_SOCKET_INFLIGHT", default_value_t = 256)]
    pub socket_inflight: usize,

    /// Serve the web client from this directory instead of the copy built into the binary
    /// (for developing the client, or a deployment that customises `config.js`). Unset: the
    /// built-in copy, whatever the working directory.
    #[arg(long, env = "WEBCHAT_WEBCLIENT_DIR")]
    pub webclient_dir: Option<PathBuf>,

    /// Where the chat server and web client reach the profile service.
    #[arg(long, env = "WEBCHAT_PROFILE_URL")]
    pub profile_url: Option<String>,

    /// Comma-separated origins allowed to call the server from a browser, or `*`.
    /// Unset: same origin only.
    #[arg(long, env = "WEBCHAT_CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// Events per second one socket may send (token bucket; 0: no limit). Beyond it:
    /// `rate_limited`.
    #[arg(long, env = "WEBCHAT_SOCKET_RATE", default_value_t = 100.0)]
    pub socket_rate: f64,

    /// Events a socket may send at once before the rate applies.
    #[arg(long, env = "WEBCHAT_SOCKET_BURST", default_value_t = 500.0)]
    pub socket_burst: f64,

    /// New sockets per second from one client address (0: no limit). Behind a load balancer,
    /// set `trusted_proxies` so the address is the client's, not the balancer's.
    #[arg(long, env = "WEBCHAT_CONNECT_RATE", default_value_t = 0.0)]
    pub connect_rate: f64,

    /// New sockets one address may open at once before the connect rate applies.
    #[arg(long, env = "WEBCHAT_CONNECT_BURST", default_value_t = 50.0)]
    pub connect_burst: f64,

    /// Longest time a client may take to send a request's headers, in milliseconds; also how
    /// long an idle keep-alive connection is kept waiting for its next request. Beyond it
    /// the connection is closed (a client that sends nothing, or its headers a byte at a
    /// time, no longer holds a connection).
    #[arg(long, env = "WEBCHAT_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Longest time a client may take to send a request body, in milliseconds, from when its
    /// headers arrived; beyond it the request fails and the connection is closed. Requests
    /// without a body (long-polling GETs, websocket upgrades) are not timed.
    #[arg(long, env = "WEBCHAT_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,

    /// Longest time from a socket.io client's Engine.IO handshake to its socket.io CONNECT
    /// (with its token), in milliseconds; a session that does not connect in time is closed.
    #[arg(long, env = "WEBCHAT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// Most TCP connections one client address may hold at once, websockets included
    /// (0: no limit); more are closed as soon as they are accepted. Addresses in
    /// `trusted_proxies` are exempt (every client behind a balancer shares its address).
    #[arg(
        long,
        env = "WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// Load balancers whose `X-Forwarded-For` header is believed, comma-separated addresses
    /// or CIDR ranges (e.g. `10.0.0.0/8`). Per-address limits (failed logins, new sockets)
    /// then count the client the balancer saw instead of the balancer. Unset: the TCP peer.
    #[arg(long, env = "WEBCHAT_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,

    /// Sockets one user may hold on one node (0: no limit).
    #[arg(long, env = "WEBCHAT_MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: usize,

    /// Failed logins of one uid within the window before its logins are refused (0: off).
    #[arg(long, env = "WEBCHAT_LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: u32,

    /// Failed logins from one client address within the window before its logins are
    /// refused (0: off).
    #[arg(
        long,
        env = "WEBCHAT_LOGIN_MAX_FAILURES_PER_ADDRESS",
        default_value_t = 100
    )]
    pub login_max_failures_per_address: u32,

    /// The failed-login window, in seconds.
    #[arg(long, env = "WEBCHAT_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: u64,

    /// Signups per second from one client address, per node (token bucket; 0: no limit).
    /// Beyond it: `429 rate_limited` with `Retry-After`.
    #[arg(long, env = "WEBCHAT_SIGNUP_RATE", default_value_t = 0.2)]
    pub signup_rate: f64,

    /// Signups one address may make at once before the signup rate applies.
    #[arg(long, env = "WEBCHAT_SIGNUP_BURST", default_value_t = 100.0)]
    pub signup_burst: f64,

    /// Password hashes (signup, login) run at once (0: one per CPU core). Each worker keeps
    /// a ~19 MiB argon2 buffer for the life of the process, reused by every hash.
    #[arg(long, env = "WEBCHAT_HASH_WORKERS", default_value_t = 0)]
    pub hash_workers: usize,

    /// Password hashes that may wait for a hashing thread; beyond them requests are refused
    /// at once with `503 unavailable` and `Retry-After`.
    #[arg(long, env = "WEBCHAT_HASH_QUEUE", default_value_t = 32)]
    pub hash_queue: usize,

    /// Longest wait for a hashing thread, in milliseconds; a request still waiting then is
    /// refused with `503 unavailable` and `Retry-After`.
    #[arg(long, env = "WEBCHAT_HASH_WAIT_MS", default_value_t = 2_000)]
    pub hash_wait_ms: u64,

    /// Async worker threads; 0 means one per CPU core, 1 the single-threaded scheduler.
    #[arg(long, env = "WEBCHAT_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Let third-party transport crates (socketioxide, engineioxide, tungstenite, hyper, h2,
    /// tower-http, fred, the AWS SDK…) log at the level `RUST_LOG` gives them. Off: they
    /// log at most `info` whatever `RUST_LOG` says, since their debug and trace lines carry
    /// bearer tokens, session ids (a long-polling session's only credential) and message
    /// bodies. Only for debugging a transport on a test system.
    #[arg(long, env = "WEBCHAT_UNSAFE_TRANSPORT_LOGS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub unsafe_transport_logs: bool,

    /// Guest sockets (§9): a connect with `auth: {"guest": true}` (or `?guest=1`) gets a
    /// fresh uid `guest-<uuid>` and may read guest channels only. Off: such a connect is
    /// refused `unauthorized`.
    #[arg(long, env = "WEBCHAT_GUESTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub guests: bool,

    /// Whether the channel `general` exists without being created (§9).
    #[arg(long, env = "WEBCHAT_GENERAL_CHANNEL", default_value_t = true, action = clap::ArgAction::Set)]
    pub general_channel: bool,

    /// Service keys allowed to publish to channels over REST (§9): comma-separated
    /// `name:secret` pairs. Publish-only: never accepted as a user token.
    #[arg(long, env = "WEBCHAT_SERVICE_KEYS", hide_env_values = true)]
    pub service_keys: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "WEBCHAT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Attachments (contract §12).
    #[command(flatten)]
    pub attachments: AttachmentSettings,

    /// Webhooks and Web Push (contract §13).
    #[command(flatten)]
    pub webhooks: WebhookSettings,
}

/// Webhooks and Web Push for offline users (contract §13).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookSettings {
    /// Seconds a stored message waits, unconfirmed by a user with no socket anywhere, before
    /// `message.offline` goes to webhooks and the user's push subscriptions.
    #[arg(long, env = "WEBCHAT_OFFLINE_NOTIFY_SECS", default_value_t = 10)]
    pub offline_notify_secs: u64,

    /// The VAPID private key (base64url, 32 bytes) that signs Web Push requests. Unset: one
    /// is shared through Redis (if configured) or kept in the data dir.
    #[arg(long, env = "WEBCHAT_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<String>,

    /// The VAPID `sub` claim: a `mailto:` or https URL push services may contact.
    #[arg(
        long,
        env = "WEBCHAT_VAPID_SUBJECT",
        default_value = "mailto:webchat@localhost"
    )]
    pub vapid_subject: String,

    /// Allow http and loopback, private and link-local webhook and push targets
    /// (development and tests only: the server could then be aimed at its own network).
    #[arg(long, env = "WEBCHAT_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_allow_private: bool,

    /// Delay before the first retry of a failed call, in milliseconds; doubled for each
    /// retry after it (with jitter).
    #[arg(long, env = "WEBCHAT_WEBHOOK_RETRY_BASE_MS", default_value_t = 10_000)]
    pub webhook_retry_base_ms: u64,

    /// Longest delay between two attempts of a call, in milliseconds.
    #[arg(
        long,
        env = "WEBCHAT_WEBHOOK_RETRY_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_retry_max_ms: u64,

    /// How long a failing call is retried, in hours (then it is dropped and counted).
    #[arg(long, env = "WEBCHAT_WEBHOOK_RETRY_HOURS", default_value_t = 24)]
    pub webhook_retry_hours: u64,

    /// Calls one node makes at once to one webhook endpoint (or one push service origin).
    #[arg(long, env = "WEBCHAT_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    pub webhook_concurrency: usize,

    /// Timeout of one webhook or push call, in milliseconds.
    #[arg(long, env = "WEBCHAT_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
}

impl WebhookSettings {
    /// The retry and concurrency rules.
    pub fn delivery_policy(&self) -> crate::webhooks::DeliveryPolicy {
        crate::webhooks::DeliveryPolicy {
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(1)),
            retry_max: Duration::from_millis(
                self.webhook_retry_max_ms
                    .max(self.webhook_retry_base_ms.max(1)),
            ),
            retry_window: Duration::from_secs(self.webhook_retry_hours.saturating_mul(3600)),
            per_endpoint: self.webhook_concurrency.max(1),
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            offline_after: Duration::from_secs(self.offline_notify_secs),
        }
    }
}

/// Where attachments are kept and how large they may be (contract §12).
#[derive(Debug, Clone, clap::Args)]
pub struct AttachmentSettings {
    /// Largest attachment, in bytes; a larger upload is refused with 413 while it streams.
    #[arg(long, env = "WEBCHAT_MAX_ATTACHMENT_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_attachment_bytes: u64,

    /// S3-compatible endpoint for attachment bytes (e.g. `http://127.0.0.1:8333`); with
    /// `--s3-bucket`. Credentials and region come from the usual AWS variables. Unset: the
    /// data dir holds them (one node only, unless the dir is shared).
    #[arg(long, env = "WEBCHAT_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,

    /// The bucket attachments go to (created on start when missing).
    #[arg(long, env = "WEBCHAT_S3_BUCKET", requires = "s3_endpoint")]
    pub s3_bucket: Option<String>,

    /// Uploads never sent in a message are deleted after this many seconds.
    #[arg(long, env = "WEBCHAT_ATTACHMENT_ORPHAN_SECS", default_value_t = 24 * 3600)]
    pub attachment_orphan_secs: u64,

    /// How often each node looks for orphaned and expired attachments, in seconds.
    #[arg(long, env = "WEBCHAT_ATTACHMENT_SWEEP_SECS", default_value_t = 3600)]
    pub attachment_sweep_secs: u64,

    /// Largest image (width × height) a thumbnail is made of; a larger one is refused
    /// before it is decoded (a decompression bomb), as is any image needing more than
    /// 4 bytes a pixel of this.
    #[arg(
        long,
        env = "WEBCHAT_ATTACHMENT_MAX_PIXELS",
        default_value_t = 40_000_000
    )]
    pub attachment_max_pixels: u64,
}

impl Settings {
    /// Settings with every default, listening on an ephemeral loopback port (for tests).
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut settings = Self::parse_from(["webchat"]);
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.data_dir = data_dir;
        // Tests send bursts far above a person's typing; the limit's own tests turn it on.
        settings.socket_rate = 0.0;
        // Tests sign up many users from 127.0.0.1; the signup limit's own tests turn it on.
        settings.signup_rate = 0.0;
        // Tests open many sockets from 127.0.0.1; the cap's own tests turn it on.
        settings.max_connections_per_address = 0;
        settings
    }

    /// The password hashing bounds.
    pub fn hash_limits(&self) -> crate::accounts::hashing::HashLimits {
        crate::accounts::hashing::HashLimits {
            workers: self.hash_workers,
            queue: self.hash_queue,
            max_wait: Duration::from_millis(self.hash_wait_ms),
        }
    }

    /// The header timeout as a [`Duration`] (at least 1 ms: hyper takes 0 as "none").
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    /// The body timeout as a [`Duration`].
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms.max(1))
    }

    /// The socket.io handshake timeout as a [`Duration`].
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.max(1))
    }

    /// The ack timeout as a [`Duration`].
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_secs(self.ack_timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::parse_from(["webchat"]);
        assert_eq!(s.listen.port(), 4000);
        assert_eq!(s.auth, AuthMode::Token);
        assert_eq!(s.max_body_bytes, 16 * 1024);
        assert!(s.redis_url.is_none());
        assert_eq!(s.call_log_retention_days, 30);
        assert_eq!(s.webhooks.offline_notify_secs, 10);
        assert!(!s.webhooks.webhook_allow_private);
    }

    #[test]
    fn flags_override_defaults() {
        let s = Settings::parse_from(["webchat", "--auth", "open", "--listen", "127.0.0.1:9"]);
        assert_eq!(s.auth, AuthMode::Open);
        assert_eq!(s.listen.port(), 9);
        let s = Settings::parse_from(["webchat", "--call-log-retention-days", "0"]);
        assert_eq!(s.call_log_retention_days, 0, "0 keeps the call log forever");
    }
}
