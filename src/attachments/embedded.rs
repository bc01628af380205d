//! Attachment records in the embedded database: the record by id, and two indexes by time
//! (uploads never sent, by upload time; sent ones, by their last send) that the sweep reads
//! instead of scanning every record.

use async_trait::async_trait;

use super::{AttachmentStore, Record};
use crate::{
    domain::AttachmentId,
    storage::{
        embedded::{
            internal, EmbeddedDb, ReadableTable, ATTACHMENTS, ATTACHMENTS_SENT, ATTACHMENTS_UNSENT,
        },
        StoreError,
    },
};

/// [`AttachmentStore`] over the embedded database.
pub struct EmbeddedAttachmentStore {
    db: EmbeddedDb,
}

impl EmbeddedAttachmentStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }

    async fn before(
        &self,
        sent: bool,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.db
            .read(move |txn| {
                let table = txn
                    .open_table(if sent {
                        ATTACHMENTS_SENT
                    } else {
                        ATTACHMENTS_UNSENT
                    })
                    .map_err(internal)?;
                let mut ids = Vec::new();
                for entry in table
                    .range((i64::MIN, "")..(cutoff_ms, ""))
                    .map_err(internal)?
                {
                    let (key, _) = entry.map_err(internal)?;
                    if let Ok(id) = AttachmentId::parse(key.value().1) {
                        ids.push(id);
                    }
                    if ids.len() >= limit {
                        break;
                    }
                }
                Ok(ids)
            })
            .await
    }
}

fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

#[async_trait]
impl AttachmentStore for EmbeddedAttachmentStore {
    async fn insert(&self, record: &Record) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record).map_err(internal)?;
        let (id, created) = (record.id.clone(), record.created_at);
        self.db
            .write(
                move |txn| {
                    let mut records = txn.open_table(ATTACHMENTS).map_err(internal)?;
                    records
                        .insert(id.as_str(), json.as_slice())
                        .map_err(internal)?;
                    let mut unsent = txn.open_table(ATTACHMENTS_UNSENT).map_err(internal)?;
                    unsent
                        .insert((created, id.as_str()), ())
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn get(&self, id: &AttachmentId) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.db
            .read(move |txn| {
                let records = txn.open_table(ATTACHMENTS).map_err(internal)?;
                let found = records.get(id.as_str()).map_err(internal)?;
                found.map(|bytes| decode(bytes.value())).transpose()
            })
            .await
    }

    async fn mark_sent(
        &self,
        id: &AttachmentId,
        conversation: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, conversation) = (id.to_string(), conversation.to_owned());
        self.db
            .write(
                move |txn| {
                    let mut records = txn.open_table(ATTACHMENTS).map_err(internal)?;
                    let Some(mut record) = records
                        .get(id.as_str())
                        .map_err(internal)?
                        .map(|bytes| decode(bytes.value()))
                        .transpose()?
                    else {
                        return Ok(false);
                    };
                    let mut sent = txn.open_table(ATTACHMENTS_SENT).map_err(internal)?;
                    if let Some(last) = record.last_sent_at {
                        sent.remove((last, id.as_str())).map_err(internal)?;
                    }
                    let mut unsent = txn.open_table(ATTACHMENTS_UNSENT).map_err(internal)?;
                    unsent
                        .remove((record.created_at, id.as_str()))
                        .map_err(internal)?;
                    let last = record.last_sent_at.map_or(at_ms, |l| l.max(at_ms));
                    record.last_sent_at = Some(last);
                    if !record.sent_to.contains(&conversation) {
                        record.sent_to.push(conversation);
                    }
                    sent.insert((last, id.as_str()), ()).map_err(internal)?;
                    let json = serde_json::to_vec(&record).map_err(internal)?;
                    records
                        .insert(id.as_str(), json.as_slice())
                        .map_err(internal)?;
                    Ok(true)
                },
                |_| {},
            )
            .await
    }

    async fn remove(&self, id: &AttachmentId) -> Result<(), StoreError> {
        let id = id.to_string();
        self.db
            .write(
                move |txn| {
                    let mut records = txn.open_table(ATTACHMENTS).map_err(internal)?;
                    let record = records
                        .remove(id.as_str())
                        .map_err(internal)?
                        .map(|bytes| decode(bytes.value()))
                        .transpose()?;
                    if let Some(record) = record {
                        let mut unsent = txn.open_table(ATTACHMENTS_UNSENT).map_err(internal)?;
                        unsent
                            .remove((record.created_at, id.as_str()))
                            .map_err(internal)?;
                        if let Some(last) = record.last_sent_at {
                            let mut sent = txn.open_table(ATTACHMENTS_SENT).map_err(internal)?;
                            sent.remove((last, id.as_str())).map_err(internal)?;
                        }
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn unsent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.before(false, cutoff_ms, limit).await
    }

    async fn sent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.before(true, cutoff_ms, limit).await
    }
}
