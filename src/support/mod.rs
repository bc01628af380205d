//! The support desk (contract §10): roles, tickets, and the service that moves a ticket
//! through its life.
//!
//! Owns the [`RoleStore`] and [`TicketStore`] traits (embedded, Redis and, for roles,
//! DynamoDB implementations side by side) and the [`SupportService`]. A ticket is a group
//! (`domain::support::ticket_gid`): membership, messages, receipts, typing and history are the
//! chat service's group features, which this service calls; what is its own is the ticket's
//! state (open → claimed → closed), who may move it, and the `ticket` events that keep every
//! staff member's queue current. Each state change is one method ([`SupportService::open`],
//! [`SupportService::claim`], [`SupportService::close`]), so whatever else must happen on a
//! change (a webhook, say) has one place to go.
//!
//! Ticket state lives in Redis (one hash tag, so one slot on Redis Cluster) or the embedded
//! store; roles live in DynamoDB when it is configured, else in the same place.

mod dynamo;
mod embedded;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::dynamo::DynamoRoleStore;
pub use self::embedded::EmbeddedSupportStore;
pub use self::redis::RedisSupportStore;
use crate::{
    chat::{Accepted, ChatService, Origin},
    domain::{
        now_millis,
        support::{ticket_gid, Role, SupportCommand, TicketState, Topic},
        ChatError, ErrorCode, GroupId, MessageBody, MsgId, UserId, WireEvent,
    },
    inbox::{DedupeKey, InboxStore},
    storage::StoreError,
    webhooks::{TicketData, WebhookEvent, WebhookService},
};

/// A ticket as a webhook's `data` (§13).
fn ticket_data(ticket: &Ticket) -> TicketData {
    TicketData {
        gid: ticket.ticket.to_string(),
        customer: ticket.customer.to_string(),
        topic: ticket.topic.as_str().to_owned(),
        staff: ticket.staff.as_ref().map(UserId::to_string),
        opened_at: ticket.opened_at,
        claimed_at: ticket.claimed_at,
    }
}

/// A ticket as stored, listed and sent to staff (the Body of a `ticket` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// The ticket's group id.
    pub ticket: GroupId,
    /// Where it is in its life.
    pub state: TicketState,
    /// Who opened it.
    pub customer: UserId,
    /// What it is about ("" when the customer named nothing).
    pub topic: Topic,
    /// Who holds it, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<UserId>,
    /// When it was opened, unix ms.
    pub opened_at: i64,
    /// When it was claimed, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<i64>,
    /// When it was closed, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
}

impl Ticket {
    /// The sort key of this ticket in its state's index: by opening time, then gid, so two
    /// tickets opened in one millisecond still have an order (and a cursor between them).
    pub fn index_member(&self) -> String {
        format!("{:013}|{}", self.opened_at.max(0), self.ticket)
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This claim took the open ticket.
    Won(Ticket),
    /// The claimer already held it (a re-sent claim).
    Held(Ticket),
    /// Another staff member holds it.
    Taken(Ticket),
    /// It is closed.
    Closed(Ticket),
    /// There is no such ticket.
    Unknown,
}

/// What a close found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// This close ended the ticket.
    Closed(Ticket),
    /// It was closed already (a re-sent close).
    AlreadyClosed(Ticket),
    /// There is no such ticket.
    Unknown,
}

