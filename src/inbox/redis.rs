//! Inboxes in Redis: a stream per user whose entry ids are the Seqs (`<Seq>-0`).

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::StreamsInterface,
    types::{scripts::Script, Value},
};

use super::{AppendOutcome, DedupeKey, Echo, InboxLimits, InboxStore};
use crate::{
    domain::{Seq, UserId, WireEvent},
    storage::{
        embedded::internal,
        redis::{unavailable, user_channel, user_key},
        StoreError,
    },
};

const APPEND_LUA: &str = include_str!("append.lua");

/// [`InboxStore`] over Redis streams.
pub struct RedisInbox {
    pool: Pool,
    append: Script,
    limits: InboxLimits,
}

impl RedisInbox {
    /// Inboxes in Redis, bounded by `limits`.
    pub fn new(pool: Pool, limits: InboxLimits) -> Self {
        Self {
            pool,
            append: Script::from_lua(APPEND_LUA),
            limits,
        }
    }
}

#[async_trait]
impl InboxStore for RedisInbox {
    async fn append(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Result<AppendOutcome, StoreError> {
        let uid = to.as_str();
        let json = serde_json::to_string(event).map_err(internal)?;
        let dedupe_key = match dedupe {
            Some(d) => user_key(uid, &format!("dd:{}", d.text())),
            None => user_key(uid, "dd:-"),
        };
        let keys = vec![user_key(uid, "seq"), user_key(uid, "inbox"), dedupe_key];
        let args: Vec<Value> = vec![
            user_channel(uid).into(),
            json.into(),
            event.sent_at.into(),
            to_i64(self.limits.max_len).into(),
            to_i64(self.limits.max_age_secs.max(1)).into(),
            to_i64(self.limits.dedupe_window_secs.max(1)).into(),
            if dedupe.is_some() { "1" } else { "0" }.into(),
            echo.map(|e| user_channel(e.user.as_str()))
                .unwrap_or_default()
                .into(),
            echo.map(|e| e.skip_socket.clone())
                .unwrap_or_default()
                .into(),
        ];
        let (seq, sent_at): (i64, i64) = self
            .append
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable)?;
        Ok(if seq == 0 {
            AppendOutcome::Duplicate { sent_at }
        } else {
            AppendOutcome::Stored {
                seq: u64::try_from(seq).map_err(internal)?,
            }
        })
    }

    async fn confirm(&self, user: &str, upto: Seq) -> Result<(), StoreError> {
        let min_id = format!("{}-0", upto.saturating_add(1));
        let _: i64 = self
            .pool
            .xtrim(user_key(user, "inbox"), ("MINID", min_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn read_after(
        &self,
        user: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, WireEvent)>, StoreError> {
        let start = format!("{}-0", after.saturating_add(1));
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .pool
            .xrange(
                user_key(user, "inbox"),
                start,
                "+",
                Some(u64::try_from(limit).unwrap_or(u64::MAX)),
            )
            .await
            .map_err(unavailable)?;
        let mut events = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let seq: Seq = id
                .split_once('-')
                .and_then(|(s, _)| s.parse().ok())
                .ok_or_else(|| StoreError::Internal(format!("bad inbox id {id}")))?;
            let Some((_, json)) = fields.into_iter().find(|(k, _)| k == "e") else {
                continue;
            };
            let event: WireEvent = serde_json::from_str(&json).map_err(internal)?;
            events.push((seq, event));
        }
        Ok(events)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
