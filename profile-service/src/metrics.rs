//! The service's Prometheus counters (plain atomics shared with the chat server).

use std::fmt::Write;

use webchat_core::telemetry::Counter;

/// Every metric the profile service exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP requests served, any route.
    pub requests: Counter,
    /// Profile reads answered from the Redis cache.
    pub cache_hits: Counter,
    /// Profile reads that went to the store (Redis cache on, key absent).
    pub cache_misses: Counter,
    /// Successful profile updates.
    pub updates: Counter,
    /// Updates whose `wc:profiles` publish failed (the update itself stands).
    pub publish_failures: Counter,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, &Counter); 5] = [
            (
                "webchat_profile_requests_total",
                "HTTP requests served.",
                &self.requests,
            ),
            (
                "webchat_profile_cache_hits_total",
                "Profile reads answered from the Redis cache.",
                &self.cache_hits,
            ),
            (
                "webchat_profile_cache_misses_total",
                "Profile reads that missed the Redis cache.",
                &self.cache_misses,
            ),
            (
                "webchat_profile_updates_total",
                "Successful profile updates.",
                &self.updates,
            ),
            (
                "webchat_profile_publish_failures_total",
                "Updates whose wc:profiles publish failed.",
                &self.publish_failures,
            ),
        ];
        let mut out = String::with_capacity(1024);
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let m = Metrics::default();
        m.cache_hits.add(2);
        let text = m.render();
        assert!(text.contains(
            "# TYPE webchat_profile_cache_hits_total counter\nwebchat_profile_cache_hits_total 2\n"
        ));
        assert!(text.contains("webchat_profile_updates_total 0\n"));
    }
}
