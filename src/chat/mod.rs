//! The chat service: what happens to a validated client command.
//!
//! Owns 1:1 messages, receipt forwarding and typing: recipient checks, idempotency keys,
//! stamping server identity and time, storing through the inbox and live copies through the
//! bus. Knows nothing of sockets: the gateway calls [`ChatService::handle`] with the session's
//! user, and tests call it directly.

use std::sync::Arc;

use crate::{
    accounts::AccountService,
    attachments::{direct_conversation, AttachmentService},
    blocks::BlockService,
    bus::Bus,
    calllog::{CallLog, Conversation, LogRecord},
    domain::{
        now_millis, AttachmentId, ChatError, ClientCommand, ErrorCode, GroupId, MessageBody, MsgId,
        ReceiptKind, Seq, UserId, WireEvent,
    },
    groups::GroupStore,
    inbox::{AppendOutcome, CarriedAppend, DedupeKey, Echo, InboxStore, LogEntry, Logged, Rider},
    lifecycle::LifecycleService,
    presence::PresenceService,
    receipts::{ReceiptKey, ReceiptStore},
    support::TicketStore,
    telemetry::Metrics,
    webhooks::WebhookService,
};

mod groups;
mod lifecycle;
mod support;

/// What the sender's ack reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The MsgID the command carried ("" for typing).
    pub msg_id: String,
    /// Unix ms when the server accepted it (the first send's, for a duplicate).
    pub sent_at: i64,
    /// The group a `create` made.
    pub group: Option<GroupId>,
}

/// Handles client commands on behalf of an authenticated user.
#[derive(Clone)]
pub struct ChatService {
    accounts: AccountService,
    inbox: Arc<dyn InboxStore>,
    bus: Arc<dyn Bus>,
    groups: Arc<dyn GroupStore>,
    receipts: Arc<dyn ReceiptStore>,
    blocks: BlockService,
    presence: PresenceService,
    calllog: CallLog,
    lifecycle: LifecycleService,
    attachments: AttachmentService,
    tickets: Arc<dyn TicketStore>,
    webhooks: WebhookService,
    metrics: Arc<Metrics>,
    /// Token mode: recipients must be registered users. Open mode: any valid uid.
    require_known_recipients: bool,
    /// Largest group allowed.
    max_group_size: usize,
    /// Idle time after which a group is restarted by its next message.
    group_idle_secs: u64,
}

/// Where a command came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The socket that sent it (it gets no live copy of what it sent).
    pub socket: &'a str,
    /// Whether the actor has other sockets on this node (see [`Echo::others_here`]).
    pub others_here: bool,
}

/// The chat service's back-ends and rules.
pub struct ChatDeps {
    /// Account lookups (recipient checks).
    pub accounts: AccountService,
    /// Inboxes.
    pub inbox: Arc<dyn InboxStore>,
    /// Live-only events.
    pub bus: Arc<dyn Bus>,
    /// Group membership.
    pub groups: Arc<dyn GroupStore>,
    /// Who displayed what.
    pub receipts: Arc<dyn ReceiptStore>,
    /// Who blocks whom: checked before anything a user addresses to another is stored.
    pub blocks: BlockService,
    /// Conversations and group memberships, for presence audiences.
    pub presence: PresenceService,
    /// Where every conversation event is logged.
    pub calllog: CallLog,
    /// Replies, edits, deletes and reactions: who may, and the index of messages.
    pub lifecycle: LifecycleService,
    /// Uploads a `message` may carry.
    pub attachments: AttachmentService,
    /// Support tickets: a closed one takes no more messages (§10).
    pub tickets: Arc<dyn TicketStore>,
    /// Webhooks and push: `group.created`, and the offline check of stored messages.
    pub webhooks: WebhookService,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Token mode: recipients must be registered users.
    pub require_known_recipients: bool,
    /// Largest group allowed.
    pub max_group_size: usize,
    /// Idle time after which a group is restarted by its next message.
    pub group_idle_secs: u64,
}

impl ChatService {
    /// A service over the node's back-ends.
    pub fn new(deps: ChatDeps) -> Self {
        Self {
            accounts: deps.accounts,
            inbox: deps.inbox,
            bus: deps.bus,
            groups: deps.groups,
            receipts: deps.receipts,
            blocks: deps.blocks,
            presence: deps.presence,
            calllog: deps.calllog,
            lifecycle: deps.lifecycle,
            attachments: deps.attachments,
            tickets: deps.tickets,
            webhooks: deps.webhooks,
            metrics: deps.metrics,
            require_known_recipients: deps.require_known_recipients,
            max_group_size: deps.max_group_size.max(1),
            group_idle_secs: deps.group_idle_secs,
        }
    }

