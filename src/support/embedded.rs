//! Tickets and roles in the embedded store: a ticket per gid (JSON), an index of
//! (state, opening time|gid), and a user's roles (JSON). Every change is one redb write
//! transaction, and the embedded store serves one node, so a claim is decided once.

use std::ops::Bound;

use async_trait::async_trait;

use super::{ascending, ClaimOutcome, CloseOutcome, RoleStore, Ticket, TicketStore};
use crate::{
    domain::{
        support::{Role, TicketState},
        GroupId, UserId,
    },
    storage::{
        embedded::{internal, EmbeddedDb, ReadableTable, ROLES, SUPPORT_INDEX, SUPPORT_TICKETS},
        StoreError,
    },
};

/// [`TicketStore`] and [`RoleStore`] over the embedded database.
#[derive(Clone)]
pub struct EmbeddedSupportStore {
    db: EmbeddedDb,
}

impl EmbeddedSupportStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }
}

fn decode(bytes: &[u8]) -> Result<Ticket, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

fn encode(ticket: &Ticket) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(ticket).map_err(internal)
}

/// The roles of a user in a transaction (redb tables are read the same way in both kinds).
fn decode_roles(bytes: Option<&[u8]>) -> Result<Vec<Role>, StoreError> {
    match bytes {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(internal),
    }
}

/// Moves `ticket` (now in `from`) to its new state in the index and stores it.
fn move_to(
    txn: &redb::WriteTransaction,
    from: TicketState,
    ticket: &Ticket,
) -> Result<(), StoreError> {
    let member = ticket.index_member();
    let mut index = txn.open_table(SUPPORT_INDEX).map_err(internal)?;
    index
        .remove((from.as_str(), member.as_str()))
        .map_err(internal)?;
    index
        .insert((ticket.state.as_str(), member.as_str()), ())
        .map_err(internal)?;
    let mut tickets = txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
    tickets
        .insert(ticket.ticket.as_str(), encode(ticket)?.as_slice())
        .map_err(internal)?;
    Ok(())
}

fn read_ticket(txn: &redb::WriteTransaction, gid: &str) -> Result<Option<Ticket>, StoreError> {
    let tickets = txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
    let found = tickets.get(gid).map_err(internal)?;
    found.map(|bytes| decode(bytes.value())).transpose()
}

#[async_trait]
impl TicketStore for EmbeddedSupportStore {
    async fn open(&self, ticket: &Ticket) -> Result<Ticket, StoreError> {
        let ticket = ticket.clone();
        self.db
            .write(
                move |txn| {
                    if let Some(existing) = read_ticket(txn, ticket.ticket.as_str())? {
                        return Ok(existing);
                    }
                    let mut index = txn.open_table(SUPPORT_INDEX).map_err(internal)?;
                    let member = ticket.index_member();
                    index
                        .insert((ticket.state.as_str(), member.as_str()), ())
                        .map_err(internal)?;
                    let mut tickets = txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
                    tickets
                        .insert(ticket.ticket.as_str(), encode(&ticket)?.as_slice())
                        .map_err(internal)?;
                    Ok(ticket)
                },
                |_| {},
            )
            .await
    }

    async fn get(&self, gid: &GroupId) -> Result<Option<Ticket>, StoreError> {
        let gid = gid.to_string();
        self.db
            .read(move |txn| {
                let tickets = txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
                let found = tickets.get(gid.as_str()).map_err(internal)?;
                found.map(|bytes| decode(bytes.value())).transpose()
            })
            .await
    }

    async fn claim(
        &self,
        gid: &GroupId,
        staff: &UserId,
        at: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        let (gid, staff) = (gid.to_string(), staff.clone());
        self.db
            .write(
                move |txn| {
                    let Some(mut ticket) = read_ticket(txn, &gid)? else {
                        return Ok(ClaimOutcome::Unknown);
                    };
                    match ticket.state {
                        TicketState::Open => {
                            ticket.state = TicketState::Claimed;
                            ticket.staff = Some(staff);
                            ticket.claimed_at = Some(at);
                            move_to(txn, TicketState::Open, &ticket)?;
                            Ok(ClaimOutcome::Won(ticket))
                        }
                        TicketState::Claimed if ticket.staff.as_ref() == Some(&staff) => {
                            Ok(ClaimOutcome::Held(ticket))
                        }
                        TicketState::Claimed => Ok(ClaimOutcome::Taken(ticket)),
                        TicketState::Closed => Ok(ClaimOutcome::Closed(ticket)),
                    }
                },
                |_| {},
            )
            .await
    }

