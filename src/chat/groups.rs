//! Group operations of the chat service: create, refer, depart, rejoin, group messages and
//! group typing.
//!
//! Membership is saved before anyone is notified. Every notification and message is stored
//! once per recipient inbox and published on that recipient's own channel (no shared group
//! channel); the appends of one fan-out are issued together, so the inbox batches them into a
//! few script calls however large the group. A membership event's large member list is
//! stored once, and each inbox entry names it (`inbox::shared_body`).

use std::collections::HashSet;

use futures_util::future::join_all;

use super::{Accepted, ChatService, Origin};
use crate::{
    attachments::group_conversation,
    domain::{
        now_millis, AttachmentId, ChatError, ErrorCode, GroupId, MessageBody, MsgId, ReceiptKind,
        Seq, UserId, WireEvent,
    },
    inbox::{
        claims::{self, Claim, ClaimError, SendEnd},
        shared_body, AppendOutcome, DedupeKey, Echo,
    },
    receipts::ReceiptKey,
    storage::StoreError,
};

/// A group message (or lifecycle event, §11) as every recipient gets it.
#[derive(Clone, Copy)]
struct GroupMessage<'a> {
    /// `message`, or a lifecycle EvtType.
    evt_type: &'static str,
    /// Replies and lifecycle events: the message it is about.
    reference: Option<&'a str>,
    sender: &'a UserId,
    gid: &'a GroupId,
    msg_id: &'a MsgId,
    body: &'a str,
    /// The first send's acceptance time.
    sent_at: i64,
    /// The attachment ids it carries.
    attachments: &'a [String],
}

/// What a group send carries.
pub(super) struct GroupEventKind<'a> {
    /// The event's own MsgID (its idempotency key).
    pub(super) msg_id: MsgId,
    /// Text, or a reaction's emoji.
    pub(super) body: String,
    /// `message`, or a lifecycle EvtType.
    pub(super) evt_type: &'static str,
    /// Replies and lifecycle events: the message it is about.
    pub(super) reference: Option<&'a str>,
    /// Reactions: only members who joined at or before this time (unix ms) get it.
    pub(super) audience_since: Option<i64>,
    /// Messages: the attachment ids it carries (§12), granted to the group already.
    pub(super) attachments: &'a [String],
}

impl GroupEventKind<'_> {
    /// A plain group message.
    fn message(msg_id: MsgId, body: String) -> Self {
        Self {
            msg_id,
            body,
            evt_type: "message",
            reference: None,
            audience_since: None,
            attachments: &[],
        }
    }
}

/// How a group message's fan-out went.
struct SentMessage {
    /// Recipients whose append failed.
    missing: Vec<String>,
    /// The sender's other sockets got their live copy.
    echoed: bool,
    /// Every append was refused: nothing of it is stored anywhere.
    surely_none_stored: bool,
}

/// How a send's fan-out ended, for its claim: `fresh` and `echo_owed` as claimed, `sent` as
/// the fan-out to `recipients` went (an error: it failed before any append).
fn send_end(
    fresh: bool,
    echo_owed: bool,
    recipients: &[String],
    sent: &Result<SentMessage, ChatError>,
) -> SendEnd {
    match sent {
        Ok(sent) if sent.missing.is_empty() => SendEnd::Delivered,
        // Only a fresh claim: a taken-over one may have been stored by the send before.
        Ok(sent) if fresh && sent.surely_none_stored => SendEnd::NothingStored,
        Ok(sent) => SendEnd::Incomplete {
            missing: sent.missing.clone(),
            echoed: !echo_owed || sent.echoed,
        },
        Err(_) if fresh => SendEnd::NothingStored,
        Err(_) => SendEnd::Incomplete {
            missing: recipients.to_vec(),
            echoed: !echo_owed,
        },
    }
}

/// What a fan-out stores for each recipient.
pub(super) struct Fanout<'a> {
    pub(super) evt_type: &'static str,
    pub(super) gid: &'a GroupId,
    pub(super) actor: &'a UserId,
    pub(super) msg_id: &'a str,
    pub(super) body: String,
}

