//! Moves queued log records into the call-log table, in batches, until shutdown.
//!
//! A batch is acknowledged only after its rows are written; while the table's back-end is
//! down the same batch is retried with backoff, so the queue (and `/metrics`' backlog) grows
//! and drains when the back-end returns. Nothing here is on a chat command's path.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{queue::LogQueue, rows_for, table::SortedTable};
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

/// Writes the rows of `records`: plain rows in one batch call, versioned rows concurrently.
pub async fn write(
    table: &dyn SortedTable,
    records: &[super::LogRecord],
) -> Result<(), StoreError> {
    let rows = rows_for(records);
    table.put_rows(rows.plain).await?;
    for result in join_all(
        rows.versioned
            .into_iter()
            .map(|(row, version)| table.put_if_newer(row, version)),
    )
    .await
    {
        result?;
    }
    Ok(())
}
