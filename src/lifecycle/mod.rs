//! Message lifecycle (contract §11): the rules of replies, edits, deletes and reactions, and
//! the index that lets them be checked.
//!
//! The events themselves travel the message path (the chat service stores them per
//! recipient, with a Seq, through the inbox, and logs them in the call log); this module
//! decides whether one may be sent. Checking a `Ref` needs to know, at once and on every
//! node, which messages a conversation holds and who sent them: the call log cannot tell
//! (it is written behind), so each accepted message is noted in a [`MessageIndex`] (Redis
//! when the node runs on Redis, else the embedded store) in the same step as its inbox
//! append. The index also keeps when each group member joined, so reactions on messages from
//! before a member joined are kept from that member.

mod embedded;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::embedded::EmbeddedMessageIndex;
pub use self::redis::RedisMessageIndex;
use crate::{
    calllog::CallLog,
    domain::{
        lifecycle::{LifecycleCommand, LifecycleKind, Target},
        now_millis, ChatError, ErrorCode, UserId,
    },
    storage::StoreError,
};

/// Default of `WEBCHAT_EDIT_WINDOW_SECS`: two days.
pub const DEFAULT_EDIT_WINDOW_SECS: u64 = 172_800;

/// What the index knows of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedMessage {
    /// Who sent it.
    pub sender: String,
    /// Unix ms when the server accepted it.
    pub sent_at: i64,
    /// Whether its sender took it back.
    pub deleted: bool,
}

/// Where messages are noted for lifecycle checks. A conversation is the call log's key
/// (`p:<uid>:<uid>` or `g:<gid>`, see [`conversation_key`]).
#[async_trait]
pub trait MessageIndex: Send + Sync {
    /// Notes that `sender` sent `msg_id` in `conv` at `sent_at`; the first note of a MsgID in
    /// a conversation stands (a re-send, or another sender reusing the id, changes nothing).
    async fn note_message(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &str,
        sent_at: i64,
    ) -> Result<(), StoreError>;
    /// [`MessageIndex::note_message`] as a rider an inbox append can carry (see
    /// [`crate::inbox::Rider`]), where this index can describe it; `None` otherwise.
    fn note_rider(
        &self,
        _conv: &str,
        _msg_id: &str,
        _sender: &str,
        _sent_at: i64,
    ) -> Option<crate::inbox::Rider> {
        None
    }
    /// The message `msg_id` of `conv`, if noted (and not yet aged out).
    async fn lookup(&self, conv: &str, msg_id: &str) -> Result<Option<IndexedMessage>, StoreError>;
    /// Marks `message` (found by [`MessageIndex::lookup`]) deleted.
    async fn mark_deleted(
        &self,
        conv: &str,
        msg_id: &str,
        message: &IndexedMessage,
    ) -> Result<(), StoreError>;
    /// Counts `member` (an edit's MsgID, an emoji) among the uses of `scope` (a message's
    /// edits, a user's reactions to it) in `conv`: `true` when it is counted already or now,
    /// `false` (counting nothing) when it is new and `cap` are counted already.
    async fn claim(
        &self,
        conv: &str,
        scope: &str,
        member: &str,
        cap: usize,
    ) -> Result<bool, StoreError>;
    /// Notes that `members` joined group `gid` at `at` (Unix ms), replacing earlier times.
    async fn note_joined(&self, gid: &str, members: &[String], at: i64) -> Result<(), StoreError>;
    /// When each of `members` joined `gid` (`None`: not noted, e.g. a group older than this
    /// index, whose members count as having been there from the start).
    async fn joined_at(
        &self,
        gid: &str,
        members: &[String],
    ) -> Result<Vec<Option<i64>>, StoreError>;
}

/// Most edits of one message.
pub const MAX_EDITS_PER_MESSAGE: usize = 100;
/// Most different emoji one user reacts with on one message.
pub const MAX_REACTIONS_PER_USER: usize = 20;

/// The call log's key of the conversation `actor` has with `target`.
pub fn conversation_key(actor: &UserId, target: &Target) -> String {
    match target {
        Target::User(peer) => {
            let (a, b) = if actor.as_str() <= peer.as_str() {
                (actor.as_str(), peer.as_str())
            } else {
                (peer.as_str(), actor.as_str())
            };
            format!("p:{a}:{b}")
        }
        Target::Group(gid) => format!("g:{gid}"),
    }
}

