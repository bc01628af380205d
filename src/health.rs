//! Back-end health for `/health`: which store and bus this node uses and whether they answer.

use std::sync::Arc;

use fred::{clients::Pool, interfaces::ClientLike};
use serde::Serialize;

use crate::storage::table::SortedTable;

/// Longest wait for DynamoDB's answer to a health probe.
const DYNAMODB_PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The node's back-ends, for probing.
#[derive(Clone)]
pub enum Health {
    /// Embedded store and in-process bus.
    Embedded,
    /// Redis store and bus.
    Redis(Pool),
    /// One of the above, with DynamoDB holding accounts, groups and the call log.
    WithDynamoDb(Box<Health>, Arc<dyn SortedTable>),
}

/// One back-end's state.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    /// What it is.
    pub kind: &'static str,
    /// Whether it answered.
    pub ok: bool,
    /// Whether the node is unhealthy without it (`/health` answers 503). DynamoDB is not:
    /// connected users keep chatting while it is away (only logins, signups and group changes
    /// wait), and failing every node's check at once would take the whole service out of
    /// its load balancer.
    #[serde(skip)]
    pub required: bool,
    /// Error text when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// Probes every back-end.
    pub async fn check(&self) -> Vec<(&'static str, BackendStatus)> {
        match self {
            Health::WithDynamoDb(base, table) => {
                // Bounded well below a load balancer's check timeout: the SDK's own retries
                // could take 5 s, and an unreachable DynamoDB must not make `/health` itself
                // time out (that would fail every node's check at once).
                let ping = tokio::time::timeout(DYNAMODB_PROBE_PATIENCE, table.ping());
                let (mut statuses, ping) = tokio::join!(Box::pin(base.check()), ping);
                let error = match ping {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {DYNAMODB_PROBE_PATIENCE:?}")),
                };
                statuses.push((
                    "dynamodb",
                    BackendStatus {
                        kind: "dynamodb",
                        ok: error.is_none(),
                        required: false,
                        error,
                    },
                ));
                statuses
            }
            Health::Embedded => vec![
                (
                    "store",
                    BackendStatus {
                        kind: "embedded",
                        ok: true,
                        required: true,
                        error: None,
                    },
                ),
                (
                    "bus",
                    BackendStatus {
                        kind: "in-process",
                        ok: true,
                        required: true,
                        error: None,
                    },
                ),
            ],
            Health::Redis(pool) => {
                let ping: Result<String, _> = pool.next().ping(None).await;
                let status = |kind| match &ping {
                    Ok(_) => BackendStatus {
                        kind,
                        ok: true,
                        required: true,
                        error: None,
                    },
                    Err(e) => BackendStatus {
                        kind,
                        ok: false,
                        required: true,
                        error: Some(e.to_string()),
                    },
                };
                vec![("store", status("redis")), ("bus", status("redis"))]
            }
        }
    }
}
