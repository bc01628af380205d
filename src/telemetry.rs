//! Logs and metrics. The tracing subscriber and the counter types are `webchat-core`'s
//! (shared with the profile service, re-exported here); this module owns the node's
//! Prometheus counters: the `/metrics` handler only renders [`Metrics`].

use std::fmt::Write;

pub use webchat_core::telemetry::{
    init_tracing, init_tracing_with, init_tracing_with_default, Counter, Gauge, TransportLogs,
    TRANSPORT_LOGGERS,
};

/// A tag for a socket in the logs, to follow one socket through them: the first 8 hex
/// digits of the SHA-256 of its id. Never the id itself: on long-polling a session id is the
/// session's only credential (whoever has it can send and read as its user).
pub fn socket_tag(id: &impl std::fmt::Display) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.to_string().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
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
