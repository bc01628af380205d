//! Lifecycle events of the chat service (§11): replies, edits, deletes and reactions, sent
//! through the same path as messages (stored per recipient, Seq, acked, replayed, copied to
//! the actor's other sockets, logged). Whether one may be sent is `lifecycle`'s rule.

use super::{groups::GroupEventKind, Accepted, ChatService, Origin};
use crate::{
    calllog::{Conversation, LogRecord},
    domain::{
        lifecycle::{LifecycleCommand, LifecycleKind, Target},
        ChatError, GroupId, UserId, WireEvent,
    },
    inbox::{DedupeKey, Echo},
    receipts::ReceiptKey,
};

impl ChatService {
    /// Carries out a reply, edit, delete, react or unreact by `actor`.
    pub(super) async fn lifecycle_event(
        &self,
        actor: &UserId,
        origin: &Origin<'_>,
        command: LifecycleCommand,
    ) -> Result<Accepted, ChatError> {
        match command.target.clone() {
            Target::User(peer) => self.direct_lifecycle(actor, origin, &peer, command).await,
            Target::Group(gid) => self.group_lifecycle(actor, origin, &gid, command).await,
        }
    }

    async fn direct_lifecycle(
        &self,
        actor: &UserId,
        origin: &Origin<'_>,
        peer: &UserId,
        command: LifecycleCommand,
    ) -> Result<Accepted, ChatError> {
        let kind = command.kind;
        // A blocked user's replies, edits and reactions are refused like their messages; a
        // delete takes back what was said, which blocking never prevents.
        let allowed = async {
            if kind == LifecycleKind::Delete {
                Ok(())
            } else {
                self.blocks.check_allowed(actor, peer).await
            }
        };
        let (message, (), ()) = tokio::try_join!(
            self.lifecycle.check(actor, &command),
            self.check_recipient(peer),
            allowed
        )?;
        self.lifecycle.count_use(actor, &command).await?;
        if kind == LifecycleKind::Delete {
            // Before it is delivered: from now on edits and reactions are refused.
            self.lifecycle
                .note_deleted(actor, &command, &message)
                .await?;
        }
        if kind == LifecycleKind::Reply {
            // A reply is a message: its reader may send receipts for it.
            let sent = ReceiptKey {
                sender: actor.clone(),
                group: None,
                msg_id: command.msg_id.clone(),
            };
            self.receipts.note_sent(&sent, peer).await?;
            // As for a message (`send_message`): noted before it can be delivered, so a peer
            // seeing the reply finds them mutual contacts; the reply is stored even when this
            // fails.
            if let Err(e) = self.presence.note_sent(actor, peer).await {
                tracing::warn!(error = %e, "conversation not noted for presence");
            }
        }
        let mut event = WireEvent::new(
            kind.as_str(),
            actor.as_str(),
            peer.as_str(),
            command.msg_id.as_str(),
            command.body,
        );
        event.reference = command.reference.to_string();
        let log = LogRecord::Lifecycle {
            evt_type: kind.as_str().to_owned(),
            actor: actor.to_string(),
            conversation: Conversation::Direct {
                peer: peer.to_string(),
            },
            msg_id: event.msg_id.clone(),
            reference: event.reference.clone(),
            body: event.body.clone(),
            sent_at: event.sent_at,
            seq: None,
        };
        let dedupe = DedupeKey {
            sender: actor.clone(),
            kind: kind.as_str(),
            msg_id: command.msg_id,
            group: None,
        };
        let echo = (peer != actor).then(|| Echo {
            user: actor.clone(),
            skip_socket: origin.socket.to_owned(),
            others_here: origin.others_here,
        });
        let store = self.store(peer, &event, &dedupe, echo.as_ref(), Some(log));
        let accepted = if kind == LifecycleKind::Reply {
            let conv = crate::lifecycle::conversation_key(actor, &command.target);
            let note = async {
                Ok(self
                    .lifecycle
                    .note_message(&conv, &event.msg_id, actor, event.sent_at)
                    .await?)
            };
            let (accepted, ()) = tokio::try_join!(store, note)?;
            accepted
        } else {
            store.await?
        };
        tracing::debug!(actor = %actor, evt_type = kind.as_str(), reference = %event.reference, "lifecycle event stored");
        Ok(accepted)
    }

    async fn group_lifecycle(
        &self,
        actor: &UserId,
        origin: &Origin<'_>,
        gid: &GroupId,
        command: LifecycleCommand,
    ) -> Result<Accepted, ChatError> {
        // Membership first: an outsider learns nothing of which messages exist.
        let members = self.members_of(actor, gid).await?;
        self.check_ticket_open(gid).await?;
        let message = self.lifecycle.check(actor, &command).await?;
        self.lifecycle.count_use(actor, &command).await?;
        if command.kind == LifecycleKind::Delete {
            self.lifecycle
                .note_deleted(actor, &command, &message)
                .await?;
        }
        let audience_since = matches!(command.kind, LifecycleKind::React | LifecycleKind::Unreact)
            .then_some(message.sent_at);
        let kind = GroupEventKind {
            msg_id: command.msg_id.clone(),
            body: command.body.clone(),
            evt_type: command.kind.as_str(),
            reference: Some(command.reference.as_str()),
            audience_since,
            attachments: &[],
        };
        self.send_group_event(actor, origin, gid, members, kind)
            .await
    }
}
