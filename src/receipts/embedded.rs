//! Receipt state in the embedded store: `<sender>\0<gid or ->:<MsgID>` → JSON state.

use std::collections::BTreeSet;

use async_trait::async_trait;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{ReceiptKey, ReceiptStore};
use crate::{
    domain::{now_millis, ReceiptKind, UserId},
    storage::{
        embedded::{internal, EmbeddedDb, RECEIPTS},
        StoreError,
    },
};

#[derive(Default, Serialize, Deserialize)]
struct State {
    recipients: Option<u32>,
    displayed: BTreeSet<String>,
    /// 1:1: who the message was sent to (the readers whose receipts count).
    #[serde(default)]
    sent_to: BTreeSet<String>,
    /// Unix ms of the last change, for the sweep.
    #[serde(default)]
    changed_at: i64,
}

/// [`ReceiptStore`] over the embedded database.
pub struct EmbeddedReceiptStore {
    db: EmbeddedDb,
}

impl EmbeddedReceiptStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }

    /// Applies `change` to `key`'s state; it returns its result and whether to save.
    async fn update<T: Send + 'static>(
        &self,
        key: &ReceiptKey,
        change: impl FnOnce(&mut State) -> (T, bool) + Send + 'static,
    ) -> Result<T, StoreError> {
        let key = format!("{}\u{0}{}", key.sender, key.suffix());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(RECEIPTS).map_err(internal)?;
                    let mut state: State = match table.get(key.as_str()).map_err(internal)? {
                        Some(raw) => serde_json::from_slice(raw.value()).map_err(internal)?,
                        None => State::default(),
                    };
                    let (out, save) = change(&mut state);
                    if !save {
                        return Ok(out);
                    }
                    state.changed_at = now_millis();
                    let json = serde_json::to_vec(&state).map_err(internal)?;
                    table
                        .insert(key.as_str(), json.as_slice())
                        .map_err(internal)?;
                    Ok(out)
                },
                |_| {},
            )
            .await
    }
}

impl EmbeddedReceiptStore {
    /// Forgets the state of messages unchanged for `max_age_secs` (Redis expires it itself).
    pub async fn sweep_older_than(&self, max_age_secs: u64) -> Result<(), StoreError> {
        let max_age_ms = i64::try_from(max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(RECEIPTS).map_err(internal)?;
                    let cutoff = now_millis().saturating_sub(max_age_ms);
                    table
                        .retain(|_, raw| {
                            serde_json::from_slice::<State>(raw)
                                .map(|s| s.changed_at >= cutoff)
                                .unwrap_or(false)
                        })
                        .map_err(internal)
                },
                |_| {},
            )
            .await
    }
}

#[async_trait]
impl ReceiptStore for EmbeddedReceiptStore {
    async fn expect(&self, key: &ReceiptKey, recipients: u32) -> Result<(), StoreError> {
        self.update(key, move |state| {
            state.recipients = Some(recipients);
            ((), true)
        })
        .await
    }

    async fn note_sent(&self, key: &ReceiptKey, reader: &UserId) -> Result<(), StoreError> {
        let reader = reader.to_string();
        self.update(key, move |state| {
            state.sent_to.insert(reader);
            ((), true)
        })
        .await
    }

    async fn record(
        &self,
        key: &ReceiptKey,
        reader: &UserId,
        kind: ReceiptKind,
        recipients_if_unknown: u32,
    ) -> Result<Option<u32>, StoreError> {
        let reader = reader.to_string();
        let direct = key.group.is_none();
        self.update(key, move |state| {
            if direct && !state.sent_to.contains(&reader) {
                return (None, false);
            }
            if kind == ReceiptKind::Display {
                state.displayed.insert(reader);
            }
            let recipients = state.recipients.unwrap_or(recipients_if_unknown);
            let shown = u32::try_from(state.displayed.len()).unwrap_or(u32::MAX);
            (Some(recipients.saturating_sub(shown)), true)
        })
        .await
    }
}