impl ChatService {
    pub(super) async fn create_group(
        &self,
        creator: &UserId,
        gid: Option<GroupId>,
        mut members: Vec<UserId>,
        msg_id: Option<MsgId>,
    ) -> Result<Accepted, ChatError> {
        if let Some(gid) = &gid {
            Self::refuse_ticket_membership(gid)?;
        }
        if !members.contains(creator) {
            members.push(creator.clone());
        }
        self.check_group_size(members.len())?;
        tokio::try_join!(
            self.check_recipients(&members),
            self.blocks.check_allowed_all(creator, &members)
        )?;
        let gid = gid.unwrap_or_else(GroupId::generate);
        if !self.groups.create(&gid, &members).await? {
            return Err(ChatError::bad_request(format!(
                "group {gid} exists already"
            )));
        }
        tracing::info!(gid = %gid, creator = %creator, members = members.len(), "group created");
        let listed: Vec<String> = members.iter().map(UserId::to_string).collect();
        self.webhooks
            .emit_later(crate::webhooks::WebhookEvent::GroupCreated(
                crate::webhooks::GroupCreated::new(gid.as_str(), creator.as_str(), &listed),
            ));
        self.presence.contacts().joined(&gid, &members).await?;
        let joined: Vec<String> = members.iter().map(UserId::to_string).collect();
        self.lifecycle.note_joined(gid.as_str(), &joined).await?;
        let mut recipients: Vec<String> = members.iter().map(UserId::to_string).collect();
        recipients.sort();
        let list = member_list_json(recipients.iter().map(String::as_str));
        let msg_id = msg_id.map_or_else(server_msg_id, |m| m.to_string());
        let accepted = self
            .fan_out(
                &recipients,
                Fanout {
                    evt_type: "notify",
                    gid: &gid,
                    actor: creator,
                    msg_id: &msg_id,
                    body: list.clone(),
                },
            )
            .await?;
        self.log_group_event("create", creator, &gid, &accepted, list)
            .await?;
        Ok(Accepted {
            group: Some(gid),
            ..accepted
        })
    }

    pub(super) async fn refer(
        &self,
        actor: &UserId,
        gid: &GroupId,
        added: Vec<UserId>,
        msg_id: Option<MsgId>,
    ) -> Result<Accepted, ChatError> {
        Self::refuse_ticket_membership(gid)?;
        let before = self.members_as(actor, gid).await?;
        let added: Vec<UserId> = added
            .into_iter()
            .filter(|u| !before.iter().any(|m| m == u.as_str()))
            .collect();
        if added.is_empty() {
            return Err(ChatError::bad_request("everyone named is a member already"));
        }
        self.check_group_size(before.len() + added.len())?;
        tokio::try_join!(
            self.check_recipients(&added),
            self.blocks.check_allowed_all(actor, &added)
        )?;
        // Noted before they become members: a reaction sent in between (on a message from
        // before they joined) must not reach them. A join noted for an add that then fails
        // names no member, and the next add notes it again.
        let joined: Vec<String> = added.iter().map(UserId::to_string).collect();
        self.lifecycle.note_joined(gid.as_str(), &joined).await?;
        let after = self
            .groups
            .add(gid, &added)
            .await?
            .ok_or_else(|| no_group(gid))?;
        self.presence.contacts().joined(gid, &added).await?;
        let msg_id = msg_id.map_or_else(server_msg_id, |m| m.to_string());
        let added_list = member_list_json(added.iter().map(UserId::as_str));
        let existing = self
            .fan_out(
                &before,
                Fanout {
                    evt_type: "join",
                    gid,
                    actor,
                    msg_id: &msg_id,
                    body: added_list.clone(),
                },
            )
            .await?;
        let newcomers: Vec<String> = added.iter().map(UserId::to_string).collect();
        self.fan_out(
            &newcomers,
            Fanout {
                evt_type: "notify",
                gid,
                actor,
                msg_id: &msg_id,
                body: member_list_json(after.iter().map(String::as_str)),
            },
        )
        .await?;
        self.log_group_event("refer", actor, gid, &existing, added_list)
            .await?;
        Ok(existing)
    }

