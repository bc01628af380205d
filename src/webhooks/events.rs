//! What webhooks carry: the event types an endpoint subscribes to, each event's `data`, the
//! JSON envelope and its signature (contract §13). Owns the wire shape only.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The longest preview of a message's text in a notice, in characters.
pub const PREVIEW_CHARS: usize = 100;

/// A webhook event type, as endpoints name them in their `events` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A stored `message` still unconfirmed by a user with no socket anywhere.
    #[serde(rename = "message.offline")]
    MessageOffline,
    /// A support ticket was opened (§10).
    #[serde(rename = "ticket.opened")]
    TicketOpened,
    /// A staff member claimed a ticket (§10).
    #[serde(rename = "ticket.claimed")]
    TicketClaimed,
    /// A group was created.
    #[serde(rename = "group.created")]
    GroupCreated,
    /// A user came online or went offline (everywhere).
    #[serde(rename = "presence")]
    Presence,
}

impl EventKind {
    /// Every type, in the contract's order.
    pub const ALL: [EventKind; 5] = [
        EventKind::MessageOffline,
        EventKind::TicketOpened,
        EventKind::TicketClaimed,
        EventKind::GroupCreated,
        EventKind::Presence,
    ];

    /// The name on the wire (`type`, the `Webchat-Event` header, the `events` filter).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageOffline => "message.offline",
            Self::TicketOpened => "ticket.opened",
            Self::TicketClaimed => "ticket.claimed",
            Self::GroupCreated => "group.created",
            Self::Presence => "presence",
        }
    }

    /// The type named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Its bit in a set of types kept as one integer (one bit per type).
    pub(crate) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// `message.offline`: one per stored message (see the module docs of `webhooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageOffline {
    /// The recipient, who had no socket.
    pub uid: String,
    /// The sender.
    pub from: String,
    /// The sender's display name (filled in when the notice is sent).
    #[serde(rename = "fromName", default)]
    pub from_name: String,
    /// The group, for a group message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gid: Option<String>,
    /// The message's MsgID.
    #[serde(rename = "MsgID")]
    pub msg_id: String,
    /// The recipient's Seq of it.
    #[serde(rename = "Seq")]
    pub seq: u64,
    /// When the server accepted it, unix ms.
    #[serde(rename = "sentAt")]
    pub sent_at: i64,
    /// The start of its text ([`PREVIEW_CHARS`] at most).
    pub preview: String,
}

impl MessageOffline {
    /// The conversation a client opens for it: the group, or the sender.
    pub fn conversation(&self) -> &str {
        self.gid.as_deref().unwrap_or(&self.from)
    }
}

/// `ticket.opened` / `ticket.claimed`: the ticket as §10's `ticket` event body describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketData {
    /// The ticket's group.
    pub gid: String,
    /// Who opened it.
    pub customer: String,
    /// The customer's topic (an item id, say); empty when none was given.
    pub topic: String,
    /// The staff member holding it, once claimed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub staff: Option<String>,
    /// Unix ms.
    #[serde(rename = "openedAt")]
    pub opened_at: i64,
    /// Unix ms, once claimed.
    #[serde(rename = "claimedAt", skip_serializing_if = "Option::is_none", default)]
    pub claimed_at: Option<i64>,
}

/// `group.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCreated {
    /// The new group.
    pub gid: String,
    /// Who created it.
    pub creator: String,
    /// Its members, creator included (at most [`GroupCreated::MAX_LISTED`]; see `memberCount`).
    pub members: Vec<String>,
    /// How many members it has.
    #[serde(rename = "memberCount")]
    pub member_count: usize,
}

impl GroupCreated {
    /// Members listed in one call; a larger group's list is cut (its count is whole).
    pub const MAX_LISTED: usize = 1000;

    /// The event for `gid` made by `creator` with `members`.
    pub fn new(gid: &str, creator: &str, members: &[String]) -> Self {
        Self {
            gid: gid.to_owned(),
            creator: creator.to_owned(),
            members: members.iter().take(Self::MAX_LISTED).cloned().collect(),
            member_count: members.len(),
        }
    }
}

/// `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// Whose.
    pub uid: String,
    /// `online` or `offline`.
    pub state: String,
    /// When the change was announced, unix ms: with `uid` and `state`, what tells this change
    /// from the user's others (not in `data`: the envelope's `at` says when it was sent).
    #[serde(skip)]
    pub changed_at: i64,
}

/// One event for the endpoints that subscribe to its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// See [`MessageOffline`].
    MessageOffline(MessageOffline),
    /// A ticket was opened (emitted by the support desk).
    TicketOpened(TicketData),
    /// A ticket was claimed (emitted by the support desk).
    TicketClaimed(TicketData),
    /// See [`GroupCreated`].
    GroupCreated(GroupCreated),
    /// See [`PresenceChange`].
    Presence(PresenceChange),
}