/// Where tickets are kept. Every state change is one atomic step of the store (a Lua script,
/// a redb write transaction), so two nodes claiming at once get one winner.
#[async_trait]
pub trait TicketStore: Send + Sync {
    /// Stores `ticket` (state open) unless its gid exists; returns the stored ticket either
    /// way (a re-sent `support` gets the first one).
    async fn open(&self, ticket: &Ticket) -> Result<Ticket, StoreError>;
    /// The ticket, if there is one.
    async fn get(&self, gid: &GroupId) -> Result<Option<Ticket>, StoreError>;
    /// Moves an open ticket to claimed by `staff` at `at` (unix ms), atomically.
    async fn claim(
        &self,
        gid: &GroupId,
        staff: &UserId,
        at: i64,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Moves an open or claimed ticket to closed at `at` (unix ms), atomically.
    async fn close(&self, gid: &GroupId, at: i64) -> Result<CloseOutcome, StoreError>;
    /// Up to `limit` tickets in `state` after the index member `after`: open ones oldest
    /// first (the queue), claimed and closed ones newest first.
    async fn list(
        &self,
        state: TicketState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError>;
}

/// Where roles are kept.
#[async_trait]
pub trait RoleStore: Send + Sync {
    /// Replaces `uid`'s roles with `roles`.
    async fn set_roles(&self, uid: &UserId, roles: &[Role]) -> Result<(), StoreError>;
    /// `uid`'s roles, sorted.
    async fn roles(&self, uid: &UserId) -> Result<Vec<Role>, StoreError>;
    /// Everyone holding `role`, sorted.
    async fn holders(&self, role: Role) -> Result<Vec<String>, StoreError>;
}

/// Whether a list is read oldest first.
pub fn ascending(state: TicketState) -> bool {
    state == TicketState::Open
}

/// A page of tickets.
#[derive(Debug, Clone, Serialize)]
pub struct TicketPage {
    /// The tickets.
    pub items: Vec<Ticket>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<String>,
}

/// The support desk's rules over its stores and the chat service's groups.
#[derive(Clone)]
pub struct SupportService {
    roles: Arc<dyn RoleStore>,
    tickets: Arc<dyn TicketStore>,
    chat: ChatService,
    inbox: Arc<dyn InboxStore>,
    /// `ticket.opened` and `ticket.claimed` for the app's endpoints (§13).
    webhooks: WebhookService,
}

/// The server's ack of a support command: the chat ack plus the ticket.
#[derive(Debug, Clone)]
pub struct SupportAccepted {
    /// What every ack carries.
    pub accepted: Accepted,
    /// The ticket the command was about.
    pub ticket: GroupId,
}

fn not_staff() -> ChatError {
    ChatError::new(ErrorCode::Forbidden, "only staff may do this")
}

fn no_ticket(gid: &GroupId) -> ChatError {
    ChatError::new(ErrorCode::NotFound, format!("no ticket {gid}"))
}

impl SupportService {
    /// A service over its stores; tickets' groups go through `chat`, `ticket` events into
    /// `inbox`, and openings and claims to the app's webhooks.
    pub fn new(
        roles: Arc<dyn RoleStore>,
        tickets: Arc<dyn TicketStore>,
        chat: ChatService,
        inbox: Arc<dyn InboxStore>,
        webhooks: WebhookService,
    ) -> Self {
        Self {
            roles,
            tickets,
            chat,
            inbox,
            webhooks,
        }
    }

    /// Queues `event` for the endpoints that take it. After the ticket's own steps, and not
    /// failing them: the ticket is opened or claimed whether or not an app hears of it, and
    /// a failure to queue is logged (the queue itself retries the calls it holds).
    async fn tell_webhooks(&self, event: WebhookEvent) {
        let kind = event.kind();
        if let Err(e) = self.webhooks.emit(event).await {
            tracing::warn!(event = kind.as_str(), error = %e, "webhook event not queued");
        }
    }

    /// Carries out a client's support command as `actor`.
    pub async fn handle(
        &self,
        actor: &UserId,
        origin: &Origin<'_>,
        command: SupportCommand,
    ) -> Result<SupportAccepted, ChatError> {
        match command {
            SupportCommand::Open {
                msg_id,
                body,
                topic,
            } => self.open(actor, origin, msg_id, body, topic).await,
            SupportCommand::Claim { gid, msg_id } => self.claim(actor, &gid, msg_id).await,
            SupportCommand::Close { gid, msg_id } => self.close(actor, &gid, msg_id).await,
        }
    }

    /// Replaces `uid`'s roles (admin API).
    #[tracing::instrument(skip_all, fields(uid = %uid))]
    pub async fn set_roles(&self, uid: &UserId, roles: &[Role]) -> Result<Vec<Role>, ChatError> {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        self.roles.set_roles(uid, &roles).await?;
        tracing::info!(roles = ?roles, "roles set");
        Ok(roles)
    }

    /// `uid`'s roles (admin API).
    pub async fn roles(&self, uid: &UserId) -> Result<Vec<Role>, ChatError> {
        Ok(self.roles.roles(uid).await?)
    }

    /// Whether `uid` is staff.
    pub async fn is_staff(&self, uid: &UserId) -> Result<bool, ChatError> {
        Ok(self.roles.roles(uid).await?.contains(&Role::Staff))
    }

    /// A customer opens a ticket with a first message. A re-send (same MsgID) finds the
    /// ticket its first send opened and completes whatever that send did not finish.
    #[tracing::instrument(skip_all, fields(customer = %customer))]
    pub async fn open(
        &self,
        customer: &UserId,
        origin: &Origin<'_>,
        msg_id: MsgId,
        body: MessageBody,
        topic: Topic,
    ) -> Result<SupportAccepted, ChatError> {
        let gid = ticket_gid(customer, &msg_id);
        let fresh = Ticket {
            ticket: gid.clone(),
            state: TicketState::Open,
            customer: customer.clone(),
            topic,
            staff: None,
            opened_at: now_millis(),
            claimed_at: None,
            closed_at: None,
        };
        // The state first: a ticket whose group exists is always a ticket staff can list.
        let ticket = self.tickets.open(&fresh).await?;
        if ticket.customer != *customer {
            // Two customers cannot share a gid (it hashes the customer), so this is a bug.
            return Err(ChatError::new(ErrorCode::Internal, "ticket id collision"));
        }
        self.chat.open_ticket_group(customer, &gid, &msg_id).await?;
        if ticket.state == TicketState::Closed {
            // A re-send of the first message of a ticket closed since: acked as it was.
            return Ok(SupportAccepted {
                accepted: Accepted {
                    msg_id: msg_id.to_string(),
                    sent_at: ticket.opened_at,
                    group: None,
                },
                ticket: gid,
            });
        }
        let accepted = self
            .chat
            .post_in_ticket(customer, origin, &gid, msg_id, body)
            .await?;
        if ticket.state == TicketState::Open {
            // A re-send after a claim has nothing to announce: the claim did.
            self.announce(&ticket, TicketState::Open).await?;
            self.tell_webhooks(WebhookEvent::TicketOpened(ticket_data(&ticket)))
                .await;
        }
        // The topic is the customer's text: not logged, as message bodies are not.
        tracing::info!(ticket = %gid, "ticket opened");
        Ok(SupportAccepted {
            accepted,
            ticket: gid,
        })
    }

    /// A staff member takes a ticket: exactly one claim wins (the store decides, atomically,
    /// on whichever node); the winner joins the group and the customer hears `join`.
    #[tracing::instrument(skip_all, fields(staff = %staff, ticket = %gid))]
    pub async fn claim(
        &self,
        staff: &UserId,
        gid: &GroupId,
        msg_id: Option<MsgId>,
    ) -> Result<SupportAccepted, ChatError> {
        if !self.is_staff(staff).await? {
            return Err(not_staff());
        }
        let (ticket, won_now) = match self.tickets.claim(gid, staff, now_millis()).await? {
            ClaimOutcome::Won(ticket) => (ticket, true),
            ClaimOutcome::Held(ticket) => (ticket, false),
            ClaimOutcome::Taken(_) => {
                return Err(ChatError::new(
                    ErrorCode::Conflict,
                    format!("ticket {gid} is claimed by another staff member"),
                ))
            }
            ClaimOutcome::Closed(_) => {
                return Err(ChatError::new(
                    ErrorCode::Conflict,
                    format!("ticket {gid} is closed"),
                ))
            }
            ClaimOutcome::Unknown => return Err(no_ticket(gid)),
        };
        // Also on a re-sent claim: it completes a first claim that failed after the store.
        let accepted = self.chat.admit_staff(staff, gid, msg_id).await?;
        self.announce(&ticket, TicketState::Claimed).await?;
        if won_now {
            // Once per ticket: a re-sent claim of the holder tells nobody again.
            self.tell_webhooks(WebhookEvent::TicketClaimed(ticket_data(&ticket)))
                .await;
        }
        tracing::info!("ticket claimed");
        Ok(SupportAccepted {
            accepted,
            ticket: gid.clone(),
        })
    }

    /// The holder or the customer ends a ticket; later messages to it are refused.
    #[tracing::instrument(skip_all, fields(actor = %actor, ticket = %gid))]
    pub async fn close(
        &self,
        actor: &UserId,
        gid: &GroupId,
        msg_id: Option<MsgId>,
    ) -> Result<SupportAccepted, ChatError> {
        let Some(current) = self.tickets.get(gid).await? else {
            return Err(no_ticket(gid));
        };
        let holder = current.staff.as_ref() == Some(actor);
        if current.customer != *actor && !holder {
            // Another customer's ticket, or staff who do not hold it: not theirs to end.
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "only the staff member holding a ticket, or its customer, may close it",
            ));
        }
        let ticket = match self.tickets.close(gid, now_millis()).await? {
            CloseOutcome::Closed(ticket) | CloseOutcome::AlreadyClosed(ticket) => ticket,
            CloseOutcome::Unknown => return Err(no_ticket(gid)),
        };
        let msg_id = msg_id.map_or_else(|| format!("close-{}", gid.as_str()), |m| m.to_string());
        self.chat
            .log_ticket_event("close", actor, gid, &msg_id, ticket.closed_at)
            .await?;
        self.announce(&ticket, TicketState::Closed).await?;
        tracing::info!("ticket closed");
        Ok(SupportAccepted {
            accepted: Accepted {
                msg_id,
                sent_at: ticket.closed_at.unwrap_or_else(now_millis),
                group: None,
            },
            ticket: gid.clone(),
        })
    }