    pub(super) async fn depart(
        &self,
        leaver: &UserId,
        gid: &GroupId,
        msg_id: Option<MsgId>,
    ) -> Result<Accepted, ChatError> {
        Self::refuse_ticket_membership(gid)?;
        let before = self.members_as(leaver, gid).await?;
        self.groups
            .remove(gid, leaver)
            .await?
            .ok_or_else(|| no_group(gid))?;
        self.presence.contacts().left(gid, leaver).await?;
        let msg_id = msg_id.map_or_else(server_msg_id, |m| m.to_string());
        // The leaver is told too (all their tabs learn they left), then gets nothing more.
        let body = member_list_json([leaver.as_str()]);
        let accepted = self
            .fan_out(
                &before,
                Fanout {
                    evt_type: "depart",
                    gid,
                    actor: leaver,
                    msg_id: &msg_id,
                    body: body.clone(),
                },
            )
            .await?;
        self.log_group_event("depart", leaver, gid, &accepted, body)
            .await?;
        Ok(accepted)
    }

    pub(super) async fn rejoin(
        &self,
        actor: &UserId,
        gid: &GroupId,
    ) -> Result<Accepted, ChatError> {
        let members = self.members_as(actor, gid).await?;
        self.fan_out(
            &[actor.to_string()],
            Fanout {
                evt_type: "notify",
                gid,
                actor,
                msg_id: &server_msg_id(),
                body: member_list_json(members.iter().map(String::as_str)),
            },
        )
        .await
    }

    pub(super) async fn send_group_message(
        &self,
        sender: &UserId,
        origin: &Origin<'_>,
        gid: &GroupId,
        msg_id: MsgId,
        body: MessageBody,
        attachments: &[AttachmentId],
    ) -> Result<Accepted, ChatError> {
        let members = self.members_as(sender, gid).await?;
        self.check_ticket_open(gid).await?;
        // Granted before the message can arrive: members may fetch them at once.
        self.attachments
            .attach(sender, attachments, &group_conversation(gid))
            .await?;
        let attachments: Vec<String> = attachments.iter().map(AttachmentId::to_string).collect();
        self.send_group_event(
            sender,
            origin,
            gid,
            members,
            GroupEventKind {
                attachments: &attachments,
                ..GroupEventKind::message(msg_id, body.into_inner())
            },
        )
        .await
    }

