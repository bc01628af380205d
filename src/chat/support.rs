//! The group side of support tickets (§10): a ticket is a group, so the support service opens,
//! joins and logs it through these, and every group operation checks here that a ticket's
//! membership is changed only by claims and that a closed ticket takes no more messages.

use super::{
    groups::{member_list_json, server_msg_id, Fanout},
    Accepted, ChatService, Origin,
};
use crate::{
    calllog::{Conversation, LogRecord},
    domain::{
        now_millis,
        support::{is_ticket, TicketState},
        ChatError, ErrorCode, GroupId, MessageBody, MsgId, UserId,
    },
};

impl ChatService {
    /// Creates the group of a ticket with its customer as the one member (who hears
    /// `notify`); a re-send finds it made already and changes nothing.
    pub(crate) async fn open_ticket_group(
        &self,
        customer: &UserId,
        gid: &GroupId,
        msg_id: &MsgId,
    ) -> Result<(), ChatError> {
        let members = [customer.clone()];
        if !self.groups.create(gid, &members).await? {
            return match self.groups.members(gid).await? {
                Some(m) if m.iter().any(|u| u == customer.as_str()) => Ok(()),
                _ => Err(ChatError::new(
                    ErrorCode::Internal,
                    "a ticket's group has another owner",
                )),
            };
        }
        self.presence.contacts().joined(gid, &members).await?;
        self.lifecycle
            .note_joined(gid.as_str(), &[customer.to_string()])
            .await?;
        let list = member_list_json([customer.as_str()]);
        let opened = format!("open-{msg_id}");
        let accepted = self
            .fan_out(
                &[customer.to_string()],
                Fanout {
                    evt_type: "notify",
                    gid,
                    actor: customer,
                    msg_id: &opened,
                    body: list.clone(),
                },
            )
            .await?;
        self.log_group_event("support", customer, gid, &accepted, list)
            .await
    }

    /// The customer's first message in their ticket: a group message like any other.
    pub(crate) async fn post_in_ticket(
        &self,
        customer: &UserId,
        origin: &Origin<'_>,
        gid: &GroupId,
        msg_id: MsgId,
        body: MessageBody,
    ) -> Result<Accepted, ChatError> {
        self.send_group_message(customer, origin, gid, msg_id, body, &[])
            .await
    }

    /// Adds the staff member who won a claim to the ticket's group: the customer hears
    /// `join`, the staff member `notify` (and reads the history from then on, as a member).
    /// A staff member who is a member already (a re-sent claim) changes nothing.
    pub(crate) async fn admit_staff(
        &self,
        staff: &UserId,
        gid: &GroupId,
        msg_id: Option<MsgId>,
    ) -> Result<Accepted, ChatError> {
        let msg_id = msg_id.map_or_else(server_msg_id, |m| m.to_string());
        let before = self
            .groups
            .members(gid)
            .await?
            .ok_or_else(|| ChatError::new(ErrorCode::NotFound, format!("no ticket {gid}")))?;
        if before.iter().any(|m| m == staff.as_str()) {
            return Ok(Accepted {
                msg_id,
                sent_at: now_millis(),
                group: None,
            });
        }
        let added = [staff.clone()];
        self.lifecycle
            .note_joined(gid.as_str(), &[staff.to_string()])
            .await?;
        let after = self
            .groups
            .add(gid, &added)
            .await?
            .ok_or_else(|| ChatError::new(ErrorCode::NotFound, format!("no ticket {gid}")))?;
        self.presence.contacts().joined(gid, &added).await?;
        let added_list = member_list_json([staff.as_str()]);
        let accepted = self
            .fan_out(
                &before,
                Fanout {
                    evt_type: "join",
                    gid,
                    actor: staff,
                    msg_id: &msg_id,
                    body: added_list.clone(),
                },
            )
            .await?;
        self.fan_out(
            &[staff.to_string()],
            Fanout {
                evt_type: "notify",
                gid,
                actor: staff,
                msg_id: &msg_id,
                body: member_list_json(after.iter().map(String::as_str)),
            },
        )
        .await?;
        self.log_group_event("claim", staff, gid, &accepted, added_list)
            .await?;
        Ok(accepted)
    }

    /// Logs a ticket's state change that sends no group event of its own (`close`).
    pub(crate) async fn log_ticket_event(
        &self,
        evt_type: &str,
        actor: &UserId,
        gid: &GroupId,
        msg_id: &str,
        at: Option<i64>,
    ) -> Result<(), ChatError> {
        self.calllog
            .record(LogRecord::Event {
                evt_type: evt_type.to_owned(),
                actor: actor.to_string(),
                conversation: Conversation::Group {
                    gid: gid.to_string(),
                },
                msg_id: msg_id.to_owned(),
                body: String::new(),
                sent_at: at.unwrap_or_else(now_millis),
                seq: None,
                attachments: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// `forbidden` when `gid` is a closed ticket: what is said in a ticket ends with it.
    pub(super) async fn check_ticket_open(&self, gid: &GroupId) -> Result<(), ChatError> {
        if !is_ticket(gid) {
            return Ok(());
        }
        let closed = self
            .tickets
            .get(gid)
            .await?
            .is_some_and(|t| t.state == TicketState::Closed);
        if closed {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                format!("ticket {gid} is closed"),
            ));
        }
        Ok(())
    }

    /// `forbidden` for a membership change a client asks of a ticket (`create` with a ticket
    /// gid, `refer`, `depart`): who is in a ticket follows its claims only.
    pub(super) fn refuse_ticket_membership(gid: &GroupId) -> Result<(), ChatError> {
        if is_ticket(gid) {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "a ticket's members change only by claim; end it with close",
            ));
        }
        Ok(())
    }
}
