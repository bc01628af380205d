//! Logs and metrics. Owns the tracing subscriber and the node's Prometheus counters; the
//! `/metrics` handler only renders [`Metrics`].
//!
//! The counters are plain atomics rendered in Prometheus text format: the handful we need
//! does not justify a metrics framework.

use std::{
    fmt::Write,
    io::IsTerminal,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
};

use tracing::{Level, Metadata};
use tracing_subscriber::{
    filter::{filter_fn, FilterExt},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

/// Whether third-party transport crates may log below `info` (see [`TRANSPORT_LOGGERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportLogs {
    /// At most `info`, whatever `RUST_LOG` says (the default).
    Capped,
    /// As `RUST_LOG` says: their debug and trace lines carry tokens, session ids and message
    /// bodies (`--unsafe-transport-logs`, for debugging a transport on a test system).
    Unsafe,
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), to stderr, `json` or
/// text, transport crates capped at `info`. Safe to call twice (the second call is ignored),
/// which tests rely on.
pub fn init_tracing(format: &str) {
    init_tracing_with(format, "info", TransportLogs::Capped);
}

/// Crates that carry the transport and log what passes through it below `info`:
/// socketioxide and engineioxide every packet (the CONNECT packet's `auth`, the bearer token,
/// included, and every message Body) and session ids, which on long-polling are the
/// session's only credential; tungstenite whole websocket frames at trace; hyper, h2 and
/// tower-http requests and bodies; fred the Redis commands (message bodies, token ids);
/// the AWS SDK and reqwest their requests. Their debug and trace lines are dropped unless
/// [`TransportLogs::Unsafe`], whatever `RUST_LOG` says: a `RUST_LOG=trace` set to debug
/// something else must not write credentials to the log.
pub const TRANSPORT_LOGGERS: &[&str] = &[
    "socketioxide",
    "engineioxide",
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "h2",
    "tower",
    "axum",
    "fred",
    "redis_protocol",
    "reqwest",
    "rustls",
    "aws",
];

/// Whether a line of `target` at `level` may be written with transport logs capped. A name
/// in [`TRANSPORT_LOGGERS`] covers its companion crates too (`engineioxide_core`,
/// `hyper_util`, `tower_http`, `aws_smithy_runtime`…).
fn allowed_when_capped(target: &str, level: &Level) -> bool {
    // Levels compare by verbosity: DEBUG and TRACE are "greater" than INFO.
    if *level <= Level::INFO {
        return true;
    }
    let crate_name = target.split("::").next().unwrap_or(target);
    !TRANSPORT_LOGGERS.iter().any(|name| {
        crate_name
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
    })
}

/// The filter directives: `RUST_LOG`, or `default_filter` when it is unset or blank.
fn filter_directives(rust_log: Option<&str>, default_filter: &str) -> String {
    rust_log
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(default_filter)
        .to_owned()
}

/// [`init_tracing`] with another filter when `RUST_LOG` is unset (tests use `warn`).
pub fn init_tracing_with_default(format: &str, default_filter: &str) {
    init_tracing_with(format, default_filter, TransportLogs::Capped);
}

/// [`init_tracing`] with another default filter and a choice of [`TransportLogs`].
pub fn init_tracing_with(format: &str, default_filter: &str, transport: TransportLogs) {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = EnvFilter::try_new(filter_directives(rust_log.as_deref(), default_filter))
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let capped = transport == TransportLogs::Capped;
    let cap = filter_fn(move |meta: &Metadata<'_>| {
        !capped || allowed_when_capped(meta.target(), meta.level())
    });
    // Colours only on a terminal: in a file or a log collector they are noise.
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    let _ = if format == "json" {
        registry
            .with(layer.json().with_filter(filter.and(cap)))
            .try_init()
    } else {
        registry.with(layer.with_filter(filter.and(cap))).try_init()
    };
    if !capped {
        tracing::warn!("--unsafe-transport-logs: transport crates log at the level RUST_LOG gives; their debug and trace lines carry tokens, session ids and message bodies");
    }
}