    /// Sends a message or a lifecycle event to the group's other `members` (the sender's
    /// membership checked by the caller).
    pub(super) async fn send_group_event(
        &self,
        sender: &UserId,
        origin: &Origin<'_>,
        gid: &GroupId,
        members: Vec<String>,
        mut kind: GroupEventKind<'_>,
    ) -> Result<Accepted, ChatError> {
        let msg_id = kind.msg_id.clone();
        let body = std::mem::take(&mut kind.body);
        // One claim per send, not an idempotency key per recipient (see `inbox::claims`).
        let dedupe = DedupeKey {
            sender: sender.clone(),
            kind: kind.evt_type,
            msg_id: msg_id.clone(),
            group: Some(gid.clone()),
        };
        let claim = claims::claim_send(self.inbox.as_ref(), &dedupe, now_millis())
            .await
            .map_err(|e| match e {
                ClaimError::Store(e) => ChatError::from(e),
                e @ ClaimError::OtherSendUnderWay => {
                    ChatError::new(ErrorCode::Unavailable, e.to_string())
                }
            })?;
        let accepted = Accepted {
            msg_id: msg_id.to_string(),
            sent_at: claim.sent_at(),
            group: None,
        };
        if kind.evt_type == "message" {
            // Before anyone can see it, so a reply or reaction to it always finds it.
            self.lifecycle
                .note_message(
                    &format!("g:{gid}"),
                    msg_id.as_str(),
                    sender,
                    claim.sent_at(),
                )
                .await?;
        }
        let Claim::FanOut {
            recipients: only,
            echo_owed,
            fresh,
            claimed,
        } = claim
        else {
            // Delivered before: acked again, delivered once. Logged again in case the first
            // send's log failed after its fan-out (the call log keeps one record per send).
            self.log_group_send(&kind, sender, gid, &accepted, body)
                .await?;
            return Ok(accepted);
        };
        let first_send = only.is_none();
        let mut recipients: Vec<String> = members
            .iter()
            .filter(|m| *m != sender.as_str())
            .cloned()
            .collect();
        if let Some(missed) = only {
            // Completing an earlier send: those it missed who are still members.
            let missed: HashSet<String> = missed.into_iter().collect();
            recipients.retain(|r| missed.contains(r));
        }
        if let Some(since) = kind.audience_since {
            // Reactions on a message are kept from members who joined after it.
            recipients = self
                .lifecycle
                .reaction_audience(gid.as_str(), recipients, since)
                .await?;
        }
        let message = GroupMessage {
            evt_type: kind.evt_type,
            reference: kind.reference,
            sender,
            gid,
            msg_id: &msg_id,
            body: &body,
            sent_at: claimed.sent_at(),
            attachments: kind.attachments,
        };
        let echo = echo_owed.then(|| Echo {
            user: sender.clone(),
            skip_socket: origin.socket.to_owned(),
            others_here: origin.others_here,
        });
        let sent = self
            .fan_out_message(&message, &members, &recipients, first_send, echo)
            .await;
        let end = send_end(fresh, echo_owed, &recipients, &sent);
        let complete = end == SendEnd::Delivered;
        if let Err(e) = claims::finish_send(self.inbox.as_ref(), &dedupe, &claimed, end).await {
            // The fan-out's own outcome still decides the ack; the claim stays `sending`, so
            // re-sends wait, then (once it is stale) deliver to everyone again.
            tracing::warn!(gid = %gid, error = %e, "a group send's end was not recorded");
        }
        let sent = sent?;
        if !complete {
            return Err(ChatError::new(
                ErrorCode::Unavailable,
                format!(
                    "{} of {} members did not get the message; re-send it to complete",
                    sent.missing.len(),
                    recipients.len()
                ),
            ));
        }
        self.log_group_send(&kind, sender, gid, &accepted, body)
            .await?;
        Ok(accepted)
    }

    /// Queues a group message or lifecycle event for the call log.
    async fn log_group_send(
        &self,
        kind: &GroupEventKind<'_>,
        sender: &UserId,
        gid: &GroupId,
        accepted: &Accepted,
        body: String,
    ) -> Result<(), ChatError> {
        let Some(reference) = kind.reference else {
            return self
                .log_group_message(
                    kind.evt_type,
                    sender,
                    gid,
                    accepted,
                    body,
                    kind.attachments.to_vec(),
                )
                .await;
        };
        self.calllog
            .record(crate::calllog::LogRecord::Lifecycle {
                evt_type: kind.evt_type.to_owned(),
                actor: sender.to_string(),
                conversation: crate::calllog::Conversation::Group {
                    gid: gid.to_string(),
                },
                msg_id: accepted.msg_id.clone(),
                reference: reference.to_owned(),
                body,
                sent_at: accepted.sent_at,
                seq: None,
            })
            .await?;
        Ok(())
    }

