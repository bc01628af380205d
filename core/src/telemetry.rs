//! Logs and counters both binaries share: the tracing subscriber (with the transport crates'
//! debug lines capped, they carry credentials) and the Prometheus counter and gauge.
//!
//! The counters are plain atomics rendered in Prometheus text format by each binary's
//! `Metrics`: the handful we need does not justify a metrics framework.

use std::{
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
}
