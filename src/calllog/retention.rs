//! The retention bound of the call log when Redis is its table (Redis without DynamoDB).
//!
//! Redis holds everything in memory, so a call log kept there forever grows with every
//! message (~2.5 KB each) until Redis runs out. With `--call-log-retention-days N` (default
//! 30, 0 = keep forever) a background task on every node deletes rows older than N days:
//! every [`TRIM_EVERY`] the node holding a short lease runs [`RedisTable::trim`], which visits
//! only the partitions that have such rows and deletes them a few hundred per Redis call.
//! A row is deleted within about [`SLACK`] + [`TRIM_EVERY`] of passing the bound. Long-term
//! history belongs in DynamoDB, which keeps the call log with no bound.
//!
//! Rows written again after they were trimmed (the call-log writer is at least once, and a
//! backlog can hold old records) are ordinary old rows: their partition is registered again
//! when they are written and the next trims delete them again.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    storage::{
        redis_table::{RedisTable, TrimBounds, Trimmed},
        StoreError,
    },
    telemetry::Metrics,
};

/// How often a trim runs (on the one node holding the lease).
pub const TRIM_EVERY: Duration = Duration::from_secs(600);
/// How far past the bound a partition's oldest row may get before the partition is visited.
/// A visit deletes everything past the bound, so a busy conversation, whose oldest row passes
/// the bound all the time, is visited once per slack instead of once per trim.
pub const SLACK: Duration = Duration::from_secs(6 * 3600);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The trim bounds at `now_ms` for a retention of `days` (`None`: keep forever).
pub fn bounds(now_ms: i64, days: u32) -> Option<TrimBounds> {
    if days == 0 {
        return None;
    }
    let remove_below = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
    let slack_ms = i64::try_from(SLACK.as_millis()).unwrap_or(i64::MAX);
    Some(TrimBounds {
        visit_below: remove_below.saturating_sub(slack_ms),
        remove_below,
    })
}

/// One trim with `bounds`, counted in `metrics` and logged.
pub async fn trim_once(
    table: &RedisTable,
    bounds: TrimBounds,
    metrics: &Metrics,
) -> Result<Trimmed, StoreError> {
    let started = std::time::Instant::now();
    let trimmed = table.trim(bounds).await?;
    metrics.calllog_trimmed.add(trimmed.rows);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if trimmed.rows > 0 {
        tracing::info!(
            rows = trimmed.rows,
            partitions = trimmed.partitions,
            remove_below_ms = bounds.remove_below,
            elapsed_ms,
            "call-log rows past the retention bound trimmed from Redis"
        );
    } else {
        tracing::debug!(
            partitions = trimmed.partitions,
            remove_below_ms = bounds.remove_below,
            elapsed_ms,
            "call-log retention trim found nothing to delete"
        );
    }
    Ok(trimmed)
}

/// Trims every [`TRIM_EVERY`] (the first time at once) until `shutdown`, on whichever node
/// takes the lease; `days` = 0 returns at once.
pub async fn run(
    table: Arc<RedisTable>,
    days: u32,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if days == 0 {
        return;
    }
    let holder = uuid::Uuid::new_v4().simple().to_string();
    // The lease lasts a little less than the period, so the next tick (here or elsewhere)
    // finds it free.
    let lease_ms = i64::try_from(TRIM_EVERY.as_millis()).unwrap_or(i64::MAX) * 9 / 10;
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(bounds) = bounds(chrono::Utc::now().timestamp_millis(), days) else {
            return;
        };
        let pass = async {
            if table.take_trim_lease(&holder, lease_ms).await? {
                trim_once(&table, bounds, &metrics).await?;
            }
            Ok::<_, StoreError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = pass => if let Err(e) = result {
                // The next period tries again; what was deleted stays deleted.
                tracing::warn!(error = %e, "call-log retention trim failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_keeps_everything() {
        assert_eq!(bounds(1_000_000_000_000, 0), None);
    }

    #[test]
    fn rows_older_than_the_days_go_and_partitions_are_visited_past_the_slack() {
        let now = 1_700_000_000_000;
        let b = bounds(now, 30).expect("bounded");
        assert_eq!(b.remove_below, now - 30 * DAY_MS);
        assert_eq!(b.visit_below, b.remove_below - 6 * 3600 * 1000);
    }

    #[test]
    fn huge_retentions_do_not_overflow() {
        let b = bounds(5, u32::MAX).expect("bounded");
        assert!(b.visit_below <= b.remove_below && b.remove_below < 5);
    }
}