    /// Carries out `command` as `actor`, who sent it from `origin`.
    #[tracing::instrument(level = "debug", skip_all, fields(actor = %actor))]
    pub async fn handle(
        &self,
        actor: &UserId,
        origin: &Origin<'_>,
        command: ClientCommand,
    ) -> Result<Accepted, ChatError> {
        match command {
            ClientCommand::Message {
                to,
                msg_id,
                body,
                attachments,
            } => {
                self.send_message(actor, origin, &to, msg_id, body, &attachments)
                    .await
            }
            ClientCommand::Receipt {
                kind,
                to,
                msg_id,
                seq,
            } => self.forward_receipt(actor, kind, &to, msg_id, seq).await,
            ClientCommand::Typing { to, active } => self.typing(actor, &to, active).await,
            ClientCommand::GroupMessage {
                gid,
                msg_id,
                body,
                attachments,
            } => {
                self.send_group_message(actor, origin, &gid, msg_id, body, &attachments)
                    .await
            }
            ClientCommand::GroupReceipt {
                kind,
                gid,
                to,
                msg_id,
                seq,
            } => {
                self.forward_group_receipt(actor, kind, &gid, &to, msg_id, seq)
                    .await
            }
            ClientCommand::GroupTyping { gid, active } => {
                self.group_typing(actor, &gid, active).await
            }
            ClientCommand::Create {
                gid,
                members,
                msg_id,
            } => self.create_group(actor, gid, members, msg_id).await,
            ClientCommand::Refer {
                gid,
                members,
                msg_id,
            } => self.refer(actor, &gid, members, msg_id).await,
            ClientCommand::Depart { gid, msg_id } => self.depart(actor, &gid, msg_id).await,
            ClientCommand::Rejoin { gid } => self.rejoin(actor, &gid).await,
            ClientCommand::Lifecycle(command) => self.lifecycle_event(actor, origin, command).await,
            // The gateway hands these to the support service; reaching here is a wiring bug.
            ClientCommand::Support(_) => Err(ChatError::new(
                ErrorCode::Internal,
                "support commands are the support service's",
            )),
            ClientCommand::Block {
                target,
                active,
                msg_id,
            } => {
                self.blocks.set(actor, &target, active).await?;
                Ok(Accepted {
                    msg_id: msg_id.map(|m| m.to_string()).unwrap_or_default(),
                    sent_at: now_millis(),
                    group: None,
                })
            }
        }
    }

