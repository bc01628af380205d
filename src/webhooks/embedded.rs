//! [`WebhookStore`] in the embedded database (one node). The queue is two tables, jobs by
//! id and ids by due time, changed together in one transaction; a claim moves each due job
//! a lease ahead in the same transaction that reads it.

use async_trait::async_trait;

use super::{Endpoint, Job, Subscription, WebhookStore};
use crate::storage::{
    embedded::{
        internal, EmbeddedDb, ReadableTable, ReadableTableMetadata, PUSH_SUBSCRIPTIONS,
        WEBHOOK_DUE, WEBHOOK_ENDPOINTS, WEBHOOK_JOBS,
    },
    StoreError,
};

/// The embedded registry, subscriptions and queue.
pub struct EmbeddedWebhookStore {
    db: EmbeddedDb,
}

impl EmbeddedWebhookStore {
    /// The store in `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(internal)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::error!(error = %e, "undecodable webhook record skipped");
            None
        }
    }
}

#[async_trait]
impl WebhookStore for EmbeddedWebhookStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let id = endpoint.id.clone();
        let json = encode(endpoint)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_ENDPOINTS).map_err(internal)?;
                    table
                        .insert(id.as_str(), json.as_slice())
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.db
            .read(|txn| {
                let table = txn.open_table(WEBHOOK_ENDPOINTS).map_err(internal)?;
                let mut out = Vec::new();
                for entry in table.iter().map_err(internal)? {
                    let (_, value) = entry.map_err(internal)?;
                    out.extend(decode(value.value()));
                }
                Ok(out)
            })
            .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let id = id.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(WEBHOOK_ENDPOINTS).map_err(internal)?;
                let found = table.get(id.as_str()).map_err(internal)?;
                Ok(found.and_then(|v| decode(v.value())))
            })
            .await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_ENDPOINTS).map_err(internal)?;
                    let removed = table.remove(id.as_str()).map_err(internal)?.is_some();
                    Ok(removed)
                },
                |_| {},
            )
            .await
    }

    async fn put_subscription(&self, uid: &str, sub: &Subscription) -> Result<(), StoreError> {
        let (uid, endpoint) = (uid.to_owned(), sub.endpoint.clone());
        let json = encode(sub)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(internal)?;
                    table
                        .insert((uid.as_str(), endpoint.as_str()), json.as_slice())
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn subscriptions(&self, uid: &str) -> Result<Vec<Subscription>, StoreError> {
        let uid = uid.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(internal)?;
                let mut out = Vec::new();
                // Every (uid, endpoint) key: endpoints sort after "" and before any text
                // starting with U+10FFFF.
                let range = table
                    .range((uid.as_str(), "")..(uid.as_str(), "\u{10ffff}"))
                    .map_err(internal)?;
                for entry in range {
                    let (_, value) = entry.map_err(internal)?;
                    out.extend(decode(value.value()));
                }
                Ok(out)
            })
            .await
    }

    async fn push_ever_used(&self) -> Result<bool, StoreError> {
        // One node: the table itself says whether a subscription exists now.
        self.db
            .read(|txn| {
                let table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(internal)?;
                let any = table.first().map_err(internal)?.is_some();
                Ok(any)
            })
            .await
    }

    async fn delete_subscription(&self, uid: &str, endpoint: &str) -> Result<bool, StoreError> {
        let (uid, endpoint) = (uid.to_owned(), endpoint.to_owned());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(internal)?;
                    let removed = table
                        .remove((uid.as_str(), endpoint.as_str()))
                        .map_err(internal)?
                        .is_some();
                    Ok(removed)
                },
                |_| {},
            )
            .await
    }

    async fn schedule(&self, jobs: &[(Job, i64)]) -> Result<(), StoreError> {
        let encoded = jobs
            .iter()
            .map(|(job, due)| Ok((job.id.clone(), *due, encode(job)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
                    let mut due_table = txn.open_table(WEBHOOK_DUE).map_err(internal)?;
                    for (id, due, json) in &encoded {
                        if table.get(id.as_str()).map_err(internal)?.is_some() {
                            continue;
                        }
                        table
                            .insert(id.as_str(), (*due, json.as_slice()))
                            .map_err(internal)?;
                        due_table
                            .insert((*due, id.as_str()), ())
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn claim(&self, now: i64, lease_ms: i64, max: usize) -> Result<Vec<Job>, StoreError> {
        // Workers poll several times a second: a read first, so an idle node commits (and
        // fsyncs) nothing.
        let any_due = self
            .db
            .read(move |txn| {
                let due_table = txn.open_table(WEBHOOK_DUE).map_err(internal)?;
                let first = due_table.first().map_err(internal)?;
                Ok(first.is_some_and(|(key, _)| key.value().0 <= now))
            })
            .await?;
        if !any_due || max == 0 {
            return Ok(Vec::new());
        }
        let leased_until = now.saturating_add(lease_ms);
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
                    let mut due_table = txn.open_table(WEBHOOK_DUE).map_err(internal)?;
                    let mut due = Vec::new();
                    for entry in due_table
                        .range((i64::MIN, "")..=(now, "\u{10ffff}"))
                        .map_err(internal)?
                        .take(max)
                    {
                        let (key, _) = entry.map_err(internal)?;
                        let (at, id) = key.value();
                        due.push((at, id.to_owned()));
                    }
                    let mut jobs = Vec::new();
                    for (at, id) in due {
                        due_table.remove((at, id.as_str())).map_err(internal)?;
                        let json = match table.get(id.as_str()).map_err(internal)? {
                            Some(value) => value.value().1.to_vec(),
                            None => continue,
                        };
                        let Some(job) = decode::<Job>(&json) else {
                            table.remove(id.as_str()).map_err(internal)?;
                            continue;
                        };
                        table
                            .insert(id.as_str(), (leased_until, json.as_slice()))
                            .map_err(internal)?;
                        due_table
                            .insert((leased_until, id.as_str()), ())
                            .map_err(internal)?;
                        jobs.push(job);
                    }
                    Ok(jobs)
                },
                |_| {},
            )
            .await
    }

    async fn reschedule(&self, job: &Job, due: i64) -> Result<(), StoreError> {
        let id = job.id.clone();
        let json = encode(job)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
                    let mut due_table = txn.open_table(WEBHOOK_DUE).map_err(internal)?;
                    let old = table
                        .get(id.as_str())
                        .map_err(internal)?
                        .map(|v| v.value().0);
                    if let Some(old) = old {
                        due_table.remove((old, id.as_str())).map_err(internal)?;
                    }
                    table
                        .insert(id.as_str(), (due, json.as_slice()))
                        .map_err(internal)?;
                    due_table.insert((due, id.as_str()), ()).map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn finish(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
                    let mut due_table = txn.open_table(WEBHOOK_DUE).map_err(internal)?;
                    let old = table
                        .remove(id.as_str())
                        .map_err(internal)?
                        .map(|v| v.value().0);
                    if let Some(old) = old {
                        due_table.remove((old, id.as_str())).map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn queued(&self) -> Result<u64, StoreError> {
        self.db
            .read(|txn| {
                let table = txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
                table.len().map_err(internal)
            })
            .await
    }
}
