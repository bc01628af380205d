//! Support desk values (contract §10): a ticket's topic, its state, a user's roles, the
//! commands a client sends about tickets, and the shape of a ticket's group id.
//!
//! Owns parsing only; what a command does is the support service's (`src/support`).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChatError, ErrorCode, GroupId, MessageBody, MsgId, UserId};

/// Every ticket's gid starts with this (after `group_`): a ticket is a group, and its gid
/// says so without a store read, so only ticket traffic pays for the "is it closed" check.
pub const TICKET_GID_PREFIX: &str = "group_ticket-";

/// The longest topic, in characters (§10).
pub const MAX_TOPIC_CHARS: usize = 128;

/// Whether `gid` names a ticket.
pub fn is_ticket(gid: &GroupId) -> bool {
    gid.as_str().starts_with(TICKET_GID_PREFIX)
}

/// The gid of the ticket `customer` opens with `msg_id`: the same for a re-sent `support`,
/// so a re-send finds the ticket its first send opened instead of opening a second one.
pub fn ticket_gid(customer: &UserId, msg_id: &MsgId) -> GroupId {
    let mut hash = Sha256::new();
    hash.update(customer.as_str().as_bytes());
    hash.update([0u8]);
    hash.update(msg_id.as_str().as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    // 13 + 32 characters of the gid alphabet: always a valid gid.
    GroupId::parse(&format!("{TICKET_GID_PREFIX}{hex}"))
        .unwrap_or_else(|_| unreachable!("a ticket gid is always valid"))
}

/// What a ticket is about (an item id, say): at most [`MAX_TOPIC_CHARS`] characters, no
/// control characters. Empty when the customer named none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    /// Parses a topic: longer than the limit is `too_large`, control or bidirectional
    /// formatting characters (shown to staff in their queue) `bad_request`.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let chars = raw.chars().count();
        if chars > MAX_TOPIC_CHARS {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!("Topic is {chars} characters; the limit is {MAX_TOPIC_CHARS}"),
            ));
        }
        if raw.chars().any(char::is_control) || super::has_bidi_controls(raw) {
            return Err(ChatError::bad_request(
                "Topic must not contain control or bidirectional formatting characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a ticket is in its life. It only ever moves forward: open → claimed → closed, or
/// open → closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketState {
    /// Waiting for a staff member.
    Open,
    /// Held by one staff member.
    Claimed,
    /// Over: no new messages.
    Closed,
}

impl TicketState {
    /// Every state, in life order.
    pub const ALL: [Self; 3] = [Self::Open, Self::Claimed, Self::Closed];

    /// Parses `open`, `claimed` or `closed`.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        match raw {
            "open" => Ok(Self::Open),
            "claimed" => Ok(Self::Claimed),
            "closed" => Ok(Self::Closed),
            _ => Err(ChatError::bad_request(
                "state must be open, claimed or closed",
            )),
        }
    }

    /// The state as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Claimed => "claimed",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for TicketState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a user may hold. Only `staff` exists: staff see the ticket queue and claim tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers support tickets.
    Staff,
}

impl Role {
    /// Parses a role name; an unknown one is `bad_request` (a typo must not silently grant
    /// nothing).
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        match raw {
            "staff" => Ok(Self::Staff),
            other => Err(ChatError::bad_request(format!(
                "unknown role {:?}; the roles are: staff",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// The role as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
        }
    }
}

/// A client's command about the support desk (EvtType `support`, `claim`, `close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupportCommand {
    /// Open a ticket with a first message.
    Open {
        /// The first message's MsgID (also what makes a re-send find the same ticket).
        msg_id: MsgId,
        /// The first message.
        body: MessageBody,
        /// What it is about.
        topic: Topic,
    },
    /// A staff member takes a ticket.
    Claim {
        /// The ticket.
        gid: GroupId,
        /// Echoed in the ack, when the client sent one.
        msg_id: Option<MsgId>,
    },
    /// The holder or the customer ends a ticket.
    Close {
        /// The ticket.
        gid: GroupId,
        /// Echoed in the ack, when the client sent one.
        msg_id: Option<MsgId>,
    },
}

impl SupportCommand {
    /// The MsgID the command carries, if any.
    pub fn msg_id(&self) -> Option<String> {
        match self {
            Self::Open { msg_id, .. } => Some(msg_id.to_string()),
            Self::Claim { msg_id, .. } | Self::Close { msg_id, .. } => {
                msg_id.as_ref().map(MsgId::to_string)
            }
        }
    }
}

/// `gid` if it names a ticket, else `not_found` (claim and close address tickets only).
pub fn ticket_target(raw: &str) -> Result<GroupId, ChatError> {
    let gid = GroupId::parse(raw)?;
    if !is_ticket(&gid) {
        return Err(ChatError::new(
            ErrorCode::NotFound,
            format!("no ticket {gid}"),
        ));
    }
    Ok(gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_topic_is_at_most_128_characters_of_printable_text() {
        assert!(Topic::parse("").is_ok());
        assert!(Topic::parse("sku-42").is_ok());
        assert!(
            Topic::parse(&"é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            Topic::parse(&"x".repeat(129)).expect_err("long").code,
            ErrorCode::TooLarge
        );
        for bad in ["a\nb", "a\u{0}", "\u{202E}nimda"] {
            assert_eq!(
                Topic::parse(bad).expect_err(bad).code,
                ErrorCode::BadRequest
            );
        }
    }

    #[test]
    fn states_and_roles_round_trip_and_unknown_ones_are_refused() {
        for state in TicketState::ALL {
            assert_eq!(TicketState::parse(state.as_str()), Ok(state));
        }
        assert!(TicketState::parse("waiting").is_err());
        assert_eq!(Role::parse("staff"), Ok(Role::Staff));
        assert!(Role::parse("admin").is_err());
    }

    #[test]
    fn a_ticket_gid_is_a_group_id_that_says_it_is_a_ticket() {
        let alice = UserId::parse("alice").expect("uid");
        let gid = ticket_gid(&alice, &MsgId::parse("m1").expect("msg id"));
        assert!(is_ticket(&gid));
        assert_eq!(
            gid,
            ticket_gid(&alice, &MsgId::parse("m1").expect("msg id"))
        );
        assert_ne!(
            gid,
            ticket_gid(&alice, &MsgId::parse("m2").expect("msg id"))
        );
        assert!(!is_ticket(&GroupId::generate()));
        assert!(ticket_target(gid.as_str()).is_ok());
        assert_eq!(
            ticket_target("group_x").expect_err("not a ticket").code,
            ErrorCode::NotFound
        );
    }

    proptest! {
        #[test]
        fn ticket_gids_are_valid_for_any_customer_and_msg_id(uid in "[a-z]{1,64}", msg in "[ -~]{1,64}") {
            let gid = ticket_gid(&UserId::parse(&uid).expect("uid"), &MsgId::parse(&msg).expect("msg"));
            prop_assert!(GroupId::parse(gid.as_str()).is_ok());
        }
    }
}