    /// Stores `message` in each of `recipients`' inboxes (after a `restart` when the group
    /// was dormant), with `echo` going along with the first. `first_send`: also note how
    /// many `members` are to display it (a completion keeps the first count).
    async fn fan_out_message(
        &self,
        message: &GroupMessage<'_>,
        members: &[String],
        recipients: &[String],
        first_send: bool,
        echo: Option<Echo>,
    ) -> Result<SentMessage, ChatError> {
        let GroupMessage {
            evt_type,
            reference,
            sender,
            gid,
            msg_id,
            body,
            sent_at,
            attachments,
        } = *message;
        if self.groups.wake(gid, self.group_idle_secs).await? {
            // Dormant: every member hears `restart` (stored, so it precedes the message in
            // each inbox) before the message itself.
            tracing::info!(gid = %gid, "dormant group restarted");
            self.fan_out(
                members,
                Fanout {
                    evt_type: "restart",
                    gid,
                    actor: sender,
                    msg_id: &server_msg_id(),
                    body: member_list_json(members.iter().map(String::as_str)),
                },
            )
            .await?;
        }
        if first_send && evt_type == "message" {
            // Noted before the fan-out, so a receipt can never arrive before the count.
            let receipt_key = ReceiptKey {
                sender: sender.clone(),
                group: Some(gid.clone()),
                msg_id: msg_id.clone(),
            };
            let others = u32::try_from(members.len().saturating_sub(1)).unwrap_or(u32::MAX);
            self.receipts.expect(&receipt_key, others).await?;
        }
        let to: Vec<UserId> = recipients
            .iter()
            .map(|r| UserId::parse(r))
            .collect::<Result<_, _>>()?;
        let mut template = WireEvent::new(
            evt_type,
            gid.as_str(),
            gid.as_str(),
            msg_id.as_str(),
            body.to_owned(),
        );
        template.originated = sender.to_string();
        template.reference = reference.unwrap_or_default().to_owned();
        template.sent_at = sent_at;
        template.attachments = attachments.to_vec();
        let outcomes = self
            .inbox
            .append_to_each(&to, &template, None, echo.as_ref())
            .await;
        let echoed = match (&echo, outcomes.first()) {
            (None, _) => false,
            // The live copy rode with the first append.
            (Some(_), Some(first)) => first.is_ok(),
            // No one to append for (every other member left): the live copy goes alone.
            (Some(echo), None) => self
                .bus
                .publish_live(&echo.user, Some(&echo.skip_socket), &template)
                .await
                .is_ok(),
        };
        let surely_none_stored = !outcomes.is_empty()
            && outcomes
                .iter()
                .all(|o| matches!(o, Err(StoreError::Rejected(_))));
        let mut missing = Vec::new();
        let mut stored = 0u64;
        let mut fresh = Vec::new();
        for (recipient, outcome) in recipients.iter().zip(outcomes) {
            match outcome {
                Ok(outcome) => {
                    stored += 1;
                    if let AppendOutcome::Stored { seq } = outcome {
                        fresh.push((recipient.clone(), seq));
                    }
                }
                Err(e) => {
                    tracing::warn!(gid = %gid, to = %recipient, error = %e, "group message not stored");
                    missing.push(recipient.clone());
                }
            }
        }
        self.metrics.inbox_appended.add(stored);
        // Members with no socket may need telling (`message.offline`; other kinds ignored).
        self.webhooks.messages_stored(fresh, &template);
        Ok(SentMessage {
            missing,
            echoed,
            surely_none_stored,
        })
    }

    pub(super) async fn forward_group_receipt(
        &self,
        reader: &UserId,
        kind: ReceiptKind,
        gid: &GroupId,
        original_sender: &UserId,
        msg_id: MsgId,
        seq: Option<Seq>,
    ) -> Result<Accepted, ChatError> {
        let (members, ()) = tokio::try_join!(
            self.members_as(reader, gid),
            // A receipt is addressed to the original sender, who may block the reader.
            self.blocks.check_allowed(reader, original_sender)
        )?;
        // The original sender must still be a member: a receipt is group traffic, which a
        // leaver no longer gets and an outsider never does.
        if !members.iter().any(|m| m == original_sender.as_str()) {
            return Err(ChatError::new(
                ErrorCode::NotFound,
                format!("{original_sender} is not a member of {gid}"),
            ));
        }
        if let Some(seq) = seq {
            self.inbox.confirm(reader.as_str(), seq).await?;
        }
        let key = ReceiptKey {
            sender: original_sender.clone(),
            group: Some(gid.clone()),
            msg_id: msg_id.clone(),
        };
        let others = u32::try_from(members.len().saturating_sub(1)).unwrap_or(u32::MAX);
        // Group receipts are checked by membership above: always recorded.
        let unread = self
            .receipts
            .record(&key, reader, kind, others)
            .await?
            .unwrap_or(0);
        let mut event = WireEvent::new(
            kind.as_str(),
            gid.as_str(),
            original_sender.as_str(),
            msg_id.as_str(),
            String::new(),
        );
        event.originated = reader.to_string();
        event.unread = Some(unread);
        let log = super::receipt_record(&event, reader, original_sender, Some(gid));
        let dedupe = DedupeKey {
            sender: reader.clone(),
            kind: kind.as_str(),
            msg_id,
            group: Some(gid.clone()),
        };
        self.store(original_sender, &event, &dedupe, None, Some(log))
            .await
    }