    async fn send_message(
        &self,
        sender: &UserId,
        origin: &Origin<'_>,
        to: &UserId,
        msg_id: MsgId,
        body: MessageBody,
        attachments: &[AttachmentId],
    ) -> Result<Accepted, ChatError> {
        // The reader may send receipts for this message: noted before it can be delivered.
        // Where the inbox can, the block check and that note ride in the append's own store
        // call (one round trip for the message); otherwise they run before it, side by
        // side with the recipient check. A note for a message refused after it was made is
        // harmless: it is only ever read for a receipt from that reader to this sender, for
        // a MsgID the reader never got.
        let sent = ReceiptKey {
            sender: sender.clone(),
            group: None,
            msg_id: msg_id.clone(),
        };
        let carried = |rider: Option<Rider>| rider.filter(|r| self.inbox.can_carry(to, r));
        let block_rider = carried(self.blocks.refusal_rider(sender, to));
        let note_rider = carried(self.receipts.note_rider(&sent, to));
        tokio::try_join!(
            self.check_recipient(to),
            async {
                match block_rider {
                    Some(_) => Ok(()),
                    None => self.blocks.check_allowed(sender, to).await,
                }
            },
            async {
                match note_rider {
                    Some(_) => Ok(()),
                    None => Ok(self.receipts.note_sent(&sent, to).await?),
                }
            }
        )?;
        // Once each has written to the other, the two share presence. Noted before the
        // message can be delivered (or acked): a client that sees the first reply, or the ack
        // of its own, asks `GET /presence` for the peer right away and must find them mutual
        // contacts by then, on any node. A reply refused later by a block riding in the
        // append is noted too: the replier's attempt is the consent, and the blocker's
        // presence never reaches the blocked either way. The message is stored even when
        // this fails.
        if let Err(e) = self.presence.note_sent(sender, to).await {
            tracing::warn!(error = %e, "conversation not noted for presence");
        }
        // Granted before the message can arrive: the recipient may fetch them at once.
        self.attachments
            .attach(sender, attachments, &direct_conversation(to))
            .await?;
        let mut event = WireEvent::new(
            "message",
            sender.as_str(),
            to.as_str(),
            msg_id.as_str(),
            body.into_inner(),
        );
        event.attachments = attachments.iter().map(AttachmentId::to_string).collect();
        let log = LogRecord::Event {
            evt_type: "message".into(),
            actor: sender.to_string(),
            conversation: Conversation::Direct {
                peer: to.to_string(),
            },
            msg_id: msg_id.to_string(),
            body: event.body.clone(),
            sent_at: event.sent_at,
            seq: None,
            attachments: event.attachments.clone(),
        };
        let dedupe = DedupeKey {
            sender: sender.clone(),
            kind: "message",
            msg_id,
            group: None,
        };
        // The sender's other tabs and devices see what was sent (a message to oneself is
        // stored in one's own inbox and reaches every tab anyway).
        let echo = (to != sender).then(|| Echo {
            user: sender.clone(),
            skip_socket: origin.socket.to_owned(),
            others_here: origin.others_here,
        });
        // The message's entry in the lifecycle index, so a reply or reaction sent after the
        // ack finds it: carried by the append where it can be, else noted just before it.
        let conv = crate::lifecycle::conversation_key(
            sender,
            &crate::domain::lifecycle::Target::User(to.clone()),
        );
        let index_rider =
            carried(
                self.lifecycle
                    .note_rider(&conv, &event.msg_id, sender, event.sent_at),
            );
        if index_rider.is_none() {
            // Where the append cannot carry it (another hash slot on Redis Cluster, the
            // embedded store), noted before the message can be delivered: a reply or reaction
            // sent the moment it arrives must find it.
            self.lifecycle
                .note_message(&conv, &event.msg_id, sender, event.sent_at)
                .await?;
        }
        let riders: Vec<Rider> = [block_rider, note_rider, index_rider]
            .into_iter()
            .flatten()
            .collect();
        let accepted = self
            .store_carrying(to, &event, &dedupe, echo.as_ref(), Some(log), &riders)
            .await?;
        Ok(accepted)
    }

    async fn forward_receipt(
        &self,
        reader: &UserId,
        kind: ReceiptKind,
        original_sender: &UserId,
        msg_id: MsgId,
        seq: Option<Seq>,
    ) -> Result<Accepted, ChatError> {
        tokio::try_join!(
            self.check_recipient(original_sender),
            self.blocks.check_allowed(reader, original_sender)
        )?;
        // 1:1: the one recipient is the reader; unread until they display it. Only the
        // reader the message was sent to may send a receipt for it.
        let key = ReceiptKey {
            sender: original_sender.clone(),
            group: None,
            msg_id: msg_id.clone(),
        };
        let Some(unread) = self.receipts.record(&key, reader, kind, 1).await? else {
            return Err(ChatError::new(
                ErrorCode::NotFound,
                format!("no message {msg_id} from {original_sender} to {reader}"),
            ));
        };
        // Receiving or showing a message implies the reader has everything up to it.
        if let Some(seq) = seq {
            self.inbox.confirm(reader.as_str(), seq).await?;
        }
        let mut event = WireEvent::new(
            kind.as_str(),
            reader.as_str(),
            original_sender.as_str(),
            msg_id.as_str(),
            String::new(),
        );
        event.unread = Some(unread);
        let log = receipt_record(&event, reader, original_sender, None);
        let dedupe = DedupeKey {
            sender: reader.clone(),
            kind: kind.as_str(),
            msg_id,
            group: None,
        };
        self.store(original_sender, &event, &dedupe, None, Some(log))
            .await
    }

    /// Appends `event` to `to`'s inbox once per `dedupe` key, queues `log` for the call log,
    /// and reports what the sender's ack says: the first acceptance time, also for a re-send.
    ///
    /// A re-send is logged again (the row's key repeats, so it is written once): that is what
    /// completes the log when the first attempt stored the event but failed before logging it.
    async fn store(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: &DedupeKey,
        echo: Option<&Echo>,
        log: Option<LogRecord>,
    ) -> Result<Accepted, ChatError> {
        self.store_carrying(to, event, dedupe, echo, log, &[]).await
    }