    async fn close(&self, gid: &GroupId, at: i64) -> Result<CloseOutcome, StoreError> {
        let gid = gid.to_string();
        self.db
            .write(
                move |txn| {
                    let Some(mut ticket) = read_ticket(txn, &gid)? else {
                        return Ok(CloseOutcome::Unknown);
                    };
                    let from = ticket.state;
                    if from == TicketState::Closed {
                        return Ok(CloseOutcome::AlreadyClosed(ticket));
                    }
                    ticket.state = TicketState::Closed;
                    ticket.closed_at = Some(at);
                    move_to(txn, from, &ticket)?;
                    Ok(CloseOutcome::Closed(ticket))
                },
                |_| {},
            )
            .await
    }

    async fn list(
        &self,
        state: TicketState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError> {
        let after = after.map(str::to_owned);
        self.db
            .read(move |txn| {
                let index = txn.open_table(SUPPORT_INDEX).map_err(internal)?;
                let tickets = txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
                let s = state.as_str();
                let (lower, upper) = if ascending(state) {
                    let lower = match &after {
                        Some(a) => Bound::Excluded((s, a.as_str())),
                        None => Bound::Included((s, "")),
                    };
                    (lower, Bound::Included((s, "\u{10ffff}")))
                } else {
                    let upper = match &after {
                        Some(a) => Bound::Excluded((s, a.as_str())),
                        None => Bound::Included((s, "\u{10ffff}")),
                    };
                    (Bound::Included((s, "")), upper)
                };
                let range = index
                    .range::<(&str, &str)>((lower, upper))
                    .map_err(internal)?;
                let members: Vec<String> = if ascending(state) {
                    range
                        .take(limit)
                        .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
                        .collect::<Result<_, _>>()
                        .map_err(internal)?
                } else {
                    range
                        .rev()
                        .take(limit)
                        .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
                        .collect::<Result<_, _>>()
                        .map_err(internal)?
                };
                let mut out = Vec::with_capacity(members.len());
                for member in members {
                    let Some((_, gid)) = member.split_once('|') else {
                        continue;
                    };
                    if let Some(bytes) = tickets.get(gid).map_err(internal)? {
                        out.push(decode(bytes.value())?);
                    }
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl RoleStore for EmbeddedSupportStore {
    async fn set_roles(&self, uid: &UserId, roles: &[Role]) -> Result<(), StoreError> {
        let uid = uid.to_string();
        let value = serde_json::to_vec(roles).map_err(internal)?;
        let empty = roles.is_empty();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(ROLES).map_err(internal)?;
                    if empty {
                        table.remove(uid.as_str()).map_err(internal)?;
                    } else {
                        table
                            .insert(uid.as_str(), value.as_slice())
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn roles(&self, uid: &UserId) -> Result<Vec<Role>, StoreError> {
        let uid = uid.to_string();
        self.db
            .read(move |txn| {
                let table = txn.open_table(ROLES).map_err(internal)?;
                let found = table.get(uid.as_str()).map_err(internal)?;
                decode_roles(found.as_ref().map(|b| b.value()))
            })
            .await
    }

    async fn holders(&self, role: Role) -> Result<Vec<String>, StoreError> {
        // Roles are few and rarely read in bulk (once per ticket change): a scan is enough.
        self.db
            .read(move |txn| {
                let table = txn.open_table(ROLES).map_err(internal)?;
                let mut holders = Vec::new();
                for entry in table.iter().map_err(internal)? {
                    let (uid, roles) = entry.map_err(internal)?;
                    if decode_roles(Some(roles.value()))?.contains(&role) {
                        holders.push(uid.value().to_owned());
                    }
                }
                Ok(holders)
            })
            .await
    }
}