/// A tag for a socket in the logs, to follow one socket through them: the first 8 hex
/// digits of the SHA-256 of its id. Never the id itself: on long-polling a session id is the
/// session's only credential (whoever has it can send and read as its user).
pub fn socket_tag(id: &impl std::fmt::Display) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.to_string().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Replaces the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every metric this node exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sockets currently connected (authenticated).
    pub connections: Gauge,
    /// `chat` events received from clients.
    pub events_in: Counter,
    /// `chat` events emitted to clients.
    pub events_out: Counter,
    /// Events stored in an inbox.
    pub inbox_appended: Counter,
    /// Sends acknowledged again without storing (idempotent re-sends).
    pub duplicates: Counter,
    /// Events re-sent from an inbox on connect or resync.
    pub replayed: Counter,
    /// Live stored events that arrived after a gap in Seq (an earlier one's publish was
    /// lost), so the inbox was read first.
    pub live_gaps: Counter,
    /// Client acks of stored events.
    pub acks: Counter,
    /// Large member lists stored once for a fan-out's inbox entries (`inbox::shared_body`).
    pub shared_bodies_stored: Counter,
    /// Shared member lists this node found missing from the store (each counted once per
    /// node; their events got a rebuilt or empty Body).
    pub shared_bodies_missing: Counter,
    /// Error acks/events sent, any code.
    pub errors: Counter,
    /// Sockets disconnected because they could not keep up.
    pub slow_consumers: Counter,
    /// Sockets that hung up between the connect middleware and the connect handler, released
    /// by the sweep.
    pub abandoned_connects: Counter,
    /// Stored events emitted to sockets of this node whose acks were not collected yet (a
    /// socket collects its acks every few seconds, see `gateway::delivery`).
    pub unacked: Gauge,
    /// Inbox depth seen at connect: unconfirmed events found, summed over connects.
    pub inbox_depth_at_connect_sum: Counter,
    /// Connects whose inbox was read (the count for the sum above).
    pub inbox_depth_at_connect_count: Counter,
    /// Call-log records written to the call-log table by this node.
    pub calllog_written: Counter,
    /// Failed call-log batch writes (each is retried).
    pub calllog_errors: Counter,
    /// Call-log records queued and not yet written (all nodes), as last seen.
    pub calllog_backlog: Gauge,
    /// Password hashes (signup, login) refused because the hashing queue was full or the
    /// wait for a hashing thread passed its deadline (`accounts::hashing`).
    pub hashes_refused: Counter,
    /// Call-log rows this node deleted for being older than the retention bound (Redis as the
    /// call-log table).
    pub calllog_trimmed: Counter,
    /// Webhook calls queued by this node (one per event and endpoint).
    pub webhook_queued: Counter,
    /// Webhook calls answered 2xx.
    pub webhook_delivered: Counter,
    /// Failed webhook calls rescheduled (each retry counts).
    pub webhook_retried: Counter,
    /// Webhook calls given up (retry window over, or the endpoint deleted).
    pub webhook_dropped: Counter,
    /// Web Push messages queued by this node (one per notice and subscription).
    pub push_queued: Counter,
    /// Web Push messages the push service accepted.
    pub push_delivered: Counter,
    /// Failed Web Push messages rescheduled.
    pub push_retried: Counter,
    /// Web Push messages given up.
    pub push_dropped: Counter,
    /// Push subscriptions removed because the push service answered 404 or 410.
    pub push_subscriptions_removed: Counter,
    /// Webhook and push jobs queued on every node, as last seen.
    pub webhook_backlog: Gauge,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: i128| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "webchat_connections",
            "gauge",
            "Sockets currently connected and authenticated.",
            self.connections.get().into(),
        );
        metric(
            "webchat_unacked_events",
            "gauge",
            "Stored events emitted by this node whose acks were not collected yet (every 5 s).",
            self.unacked.get().into(),
        );
        metric(
            "webchat_calllog_backlog",
            "gauge",
            "Call-log records queued and not yet written to the call-log table.",
            self.calllog_backlog.get().into(),
        );
        metric(
            "webchat_webhook_backlog",
            "gauge",
            "Webhook and push jobs queued (every node's), including retries waiting.",
            self.webhook_backlog.get().into(),
        );
        let counters: [(&str, &str, &Counter); 27] = [
            (
                "webchat_events_in_total",
                "chat events received from clients.",
                &self.events_in,
            ),
            (
                "webchat_events_out_total",
                "chat events emitted to clients.",
                &self.events_out,
            ),
            (
                "webchat_inbox_appended_total",
                "Events stored in an inbox.",
                &self.inbox_appended,
            ),
            (
                "webchat_duplicates_total",
                "Idempotent re-sends acknowledged without storing.",
                &self.duplicates,
            ),
            (
                "webchat_replayed_total",
                "Inbox events re-sent on connect or resync.",
                &self.replayed,
            ),
            (
                "webchat_live_gaps_total",
                "Live events that revealed a lost earlier publish (the inbox was read first).",
                &self.live_gaps,
            ),
            (
                "webchat_shared_bodies_stored_total",
                "Large member lists stored once for all of a fan-out's inbox entries.",
                &self.shared_bodies_stored,
            ),
            (
                "webchat_shared_bodies_missing_total",
                "Shared member lists found missing from the store (events sent with a rebuilt or empty Body).",
                &self.shared_bodies_missing,
            ),
            (
                "webchat_acks_total",
                "Client acknowledgements of stored events, counted when collected (every 5 s).",
                &self.acks,
            ),
            (
                "webchat_errors_total",
                "Errors returned to clients.",
                &self.errors,
            ),
            (
                "webchat_slow_consumers_total",
                "Sockets disconnected for not keeping up.",
                &self.slow_consumers,
            ),
            (
                "webchat_abandoned_connects_total",
                "Sockets that hung up while connecting, released by the sweep.",
                &self.abandoned_connects,
            ),
            (
                "webchat_inbox_depth_at_connect_sum",
                "Unconfirmed inbox events found at connect, summed over connects.",
                &self.inbox_depth_at_connect_sum,
            ),
            (
                "webchat_inbox_depth_at_connect_count",
                "Connects whose inbox was read.",
                &self.inbox_depth_at_connect_count,
            ),
            (
                "webchat_calllog_written_total",
                "call-log records written to the call-log table.",
                &self.calllog_written,
            ),
            (
                "webchat_calllog_errors_total",
                "failed call-log batch writes (retried).",
                &self.calllog_errors,
            ),
            (
                "webchat_hashes_refused_total",
                "Password hashes refused for capacity (hashing queue full or deadline passed).",
                &self.hashes_refused,
            ),
            (
                "webchat_calllog_trimmed_total",
                "call-log rows deleted from Redis for being older than the retention bound.",
                &self.calllog_trimmed,
            ),
            (
                "webchat_webhook_queued_total",
                "Webhook calls queued (one per event and endpoint).",
                &self.webhook_queued,
            ),
            (
                "webchat_webhook_delivered_total",
                "Webhook calls answered 2xx.",
                &self.webhook_delivered,
            ),
            (
                "webchat_webhook_retried_total",
                "Failed webhook calls rescheduled with backoff.",
                &self.webhook_retried,
            ),
            (
                "webchat_webhook_dropped_total",
                "Webhook calls given up (retry window over, or endpoint deleted).",
                &self.webhook_dropped,
            ),
            (
                "webchat_push_queued_total",
                "Web Push messages queued (one per notice and subscription).",
                &self.push_queued,
            ),
            (
                "webchat_push_delivered_total",
                "Web Push messages accepted by the push service.",
                &self.push_delivered,
            ),
            (
                "webchat_push_retried_total",
                "Failed Web Push messages rescheduled with backoff.",
                &self.push_retried,
            ),
            (
                "webchat_push_dropped_total",
                "Web Push messages given up.",
                &self.push_dropped,
            ),
            (
                "webchat_push_subscriptions_removed_total",
                "Push subscriptions removed after a 404 or 410 from the push service.",
                &self.push_subscriptions_removed,
            ),
        ];
        for (name, help, counter) in counters {
            metric(name, "counter", help, counter.get().into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_crates_are_capped_at_info_and_the_rest_follows_rust_log() {
        for target in [
            "socketioxide::socket",
            "engineioxide",
            "tungstenite::protocol",
            "hyper::proto::h1::io",
            "h2::codec",
            "tower_http::trace::on_request",
            "fred::protocol",
            "engineioxide_core::payload::encoder",
            "socketioxide_core",
            "hyper_util::client",
            "aws_smithy_runtime::client",
        ] {
            assert!(!allowed_when_capped(target, &Level::DEBUG), "{target}");
            assert!(!allowed_when_capped(target, &Level::TRACE), "{target}");
            assert!(allowed_when_capped(target, &Level::INFO), "{target}");
            assert!(allowed_when_capped(target, &Level::WARN), "{target}");
        }
        assert!(allowed_when_capped("webchat::gateway", &Level::TRACE));
        assert!(
            allowed_when_capped("hyperion", &Level::TRACE),
            "a crate, not a prefix"
        );
        assert_eq!(filter_directives(Some("debug"), "warn"), "debug");
        assert_eq!(filter_directives(None, "warn"), "warn");
        assert_eq!(filter_directives(Some(" "), "warn"), "warn");
    }

    #[test]
    fn a_socket_tag_is_stable_short_and_not_the_id() {
        let tag = socket_tag(&"AbCdEfGhIjKlMnOp");
        assert_eq!(tag.len(), 8);
        assert_eq!(tag, socket_tag(&"AbCdEfGhIjKlMnOp"));
        assert_ne!(tag, socket_tag(&"AbCdEfGhIjKlMnOq"));
        assert!(!"AbCdEfGhIjKlMnOp".contains(&tag));
    }

    #[test]
    fn render_is_prometheus_text() {
        let m = Metrics::default();
        m.events_in.add(3);
        m.connections.inc();
        let text = m.render();
        assert!(
            text.contains("# TYPE webchat_events_in_total counter\nwebchat_events_in_total 3\n")
        );
        assert!(text.contains("webchat_connections 1\n"));
    }
}