    /// [`ChatService::store`] with `riders` (each accepted by the inbox's `can_carry`) in
    /// the append's store call; a refused append is the block list's `forbidden`.
    async fn store_carrying(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: &DedupeKey,
        echo: Option<&Echo>,
        log: Option<LogRecord>,
        riders: &[Rider],
    ) -> Result<Accepted, ChatError> {
        // Where the inbox can, it queues the log record in the same step (one round trip);
        // the record's SentAt is the event's, its Seq added by the store.
        let entry = match &log {
            Some(record) => self.calllog.entry_for_append(record)?,
            None => None,
        };
        let (outcome, logged) = match self
            .inbox
            .append_carrying(to, event, Some(dedupe), echo, entry.as_ref(), riders)
            .await?
        {
            CarriedAppend::Done(outcome, logged) => (outcome, logged),
            CarriedAppend::Refused => {
                tracing::debug!(sender = %event.from, recipient = %to, "refused: blocked");
                return Err(self.blocks.refusal());
            }
        };
        if logged == Logged::Yes && matches!(entry, Some(LogEntry::Rows(_))) {
            // In the table already: the drain, which counts the rest, never sees it.
            self.metrics.calllog_written.inc();
        }
        let log = log.filter(|_| logged == Logged::No);
        let (sent_at, seq) = match outcome {
            AppendOutcome::Duplicate { sent_at, seq } => {
                self.metrics.duplicates.inc();
                (sent_at, seq)
            }
            AppendOutcome::Stored { seq } => {
                self.metrics.inbox_appended.inc();
                // A recipient with no socket may need telling (`message.offline`).
                self.webhooks.message_stored(to, seq, event);
                (event.sent_at, Some(seq))
            }
        };
        if let Some(mut log) = log {
            match &mut log {
                LogRecord::Event {
                    sent_at: at,
                    seq: logged_seq,
                    ..
                }
                | LogRecord::Lifecycle {
                    sent_at: at,
                    seq: logged_seq,
                    ..
                } => {
                    *at = sent_at;
                    *logged_seq = seq;
                }
                LogRecord::Receipt { .. } => {}
            }
            self.calllog.record(log).await?;
        }
        Ok(Accepted {
            msg_id: dedupe.msg_id.to_string(),
            sent_at,
            group: None,
        })
    }

    async fn typing(
        &self,
        actor: &UserId,
        to: &UserId,
        active: bool,
    ) -> Result<Accepted, ChatError> {
        tokio::try_join!(
            self.check_recipient(to),
            self.blocks.check_allowed(actor, to)
        )?;
        let body = if active { "1" } else { "0" };
        let event = WireEvent::new("typing", actor.as_str(), to.as_str(), "", body.to_owned());
        self.bus.publish_live(to, None, &event).await?;
        Ok(Accepted {
            msg_id: String::new(),
            sent_at: event.sent_at,
            group: None,
        })
    }

    /// Queues a group event for the call log (after its fan-out stored it everywhere).
    async fn log_group_event(
        &self,
        evt_type: &str,
        actor: &UserId,
        gid: &GroupId,
        accepted: &Accepted,
        body: String,
    ) -> Result<(), ChatError> {
        self.log_group_message(evt_type, actor, gid, accepted, body, Vec::new())
            .await
    }

    /// [`Self::log_group_event`] with the attachment ids a group message carried.
    async fn log_group_message(
        &self,
        evt_type: &str,
        actor: &UserId,
        gid: &GroupId,
        accepted: &Accepted,
        body: String,
        attachments: Vec<String>,
    ) -> Result<(), ChatError> {
        self.calllog
            .record(LogRecord::Event {
                evt_type: evt_type.to_owned(),
                actor: actor.to_string(),
                conversation: Conversation::Group {
                    gid: gid.to_string(),
                },
                msg_id: accepted.msg_id.clone(),
                body,
                sent_at: accepted.sent_at,
                seq: None,
                attachments,
            })
            .await?;
        Ok(())
    }

    async fn check_recipient(&self, to: &UserId) -> Result<(), ChatError> {
        if self.require_known_recipients && !self.accounts.exists(to).await? {
            return Err(ChatError::new(ErrorCode::NotFound, format!("no user {to}")));
        }
        Ok(())
    }
}

/// The call-log record of a receipt `event` sent by `reader`.
fn receipt_record(
    event: &WireEvent,
    reader: &UserId,
    original_sender: &UserId,
    group: Option<&GroupId>,
) -> LogRecord {
    LogRecord::Receipt {
        receipt: event.evt_type.clone(),
        reader: reader.to_string(),
        sender: original_sender.to_string(),
        group: group.map(GroupId::to_string),
        msg_id: event.msg_id.clone(),
        at: event.sent_at,
        unread: event.unread,
    }
}
