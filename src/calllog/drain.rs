//! Moves queued log records into the call-log table, in batches, until shutdown.
//!
//! A batch is acknowledged only after its rows are written; while the table's back-end is
//! down the same batch is retried with backoff, so the queue (and `/metrics`' backlog) grows
//! and drains when the back-end returns. Nothing here is on a chat command's path.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use super::{queue::LogQueue, rows_for};
use crate::storage::table::{Row, SortedTable};
use crate::{storage::StoreError, telemetry::Metrics};

/// Records taken per batch.
const BATCH: usize = 500;
/// Longest pause between retries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Drains `queue` into `table` until `shutdown` is cancelled.
pub async fn run(
    queue: Arc<dyn LogQueue>,
    table: Arc<dyn SortedTable>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let taken = tokio::select! {
            _ = shutdown.cancelled() => return,
            taken = queue.take(BATCH, Duration::from_secs(1)) => taken,
        };
        let batch = match taken {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "call-log queue unreadable; retrying");
                if pause(&shutdown, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        if let Ok(backlog) = queue.backlog().await {
            metrics
                .calllog_backlog
                .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
        if batch.is_empty() {
            continue;
        }
        let records: Vec<_> = batch.iter().map(|q| q.record.clone()).collect();
        let ids: Vec<String> = batch.into_iter().map(|q| q.id).collect();
        // The same batch until it is in: acknowledging a later one first would be fine too
        // (writes are idempotent), but retrying in place keeps the backlog in order.
        loop {
            match write(table.as_ref(), &records).await {
                Ok(()) => break,
                Err(e) => {
                    metrics.calllog_errors.inc();
                    if let Ok(backlog) = queue.backlog().await {
                        metrics
                            .calllog_backlog
                            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
                    }
                    tracing::warn!(error = %e, records = records.len(), "call-log write failed; retrying");
                    if pause(&shutdown, &mut backoff).await {
                        return;
                    }
                }
            }
        }
        backoff = Duration::from_millis(50);
        metrics.calllog_written.add(records.len() as u64);
        if let Err(e) = queue.ack(&ids).await {
            // Not fatal: the records come back and are written again (idempotent rows).
            tracing::warn!(error = %e, "call-log queue ack failed");
        }
    }
}

/// Sleeps for the current backoff (doubling it); true when shutting down.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// Writes the rows of `records`: plain rows in one batch call, then the versioned rows (the
/// newest of each key) in another.
pub async fn write(
    table: &dyn SortedTable,
    records: &[super::LogRecord],
) -> Result<(), StoreError> {
    let rows = rows_for(records);
    table.put_rows(rows.plain).await?;
    table
        .put_rows_if_newer(newest_of_each_key(rows.versioned))
        .await
}

/// Only the newest version of each key: a busy conversation's summary row is written once
/// per batch instead of once per message (the older writes would be refused anyway).
fn newest_of_each_key(rows: Vec<(Row, &'static str)>) -> Vec<(Row, &'static str)> {
    let mut newest: HashMap<(String, String), (Row, &'static str)> = HashMap::new();
    for (row, version) in rows {
        let key = (row.pk.clone(), row.sk.clone());
        match newest.get(&key) {
            Some((kept, _)) if kept.int(version) > row.int(version) => {}
            _ => {
                newest.insert(key, (row, version));
            }
        }
    }
    newest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_newest_version_of_each_key() {
        let rows = vec![
            (Row::new("v#a", "p").with("at", 3), "at"),
            (Row::new("v#a", "p").with("at", 9), "at"),
            (Row::new("v#a", "p").with("at", 5), "at"),
            (Row::new("v#b", "p").with("at", 1), "at"),
        ];
        let mut kept: Vec<(String, Option<i64>)> = newest_of_each_key(rows)
            .into_iter()
            .map(|(r, v)| (r.pk.clone(), r.int(v)))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [("v#a".to_owned(), Some(9)), ("v#b".to_owned(), Some(1))]
        );
    }
}
