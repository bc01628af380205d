//! Receipt state: who has displayed which message, for the `Unread` count on receipts.
//!
//! Owns the [`ReceiptStore`] trait and its embedded and Redis implementations. A message's
//! state lives under its sender (in Redis, in the sender's hash slot): how many recipients it
//! had when sent, and the set of recipients who displayed it. A reader is counted once
//! however many displays it sends, and `Unread` never goes below zero.
//!
//! A 1:1 message is also noted with its recipient when it is sent, and a 1:1 receipt is
//! recorded only from that recipient: nobody can report reading a message they were not sent.

mod embedded;
mod redis;

use async_trait::async_trait;

pub use self::embedded::EmbeddedReceiptStore;
pub use self::redis::RedisReceiptStore;
use crate::{
    domain::{GroupId, MsgId, ReceiptKind, UserId},
    storage::StoreError,
};

/// Names one sent message.
#[derive(Debug, Clone)]
pub struct ReceiptKey {
    /// Who sent it.
    pub sender: UserId,
    /// The group it went to; `None` for 1:1.
    pub group: Option<GroupId>,
    /// Its MsgID.
    pub msg_id: MsgId,
}

impl ReceiptKey {
    /// The part of a storage key after the sender: `<gid or ->:<MsgID>`.
    pub fn suffix(&self) -> String {
        let scope = self.group.as_ref().map_or("-", GroupId::as_str);
        format!("{scope}:{}", self.msg_id)
    }
}

/// Where receipt state is kept (for the inbox age bound, then forgotten).
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Notes how many recipients (the sender excluded) a message had when it was sent.
    async fn expect(&self, key: &ReceiptKey, recipients: u32) -> Result<(), StoreError>;

    /// Notes that `key.sender` sent the 1:1 message `key.msg_id` to `reader`, who may then
    /// send receipts for it (kept as long as the rest of the receipt state).
    async fn note_sent(&self, key: &ReceiptKey, reader: &UserId) -> Result<(), StoreError>;

    /// [`ReceiptStore::note_sent`] as a rider an inbox append can carry (see
    /// [`crate::inbox::Rider`]), where this store can describe it; `None` otherwise.
    fn note_rider(&self, _key: &ReceiptKey, _reader: &UserId) -> Option<crate::inbox::Rider> {
        None
    }

    /// Records `reader`'s receipt and returns how many recipients have not displayed the
    /// message. `recipients_if_unknown` stands in for a message whose count was not noted.
    /// For a 1:1 message (`key.group` is `None`) not noted as sent to `reader`, records
    /// nothing and returns `None`.
    async fn record(
        &self,
        key: &ReceiptKey,
        reader: &UserId,
        kind: ReceiptKind,
        recipients_if_unknown: u32,
    ) -> Result<Option<u32>, StoreError>;
}