    /// A page of tickets in `state` for `viewer` (staff only; `None` for the admin API).
    pub async fn list(
        &self,
        viewer: Option<&UserId>,
        state: TicketState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<TicketPage, ChatError> {
        if let Some(viewer) = viewer {
            if !self.is_staff(viewer).await? {
                return Err(not_staff());
            }
        }
        let mut items = self.tickets.list(state, cursor, limit + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more
            .then(|| items.last().map(Ticket::index_member))
            .flatten();
        Ok(TicketPage { items, next })
    }

    /// Stores a `ticket` event about `ticket` reaching `state` for every staff member (and
    /// for the customer once it is claimed or closed, so their view follows), one append
    /// each, deduplicated per state: a re-sent command stores nothing twice.
    async fn announce(&self, ticket: &Ticket, state: TicketState) -> Result<(), ChatError> {
        let mut audience = self.roles.holders(Role::Staff).await?;
        if state != TicketState::Open {
            audience.push(ticket.customer.to_string());
        }
        audience.sort();
        audience.dedup();
        let body = serde_json::to_string(&Ticket {
            state,
            ..ticket.clone()
        })
        .map_err(|e| ChatError::new(ErrorCode::Internal, e.to_string()))?;
        let msg_id = MsgId::parse(&format!("ticket-{state}"))?;
        let dedupe = DedupeKey {
            sender: ticket.customer.clone(),
            kind: "ticket",
            msg_id: msg_id.clone(),
            group: Some(ticket.ticket.clone()),
        };
        let appends = audience
            .iter()
            .filter_map(|uid| UserId::parse(uid).ok())
            .map(|to| {
                let mut event = WireEvent::new(
                    "ticket",
                    ticket.ticket.as_str(),
                    to.as_str(),
                    msg_id.as_str(),
                    body.clone(),
                );
                event.originated = ticket.customer.to_string();
                let dedupe = &dedupe;
                async move { self.inbox.append(&to, &event, Some(dedupe), None).await }
            });
        for outcome in futures_util::future::join_all(appends).await {
            outcome?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
