//! The message index in Redis: one string per message, `wc:lc:{<conv>}:m:<MsgID>` =
//! `<sender>\t<SentAt>[\td]`, and one hash per group, `wc:lc:{g:<gid>}:joined` (uid → Unix
//! ms). The conversation is the hash tag, so on Redis Cluster every key of a conversation
//! lives on one shard. Message entries expire after [`INDEX_TTL_SECS`]; older messages are
//! found in the call log (see `LifecycleService::check`).

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{HashesInterface, KeysInterface},
    types::{scripts::Script, Expiration, SetOptions, Value},
};

use super::{IndexedMessage, MessageIndex};
use crate::storage::{redis::unavailable, StoreError};

/// How long a message stays in the Redis index: 30 days, the Redis call log's default
/// retention (and longer than the default edit window).
pub const INDEX_TTL_SECS: i64 = 30 * 86_400;

/// [`MessageIndex`] over Redis.
pub struct RedisMessageIndex {
    pool: Pool,
    claim: Script,
}

/// KEYS[1] the set of uses, ARGV[1] the member, ARGV[2] the cap, ARGV[3] the TTL (s):
/// 1 when the member is counted already or now, 0 when the set is full.
const CLAIM_LUA: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

impl RedisMessageIndex {
    /// An index over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            claim: Script::from_lua(CLAIM_LUA),
        }
    }
}

fn message_key(conv: &str, msg_id: &str) -> String {
    format!("wc:lc:{{{conv}}}:m:{msg_id}")
}

/// The uses `scope` of a message made (a set, expiring with the message's entry).
fn uses_key(conv: &str, scope: &str) -> String {
    format!("wc:lc:{{{conv}}}:u:{scope}")
}

fn joined_key(gid: &str) -> String {
    format!("wc:lc:{{g:{gid}}}:joined")
}

fn encode(message: &IndexedMessage) -> String {
    let mut text = format!("{}\t{}", message.sender, message.sent_at);
    if message.deleted {
        text.push_str("\td");
    }
    text
}

fn decode(text: &str) -> Option<IndexedMessage> {
    let mut parts = text.split('\t');
    let sender = parts.next()?.to_owned();
    let sent_at = parts.next()?.parse().ok()?;
    Some(IndexedMessage {
        sender,
        sent_at,
        deleted: parts.next() == Some("d"),
    })
}

#[async_trait]
impl MessageIndex for RedisMessageIndex {
    async fn note_message(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &str,
        sent_at: i64,
    ) -> Result<(), StoreError> {
        let entry = IndexedMessage {
            sender: sender.to_owned(),
            sent_at,
            deleted: false,
        };
        let _: Value = self
            .pool
            .set(
                message_key(conv, msg_id),
                encode(&entry),
                Some(Expiration::EX(INDEX_TTL_SECS)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn note_rider(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &str,
        sent_at: i64,
    ) -> Option<crate::inbox::Rider> {
        let entry = IndexedMessage {
            sender: sender.to_owned(),
            sent_at,
            deleted: false,
        };
        Some(crate::inbox::Rider::SetIfAbsent {
            key: message_key(conv, msg_id),
            value: encode(&entry),
            ttl_secs: INDEX_TTL_SECS.unsigned_abs(),
        })
    }

    async fn lookup(&self, conv: &str, msg_id: &str) -> Result<Option<IndexedMessage>, StoreError> {
        let text: Option<String> = self
            .pool
            .get(message_key(conv, msg_id))
            .await
            .map_err(unavailable)?;
        Ok(text.as_deref().and_then(decode))
    }

    async fn mark_deleted(
        &self,
        conv: &str,
        msg_id: &str,
        message: &IndexedMessage,
    ) -> Result<(), StoreError> {
        let deleted = IndexedMessage {
            deleted: true,
            ..message.clone()
        };
        // Sender and SentAt never change, so overwriting the entry loses nothing; it keeps
        // its expiry. Absent (aged out): written anew, so the delete is seen from now on.
        let _: Value = self
            .pool
            .set(
                message_key(conv, msg_id),
                encode(&deleted),
                Some(Expiration::EX(INDEX_TTL_SECS)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim(
        &self,
        conv: &str,
        scope: &str,
        member: &str,
        cap: usize,
    ) -> Result<bool, StoreError> {
        let claimed: i64 = self
            .claim
            .evalsha_with_reload(
                self.pool.next(),
                vec![uses_key(conv, scope)],
                vec![
                    member.to_owned(),
                    cap.to_string(),
                    INDEX_TTL_SECS.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(claimed == 1)
    }

    async fn note_joined(&self, gid: &str, members: &[String], at: i64) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let fields: Vec<(String, i64)> = members.iter().map(|m| (m.clone(), at)).collect();
        let _: Value = self
            .pool
            .hset(joined_key(gid), fields)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn joined_at(
        &self,
        gid: &str,
        members: &[String],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<i64>> = self
            .pool
            .hmget(joined_key(gid), members.to_vec())
            .await
            .map_err(unavailable)?;
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        for deleted in [false, true] {
            let m = IndexedMessage {
                sender: "alice".into(),
                sent_at: 1_700_000_000_123,
                deleted,
            };
            assert_eq!(decode(&encode(&m)), Some(m));
        }
        assert_eq!(decode("garbage"), None);
        assert_eq!(message_key("p:a:b", "m1"), "wc:lc:{p:a:b}:m:m1");
    }
}