    /// The members of `gid`, if `actor` is one (see the private `members_as`).
    pub(super) async fn members_of(
        &self,
        actor: &UserId,
        gid: &GroupId,
    ) -> Result<Vec<String>, ChatError> {
        self.members_as(actor, gid).await
    }

    pub(super) async fn group_typing(
        &self,
        actor: &UserId,
        gid: &GroupId,
        active: bool,
    ) -> Result<Accepted, ChatError> {
        let members = self.members_as(actor, gid).await?;
        self.check_ticket_open(gid).await?;
        let mut event = WireEvent::new("typing", gid.as_str(), gid.as_str(), "", bit(active));
        event.originated = actor.to_string();
        for member in members.iter().filter(|m| *m != actor.as_str()) {
            if let Ok(uid) = UserId::parse(member) {
                self.bus.publish_live(&uid, None, &event).await?;
            }
        }
        Ok(Accepted {
            msg_id: String::new(),
            sent_at: event.sent_at,
            group: None,
        })
    }

    /// The members of `gid`, if `actor` is one: `not_found` for no such group, `forbidden`
    /// for a non-member.
    async fn members_as(&self, actor: &UserId, gid: &GroupId) -> Result<Vec<String>, ChatError> {
        let members = self
            .groups
            .members(gid)
            .await?
            .ok_or_else(|| no_group(gid))?;
        if !members.iter().any(|m| m == actor.as_str()) {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                format!("not a member of {gid}"),
            ));
        }
        Ok(members)
    }

    /// [`ChatService::check_recipient`] for many users (one round trip each, a few in flight
    /// at once rather than one after another).
    async fn check_recipients(&self, users: &[UserId]) -> Result<(), ChatError> {
        // A create may name thousands of members: one command must not start a store read
        // for each at once.
        let checks = users.iter().map(|u| self.check_recipient(u)).collect();
        crate::limits::first_refusal(checks).await
    }

    fn check_group_size(&self, size: usize) -> Result<(), ChatError> {
        if size > self.max_group_size {
            return Err(ChatError::bad_request(format!(
                "a group has at most {} members",
                self.max_group_size
            )));
        }
        Ok(())
    }

    /// Stores one membership event per recipient (To names the recipient; a large member
    /// list once, named by every entry), all appends issued at once; succeeds when every one
    /// is stored.
    pub(super) async fn fan_out(
        &self,
        recipients: &[String],
        f: Fanout<'_>,
    ) -> Result<Accepted, ChatError> {
        let mut template =
            WireEvent::new(f.evt_type, f.gid.as_str(), f.gid.as_str(), f.msg_id, f.body);
        template.originated = f.actor.to_string();
        self.share_large_body(&mut template, recipients.len())
            .await?;
        let sent_at = template.sent_at;
        let appends = recipients.iter().map(|recipient| {
            let template = &template;
            async move {
                let to = UserId::parse(recipient)?;
                let mut event = template.clone();
                event.to = to.to_string();
                Ok::<_, ChatError>(self.inbox.append(&to, &event, None, None).await?)
            }
        });
        let outcomes = join_all(appends).await;
        self.accepted(f.msg_id, sent_at, outcomes)
    }

    /// Stores `event`'s body once, and makes `event` name it, when its copies to
    /// `recipients` would be large (a member list to every member is N² uids; see
    /// `inbox::shared_body`). Done before any entry names it, so every entry finds it.
    /// Membership events only: group messages keep their copies (`inbox::shared_body` says
    /// why).
    async fn share_large_body(
        &self,
        event: &mut WireEvent,
        recipients: usize,
    ) -> Result<(), StoreError> {
        if shared_body::worth_sharing(&event.body, recipients) {
            let key = shared_body::new_key();
            self.inbox.put_shared_body(&key, &event.body).await?;
            self.metrics.shared_bodies_stored.inc();
            event.body = String::new();
            event.body_ref = Some(key);
        }
        Ok(())
    }

    /// The ack for a fan-out: an error if any append failed, else the first send's SentAt
    /// (a re-send reports the original's).
    fn accepted<E>(
        &self,
        msg_id: &str,
        sent_at: i64,
        outcomes: Vec<Result<AppendOutcome, E>>,
    ) -> Result<Accepted, ChatError>
    where
        ChatError: From<E>,
    {
        let mut first_sent_at = sent_at;
        let mut stored = 0u64;
        for outcome in outcomes {
            match outcome? {
                AppendOutcome::Stored { .. } => stored += 1,
                AppendOutcome::Duplicate { sent_at, .. } => first_sent_at = sent_at,
            }
        }
        self.metrics.inbox_appended.add(stored);
        Ok(Accepted {
            msg_id: msg_id.to_owned(),
            sent_at: first_sent_at,
            group: None,
        })
    }
}

