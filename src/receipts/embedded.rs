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

    async fn update<T: Send + 'static>(
        &self,
        key: &ReceiptKey,
        change: impl FnOnce(&mut State) -> T + Send + 'static,
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
                    let out = change(&mut state);
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
        self.update(key, move |state| state.recipients = Some(recipients))
            .await
    }

    async fn record(
        &self,
        key: &ReceiptKey,
        reader: &UserId,
        kind: ReceiptKind,
        recipients_if_unknown: u32,
    ) -> Result<u32, StoreError> {
        let reader = reader.to_string();
        self.update(key, move |state| {
            if kind == ReceiptKind::Display {
                state.displayed.insert(reader);
            }
            let recipients = state.recipients.unwrap_or(recipients_if_unknown);
            let shown = u32::try_from(state.displayed.len()).unwrap_or(u32::MAX);
            recipients.saturating_sub(shown)
        })
        .await
    }
}
