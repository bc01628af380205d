//! Receipt state in Redis: `wc:{sender}:rc:<gid or ->:<MsgID>` (hash, field `n`) and
//! `wc:{sender}:rd:<gid or ->:<MsgID>` (set of readers who displayed it); for 1:1 messages
//! also `wc:{sender}:to:<reader>:-:<MsgID>` (string, set when the message is sent to that
//! reader, which a receipt needs).

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{HashesInterface, KeysInterface},
    types::{scripts::Script, Expiration, Value},
};

use super::{ReceiptKey, ReceiptStore};
use crate::{
    domain::{ReceiptKind, UserId},
    storage::{
        redis::{unavailable, user_key},
        StoreError,
    },
};

const RECORD_LUA: &str = include_str!("record.lua");

/// [`ReceiptStore`] over Redis.
pub struct RedisReceiptStore {
    pool: Pool,
    record: Script,
    ttl_secs: i64,
    displayed_ttl_secs: i64,
}

impl RedisReceiptStore {
    /// A store over `pool`; state is forgotten `ttl_secs` after the last change, and a 1:1
    /// message's sent-to marker `displayed_ttl_secs` after its reader displayed it (if that
    /// is sooner).
    pub fn new(pool: Pool, ttl_secs: u64, displayed_ttl_secs: u64) -> Self {
        let secs = |s: u64| i64::try_from(s.max(1)).unwrap_or(i64::MAX);
        Self {
            pool,
            record: Script::from_lua(RECORD_LUA),
            ttl_secs: secs(ttl_secs),
            displayed_ttl_secs: secs(displayed_ttl_secs),
        }
    }
}

fn keys(key: &ReceiptKey) -> (String, String) {
    let sender = key.sender.as_str();
    let suffix = key.suffix();
    (
        user_key(sender, &format!("rc:{suffix}")),
        user_key(sender, &format!("rd:{suffix}")),
    )
}

/// The marker that `key.sender` sent the 1:1 message to `reader`.
fn sent_key(key: &ReceiptKey, reader: &UserId) -> String {
    user_key(
        key.sender.as_str(),
        &format!("to:{reader}:{}", key.suffix()),
    )
}

#[async_trait]
impl ReceiptStore for RedisReceiptStore {
    async fn note_sent(&self, key: &ReceiptKey, reader: &UserId) -> Result<(), StoreError> {
        let _: Value = self
            .pool
            .next()
            .set(
                sent_key(key, reader),
                1,
                Some(Expiration::EX(self.ttl_secs)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn note_rider(&self, key: &ReceiptKey, reader: &UserId) -> Option<crate::inbox::Rider> {
        Some(crate::inbox::Rider::SetIfAbsent {
            key: sent_key(key, reader),
            value: "1".into(),
            ttl_secs: u64::try_from(self.ttl_secs).unwrap_or(u64::MAX),
        })
    }

    async fn expect(&self, key: &ReceiptKey, recipients: u32) -> Result<(), StoreError> {
        let (count, _) = keys(key);
        let client = self.pool.next();
        let _: i64 = client
            .hset(&count, ("n", i64::from(recipients)))
            .await
            .map_err(unavailable)?;
        let _: bool = client
            .expire(&count, self.ttl_secs, None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn record(
        &self,
        key: &ReceiptKey,
        reader: &UserId,
        kind: ReceiptKind,
        recipients_if_unknown: u32,
    ) -> Result<Option<u32>, StoreError> {
        let (count, displayed) = keys(key);
        let mut script_keys = vec![count, displayed];
        if key.group.is_none() {
            script_keys.push(sent_key(key, reader));
        }
        let args: Vec<Value> = vec![
            reader.as_str().into(),
            kind.as_str().into(),
            i64::from(recipients_if_unknown).into(),
            self.ttl_secs.into(),
            self.displayed_ttl_secs.into(),
        ];
        let unread: i64 = self
            .record
            .evalsha_with_reload(self.pool.next(), script_keys, args)
            .await
            .map_err(unavailable)?;
        Ok((unread >= 0).then(|| u32::try_from(unread).unwrap_or(0)))
    }
}