impl WebhookEvent {
    /// Its type.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::MessageOffline(_) => EventKind::MessageOffline,
            Self::TicketOpened(_) => EventKind::TicketOpened,
            Self::TicketClaimed(_) => EventKind::TicketClaimed,
            Self::GroupCreated(_) => EventKind::GroupCreated,
            Self::Presence(_) => EventKind::Presence,
        }
    }

    /// What tells this event from every other of its type, whoever emits it and however
    /// often: a message's recipient and Seq, a ticket's gid (and, claimed, its holder: a
    /// ticket is claimed once), a group's gid, a presence change's uid, state and time.
    pub fn event_id(&self) -> String {
        // A JSON array: its parts can never run together into another event's id.
        match self {
            Self::MessageOffline(d) => json!([d.uid, d.seq]),
            Self::TicketOpened(d) => json!([d.gid]),
            Self::TicketClaimed(d) => json!([d.gid, d.staff]),
            Self::GroupCreated(d) => json!([d.gid]),
            Self::Presence(d) => json!([d.uid, d.state, d.changed_at]),
        }
        .to_string()
    }

    /// Its delivery id for the endpoint `endpoint_id` (`d_` and 32 hex digits): derived from
    /// the endpoint, the type and [`WebhookEvent::event_id`], never drawn at random, so the
    /// same event emitted again (a re-sent command, a step run again after a failure) is the
    /// same delivery: the queue holds it once, and receivers dedupe by it.
    pub fn delivery_id(&self, endpoint_id: &str) -> String {
        let mut hash = Sha256::new();
        for part in [endpoint_id, self.kind().as_str(), &self.event_id()] {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("d_{hex}")
    }

    /// Its `data` object.
    pub fn data(&self) -> Value {
        let data = match self {
            Self::MessageOffline(d) => serde_json::to_value(d),
            Self::TicketOpened(d) | Self::TicketClaimed(d) => serde_json::to_value(d),
            Self::GroupCreated(d) => serde_json::to_value(d),
            Self::Presence(d) => serde_json::to_value(d),
        };
        // Plain structs of strings and numbers always serialize.
        data.unwrap_or(Value::Null)
    }

    /// The body of one call: `{"id","type","at","data"}`, `id` being the delivery id.
    pub fn envelope(&self, delivery_id: &str, at: i64) -> String {
        json!({
            "id": delivery_id,
            "type": self.kind().as_str(),
            "at": at,
            "data": self.data(),
        })
        .to_string()
    }
}

/// `Webchat-Signature` for `body` sent at `t` (unix seconds):
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of any length")
}

/// The first [`PREVIEW_CHARS`] characters of `body`, with `…` when cut; `(attachment)` for
/// a message with no text.
pub fn preview(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(attachment)".to_owned();
    }
    let mut chars = body.chars();
    let mut out: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_ones_do_not_parse() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                Value::String(kind.as_str().into())
            );
        }
        assert_eq!(EventKind::parse("message.sent"), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_t_dot_body() {
        // Known answer computed independently (python hmac, sha256).
        assert_eq!(
            signature("whsec", 1700000000, r#"{"a":1}"#),
            "t=1700000000,v1=".to_owned() + &hex_hmac("whsec", r#"1700000000.{"a":1}"#)
        );
        assert_ne!(
            signature("whsec", 1700000000, "x"),
            signature("whsec", 1700000001, "x")
        );
    }

    fn hex_hmac(key: &str, text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(text.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn ticket_events_carry_the_ticket_body() {
        let event = WebhookEvent::TicketClaimed(TicketData {
            gid: "group_1".into(),
            customer: "ann".into(),
            topic: "sku-1".into(),
            staff: Some("bob".into()),
            opened_at: 1,
            claimed_at: Some(2),
        });
        let body: Value = serde_json::from_str(&event.envelope("d1", 3)).expect("json");
        assert_eq!(body["type"], "ticket.claimed");
        assert_eq!(body["id"], "d1");
        assert_eq!(body["data"]["staff"], "bob");
        assert_eq!(body["data"]["claimedAt"], 2);
        assert_eq!(body["data"]["openedAt"], 1);
    }

    #[test]
    fn delivery_ids_are_stable_per_endpoint_type_and_event() {
        let claimed = |gid: &str, staff: &str, claimed_at: i64| {
            WebhookEvent::TicketClaimed(TicketData {
                gid: gid.into(),
                customer: "ann".into(),
                topic: String::new(),
                staff: Some(staff.into()),
                opened_at: 1,
                claimed_at: Some(claimed_at),
            })
        };
        let id = claimed("group_ticket-1", "bob", 2).delivery_id("wh_a");
        assert!(id.starts_with("d_") && id.len() == 34, "{id}");
        // The same claim emitted again, even with another send time: the same delivery.
        assert_eq!(claimed("group_ticket-1", "bob", 2).delivery_id("wh_a"), id);
        assert_eq!(claimed("group_ticket-1", "bob", 3).delivery_id("wh_a"), id);
        // Another endpoint, ticket, holder or type: another delivery.
        assert_ne!(claimed("group_ticket-1", "bob", 2).delivery_id("wh_b"), id);
        assert_ne!(claimed("group_ticket-2", "bob", 2).delivery_id("wh_a"), id);
        assert_ne!(claimed("group_ticket-1", "cy", 2).delivery_id("wh_a"), id);
        let opened = WebhookEvent::TicketOpened(TicketData {
            gid: "group_ticket-1".into(),
            customer: "ann".into(),
            topic: String::new(),
            staff: None,
            opened_at: 1,
            claimed_at: None,
        });
        assert_ne!(opened.delivery_id("wh_a"), id);
        let presence = |changed_at| {
            WebhookEvent::Presence(PresenceChange {
                uid: "ann".into(),
                state: "online".into(),
                changed_at,
            })
        };
        assert_eq!(
            presence(5).delivery_id("wh_a"),
            presence(5).delivery_id("wh_a")
        );
        assert_ne!(
            presence(5).delivery_id("wh_a"),
            presence(6).delivery_id("wh_a")
        );
        assert_eq!(
            presence(5).data(),
            json!({"uid": "ann", "state": "online"}),
            "the change time is not in data"
        );
    }

    #[test]
    fn a_preview_is_cut_at_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(preview("hi"), "hi");
        assert_eq!(preview(""), "(attachment)");
    }
}