fn no_group(gid: &GroupId) -> ChatError {
    ChatError::new(ErrorCode::NotFound, format!("no group {gid}"))
}

pub(super) fn member_list_json<'a>(members: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&members.into_iter().collect::<Vec<_>>()).unwrap_or_default()
}

pub(super) fn server_msg_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn bit(active: bool) -> String {
    if active { "1" } else { "0" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(
        missing: &[&str],
        echoed: bool,
        surely_none_stored: bool,
    ) -> Result<SentMessage, ChatError> {
        Ok(SentMessage {
            missing: missing.iter().map(|m| m.to_string()).collect(),
            echoed,
            surely_none_stored,
        })
    }

    fn failed() -> Result<SentMessage, ChatError> {
        Err(ChatError::new(ErrorCode::Unavailable, "down"))
    }

    #[test]
    fn a_send_that_reached_everyone_is_delivered() {
        let all = ["bob".to_owned(), "carol".to_owned()];
        for fresh in [true, false] {
            assert_eq!(
                send_end(fresh, true, &all, &sent(&[], true, false)),
                SendEnd::Delivered
            );
        }
    }

    #[test]
    fn only_a_fresh_send_that_surely_stored_nothing_drops_its_claim() {
        let all = ["bob".to_owned(), "carol".to_owned()];
        let refused = sent(&["bob", "carol"], false, true);
        assert_eq!(send_end(true, true, &all, &refused), SendEnd::NothingStored);
        assert_eq!(
            send_end(true, true, &all, &failed()),
            SendEnd::NothingStored
        );
        // Taken over from a stale or broken claim: the send before may have stored it.
        let everyone_missed = SendEnd::Incomplete {
            missing: all.to_vec(),
            echoed: false,
        };
        assert_eq!(send_end(false, true, &all, &refused), everyone_missed);
        assert_eq!(send_end(false, true, &all, &failed()), everyone_missed);
        // Every append failed, but a lost connection may have stored them: keep the SentAt.
        let unknown = sent(&["bob", "carol"], false, false);
        assert_eq!(send_end(true, true, &all, &unknown), everyone_missed);
    }

    #[test]
    fn an_incomplete_send_remembers_whether_the_live_copy_went_out() {
        let all = ["bob".to_owned(), "carol".to_owned()];
        assert_eq!(
            send_end(true, true, &all, &sent(&["carol"], true, false)),
            SendEnd::Incomplete {
                missing: vec!["carol".into()],
                echoed: true
            }
        );
        // The first recipient (carrying the live copy) missed it.
        assert_eq!(
            send_end(true, true, &all, &sent(&["bob"], false, false)),
            SendEnd::Incomplete {
                missing: vec!["bob".into()],
                echoed: false
            }
        );
        // A completion that owed no live copy never owes one.
        assert_eq!(
            send_end(false, false, &all, &sent(&["bob"], false, false)),
            SendEnd::Incomplete {
                missing: vec!["bob".into()],
                echoed: true
            }
        );
    }
}