/// The rules of §11 over the index.
#[derive(Clone)]
pub struct LifecycleService {
    index: Arc<dyn MessageIndex>,
    calllog: CallLog,
    edit_window_ms: i64,
}

impl LifecycleService {
    /// A service over `index`, with `calllog` to look up messages the index no longer holds,
    /// and edits allowed for `edit_window_secs` after a message was sent.
    pub fn new(index: Arc<dyn MessageIndex>, calllog: CallLog, edit_window_secs: u64) -> Self {
        Self {
            index,
            calllog,
            edit_window_ms: i64::try_from(edit_window_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    /// Notes an accepted message (plain or reply) for later `Ref`s.
    pub async fn note_message(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &UserId,
        sent_at: i64,
    ) -> Result<(), StoreError> {
        self.index
            .note_message(conv, msg_id, sender.as_str(), sent_at)
            .await
    }

    /// [`LifecycleService::note_message`] as a rider of the message's append (so it costs
    /// no round trip of its own), where the index can describe it.
    pub fn note_rider(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &UserId,
        sent_at: i64,
    ) -> Option<crate::inbox::Rider> {
        self.index
            .note_rider(conv, msg_id, sender.as_str(), sent_at)
    }

    /// Notes that `members` joined `gid` now.
    pub async fn note_joined(&self, gid: &str, members: &[String]) -> Result<(), StoreError> {
        self.index.note_joined(gid, members, now_millis()).await
    }

    /// When `member` joined `gid`, 0 when not noted.
    pub async fn joined_at(&self, gid: &str, member: &str) -> Result<i64, StoreError> {
        Ok(self
            .index
            .joined_at(gid, &[member.to_owned()])
            .await?
            .first()
            .copied()
            .flatten()
            .unwrap_or(0))
    }

    /// Of `recipients` of `gid`, those who may see reactions on a message sent at `sent_at`:
    /// who joined at or before it.
    pub async fn reaction_audience(
        &self,
        gid: &str,
        recipients: Vec<String>,
        sent_at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let joined = self.index.joined_at(gid, &recipients).await?;
        Ok(recipients
            .into_iter()
            .zip(joined)
            .filter(|(_, at)| at.is_none_or(|at| at <= sent_at))
            .map(|(uid, _)| uid)
            .collect())
    }

    /// Checks `command` by `actor` (a participant of its conversation, checked by the
    /// caller) against the message its `Ref` names: `not_found` when there is no such message
    /// in this conversation (or it was deleted), `forbidden` for an edit or delete by
    /// someone else or an edit past the window. Returns the referenced message.
    pub async fn check(
        &self,
        actor: &UserId,
        command: &LifecycleCommand,
    ) -> Result<IndexedMessage, ChatError> {
        let conv = conversation_key(actor, &command.target);
        let reference = command.reference.as_str();
        let found = match self.index.lookup(&conv, reference).await? {
            Some(found) => Some(found),
            // Aged out of the index: the call log has every message it kept.
            None => self.calllog.indexed_message(&conv, reference).await?,
        };
        let message = found.ok_or_else(|| no_message(reference))?;
        check_rules(
            actor,
            command.kind,
            &message,
            now_millis(),
            self.edit_window_ms,
        )
        .inspect_err(|e| {
            tracing::debug!(actor = %actor, reference, code = %e.code.as_str(), "lifecycle event refused");
        })?;
        Ok(message)
    }

    /// Counts an edit (by its MsgID) or a reaction (by its emoji) against its message's caps
    /// ([`MAX_EDITS_PER_MESSAGE`], [`MAX_REACTIONS_PER_USER`] distinct emoji per user):
    /// `too_large`, counting nothing, past them. A re-sent event counts once; an unreact
    /// gives nothing back (the cap bounds the rows a message can gather).
    pub async fn count_use(
        &self,
        actor: &UserId,
        command: &LifecycleCommand,
    ) -> Result<(), ChatError> {
        let reference = command.reference.as_str();
        let (scope, member, cap, what) = match command.kind {
            LifecycleKind::Edit => (
                format!("{reference}\u{1}e"),
                command.msg_id.as_str(),
                MAX_EDITS_PER_MESSAGE,
                "edits of a message",
            ),
            LifecycleKind::React => (
                format!("{reference}\u{1}r\u{1}{actor}"),
                command.body.as_str(),
                MAX_REACTIONS_PER_USER,
                "different emoji by one user on a message",
            ),
            _ => return Ok(()),
        };
        let conv = conversation_key(actor, &command.target);
        if self.index.claim(&conv, &scope, member, cap).await? {
            Ok(())
        } else {
            Err(ChatError::new(
                ErrorCode::TooLarge,
                format!("at most {cap} {what}"),
            ))
        }
    }

    /// Marks the message a delete names as deleted, so later edits and reactions are refused.
    pub async fn note_deleted(
        &self,
        actor: &UserId,
        command: &LifecycleCommand,
        message: &IndexedMessage,
    ) -> Result<(), StoreError> {
        if message.deleted {
            return Ok(());
        }
        let conv = conversation_key(actor, &command.target);
        self.index
            .mark_deleted(&conv, command.reference.as_str(), message)
            .await
    }
}

fn no_message(reference: &str) -> ChatError {
    ChatError::new(
        ErrorCode::NotFound,
        format!("no message {reference} in this conversation"),
    )
}

/// Who may do what to `message` (pure, so the rules are tested without a store).
fn check_rules(
    actor: &UserId,
    kind: LifecycleKind,
    message: &IndexedMessage,
    now_ms: i64,
    edit_window_ms: i64,
) -> Result<(), ChatError> {
    let own = message.sender == actor.as_str();
    match kind {
        // Deleting twice changes nothing (and a re-sent delete must be acked again).
        LifecycleKind::Delete if own => Ok(()),
        LifecycleKind::Delete => Err(ChatError::new(
            ErrorCode::Forbidden,
            "only the sender may delete a message",
        )),
        _ if message.deleted => Err(ChatError::new(
            ErrorCode::NotFound,
            "that message was deleted",
        )),
        LifecycleKind::Edit if !own => Err(ChatError::new(
            ErrorCode::Forbidden,
            "only the sender may edit a message",
        )),
        LifecycleKind::Edit if now_ms.saturating_sub(message.sent_at) >= edit_window_ms => Err(
            ChatError::new(ErrorCode::Forbidden, "the message is too old to be edited"),
        ),
        LifecycleKind::Edit
        | LifecycleKind::Reply
        | LifecycleKind::React
        | LifecycleKind::Unreact => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).expect("uid")
    }

    fn message(sender: &str, sent_at: i64, deleted: bool) -> IndexedMessage {
        IndexedMessage {
            sender: sender.into(),
            sent_at,
            deleted,
        }
    }

    #[test]
    fn only_the_sender_edits_and_deletes_and_edits_only_within_the_window() {
        let m = message("alice", 1_000, false);
        let code = |actor: &str, kind, now| {
            check_rules(&uid(actor), kind, &m, now, 500)
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code("alice", LifecycleKind::Edit, 1_499), None);
        assert_eq!(
            code("alice", LifecycleKind::Edit, 1_500),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code("bob", LifecycleKind::Edit, 1_000),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(code("alice", LifecycleKind::Delete, 99_999), None);
        assert_eq!(
            code("bob", LifecycleKind::Delete, 1_000),
            Some(ErrorCode::Forbidden)
        );
        for kind in [
            LifecycleKind::Reply,
            LifecycleKind::React,
            LifecycleKind::Unreact,
        ] {
            assert_eq!(code("bob", kind, 99_999), None, "{kind:?}");
        }
    }

    #[test]
    fn a_deleted_message_takes_nothing_but_another_delete() {
        let m = message("alice", 1_000, true);
        for kind in [
            LifecycleKind::Edit,
            LifecycleKind::Reply,
            LifecycleKind::React,
            LifecycleKind::Unreact,
        ] {
            let err = check_rules(&uid("alice"), kind, &m, 1_000, 500).expect_err("deleted");
            assert_eq!(err.code, ErrorCode::NotFound, "{kind:?}");
        }
        assert!(check_rules(&uid("alice"), LifecycleKind::Delete, &m, 1_000, 500).is_ok());
    }

    #[test]
    fn a_conversation_key_is_the_same_from_both_ends() {
        let ab = conversation_key(&uid("alice"), &Target::User(uid("bob")));
        let ba = conversation_key(&uid("bob"), &Target::User(uid("alice")));
        assert_eq!(ab, ba);
        assert_eq!(ab, "p:alice:bob");
    }
}
