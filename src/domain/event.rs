//! The `chat` envelope as it travels on the wire, and its parse into a [`ClientCommand`].
//!
//! Client input is decoded from a loose JSON value (object or JSON-encoded string) field by
//! field, so every mistake gets a precise `bad_request` instead of a generic serde message.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    lifecycle::{LifecycleCommand, LifecycleKind},
    parse_attachments,
    support::{ticket_target, SupportCommand, Topic},
    AttachmentId, ChatError, GroupId, MessageBody, MsgId, Seq, UserId,
};

/// Every `EvtType` of the contract (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtType {
    /// A chat message.
    Message,
    /// A recipient received a message.
    Delivery,
    /// A recipient displayed a message.
    Display,
    /// Typing indicator (live-only).
    Typing,
    /// Group created / member list.
    Create,
    /// Members added to a group.
    Refer,
    /// A member left a group.
    Depart,
    /// A member asks for the member list.
    Rejoin,
    /// The acting user blocks `To` (§16).
    Block,
    /// The acting user unblocks `To` (§16).
    Unblock,
    /// A lifecycle event (§11): `edit`, `delete`, `react` or `unreact`.
    Lifecycle(LifecycleKind),
    /// Open a support ticket (§10).
    Support,
    /// A staff member takes a ticket (§10).
    Claim,
    /// End a ticket (§10).
    Close,
}

impl EvtType {
    /// Parses a client-sent EvtType.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        Ok(match raw {
            "message" => Self::Message,
            "delivery" => Self::Delivery,
            "display" => Self::Display,
            "typing" => Self::Typing,
            "create" => Self::Create,
            "refer" => Self::Refer,
            "depart" => Self::Depart,
            "rejoin" => Self::Rejoin,
            "block" => Self::Block,
            "unblock" => Self::Unblock,
            "edit" => Self::Lifecycle(LifecycleKind::Edit),
            "delete" => Self::Lifecycle(LifecycleKind::Delete),
            "react" => Self::Lifecycle(LifecycleKind::React),
            "unreact" => Self::Lifecycle(LifecycleKind::Unreact),
            "support" => Self::Support,
            "claim" => Self::Claim,
            "close" => Self::Close,
            "" => return Err(ChatError::bad_request("EvtType is required")),
            other => {
                return Err(ChatError::bad_request(format!(
                    "unknown EvtType {:?}",
                    truncate(other, 32)
                )))
            }
        })
    }
}

/// Which receipt a recipient sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// The message reached a client.
    Delivery,
    /// The message was shown to the user.
    Display,
}

impl ReceiptKind {
    /// The EvtType string of this receipt.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivery => "delivery",
            Self::Display => "display",
        }
    }
}

/// A validated request from a client's `chat` event. Identity is not part of it: the acting
/// user always comes from the session.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    /// Send a 1:1 message.
    Message {
        /// Recipient.
        to: UserId,
        /// Client-made idempotency key.
        msg_id: MsgId,
        /// Text.
        body: MessageBody,
        /// The sender's uploads it carries (§12), at most ten.
        attachments: Vec<AttachmentId>,
    },
    /// Send a message to every other member of a group.
    GroupMessage {
        /// The group.
        gid: GroupId,
        /// Client-made idempotency key.
        msg_id: MsgId,
        /// Text.
        body: MessageBody,
        /// The sender's uploads it carries (§12), at most ten.
        attachments: Vec<AttachmentId>,
    },
    /// Forward a receipt to the original sender.
    Receipt {
        /// Delivery or display.
        kind: ReceiptKind,
        /// The original sender.
        to: UserId,
        /// The original message.
        msg_id: MsgId,
        /// Optional: the Seq the reader saw it under, confirming its inbox up to there.
        seq: Option<Seq>,
    },
    /// Forward a group receipt to the original sender.
    GroupReceipt {
        /// Delivery or display.
        kind: ReceiptKind,
        /// The group the message went to.
        gid: GroupId,
        /// The original sender.
        to: UserId,
        /// The original message.
        msg_id: MsgId,
        /// Optional: the Seq the reader saw it under, confirming its inbox up to there.
        seq: Option<Seq>,
    },
    /// Live typing indicator to a user.
    Typing {
        /// Who is told.
        to: UserId,
        /// `true` for "1".
        active: bool,
    },
    /// Live typing indicator to a group's other members.
    GroupTyping {
        /// The group.
        gid: GroupId,
        /// `true` for "1".
        active: bool,
    },
    /// Create a group with the acting user and `members`.
    Create {
        /// The id the client chose, or none for a server-made one.
        gid: Option<GroupId>,
        /// Members besides the creator (deduplicated, never empty).
        members: Vec<UserId>,
        /// Idempotency key, when the client sent one.
        msg_id: Option<MsgId>,
    },
    /// Add members to a group.
    Refer {
        /// The group.
        gid: GroupId,
        /// Users to add (deduplicated, never empty).
        members: Vec<UserId>,
        /// Idempotency key, when the client sent one.
        msg_id: Option<MsgId>,
    },
    /// The acting user leaves a group.
    Depart {
        /// The group.
        gid: GroupId,
        /// Idempotency key, when the client sent one.
        msg_id: Option<MsgId>,
    },
    /// Ask for a group's member list.
    Rejoin {
        /// The group.
        gid: GroupId,
    },
    /// Block or unblock a user (§16).
    Block {
        /// Who is blocked or unblocked.
        target: UserId,
        /// `true` for `block`, `false` for `unblock`.
        active: bool,
        /// Echoed in the ack, when the client sent one.
        msg_id: Option<MsgId>,
    },
    /// A reply, edit, delete or reaction (§11).
    Lifecycle(LifecycleCommand),
    /// Open, claim or close a support ticket (§10): handled by the support service.
    Support(SupportCommand),
}

impl ClientCommand {
    /// The MsgID the command carries, if any (named in error events).
    pub fn msg_id(&self) -> Option<String> {
        match self {
            Self::Message { msg_id, .. }
            | Self::GroupMessage { msg_id, .. }
            | Self::Receipt { msg_id, .. }
            | Self::GroupReceipt { msg_id, .. } => Some(msg_id.to_string()),
            Self::Create { msg_id, .. }
            | Self::Refer { msg_id, .. }
            | Self::Depart { msg_id, .. }
            | Self::Block { msg_id, .. } => msg_id.as_ref().map(MsgId::to_string),
            Self::Lifecycle(command) => Some(command.msg_id.to_string()),
            Self::Support(command) => command.msg_id(),
            Self::Typing { .. } | Self::GroupTyping { .. } | Self::Rejoin { .. } => None,
        }
    }

    /// Parses the first argument of a client `chat` event.
    ///
    /// Returns the MsgID found (if any) alongside an error, so the error event can name it.
    pub fn parse(raw: Value, max_body_bytes: usize) -> Result<Self, (Option<String>, ChatError)> {
        let object = match raw {
            Value::Object(map) => map,
            Value::String(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err((None, ChatError::bad_request("chat must be a JSON object"))),
                Err(e) => {
                    return Err((
                        None,
                        ChatError::bad_request(format!("chat is not valid JSON: {e}")),
                    ))
                }
            },
            _ => return Err((None, ChatError::bad_request("chat must be a JSON object"))),
        };
        let msg_id_text = match object.get("MsgID") {
            Some(Value::String(s)) => Some(truncate(s, 64).to_owned()),
            _ => None,
        };
        Self::from_fields(&object, max_body_bytes).map_err(|e| (msg_id_text, e))
    }

    fn from_fields(
        object: &serde_json::Map<String, Value>,
        max_body_bytes: usize,
    ) -> Result<Self, ChatError> {
        let evt_type = EvtType::parse(string_field(object, "EvtType")?)?;
        let to_text = string_field(object, "To")?;
        let to_group = to_text.starts_with("group_");
        let to = || UserId::parse(to_text);
        let gid = || GroupId::parse(to_text);
        let msg_id = || MsgId::parse(string_field(object, "MsgID")?);
        let optional_msg_id = || match string_field(object, "MsgID")? {
            "" => Ok(None),
            id => MsgId::parse(id).map(Some),
        };
        let body = || string_field(object, "Body");
        let reference = string_field(object, "Ref")?;
        match evt_type {
            // A message with a Ref is a reply (§11). It carries text only: attachments on a
            // reply are refused rather than dropped unseen (docs/protocol.md).
            EvtType::Message if !reference.is_empty() => {
                if !parse_attachments(object.get("Attachments"))?.is_empty() {
                    return Err(ChatError::bad_request(
                        "a reply carries no Attachments; send them in a message",
                    ));
                }
                Ok(Self::Lifecycle(LifecycleCommand::parse(
                    LifecycleKind::Reply,
                    to_text,
                    string_field(object, "MsgID")?,
                    reference,
                    object.get("Body"),
                    max_body_bytes,
                )?))
            }
            EvtType::Lifecycle(kind) => Ok(Self::Lifecycle(LifecycleCommand::parse(
                kind,
                to_text,
                string_field(object, "MsgID")?,
                reference,
                object.get("Body"),
                max_body_bytes,
            )?)),
            EvtType::Message => {
                let body = MessageBody::parse(body()?.to_owned(), max_body_bytes)?;
                let attachments = parse_attachments(object.get("Attachments"))?;
                if to_group {
                    Ok(Self::GroupMessage {
                        gid: gid()?,
                        msg_id: msg_id()?,
                        body,
                        attachments,
                    })
                } else {
                    Ok(Self::Message {
                        to: to()?,
                        msg_id: msg_id()?,
                        body,
                        attachments,
                    })
                }
            }
            EvtType::Delivery | EvtType::Display => {
                let kind = if evt_type == EvtType::Delivery {
                    ReceiptKind::Delivery
                } else {
                    ReceiptKind::Display
                };
                let seq = match object.get("Seq") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().ok_or_else(|| {
                        ChatError::bad_request("Seq must be a non-negative integer")
                    })?),
                };
                let from = string_field(object, "From")?;
                if from.starts_with("group_") {
                    return Ok(Self::GroupReceipt {
                        kind,
                        gid: GroupId::parse(from)?,
                        to: to()?,
                        msg_id: msg_id()?,
                        seq,
                    });
                }
                Ok(Self::Receipt {
                    kind,
                    to: to()?,
                    msg_id: msg_id()?,
                    seq,
                })
            }
            EvtType::Typing => {
                let active = match body()? {
                    "1" => true,
                    "0" | "" => false,
                    _ => return Err(ChatError::bad_request("typing Body must be \"1\" or \"0\"")),
                };
                if to_group {
                    Ok(Self::GroupTyping {
                        gid: gid()?,
                        active,
                    })
                } else {
                    Ok(Self::Typing { to: to()?, active })
                }
            }
            EvtType::Create => Ok(Self::Create {
                gid: if to_text.is_empty() {
                    None
                } else {
                    Some(gid()?)
                },
                members: member_list(object)?,
                msg_id: optional_msg_id()?,
            }),
            EvtType::Refer => Ok(Self::Refer {
                gid: gid()?,
                members: member_list(object)?,
                msg_id: optional_msg_id()?,
            }),
            EvtType::Depart => Ok(Self::Depart {
                gid: gid()?,
                msg_id: optional_msg_id()?,
            }),
            EvtType::Rejoin => Ok(Self::Rejoin { gid: gid()? }),
            EvtType::Block | EvtType::Unblock => Ok(Self::Block {
                target: to()?,
                active: evt_type == EvtType::Block,
                msg_id: optional_msg_id()?,
            }),
            EvtType::Support => {
                // The topic is checked first: an over-long one is refused as such even when
                // the rest is fine.
                let topic = match object.get("Topic") {
                    None | Some(Value::Null) => Topic::default(),
                    Some(Value::String(text)) => Topic::parse(text)?,
                    Some(_) => return Err(ChatError::bad_request("Topic must be a string")),
                };
                let body = MessageBody::parse(body()?.to_owned(), max_body_bytes)?;
                if body.as_str().trim().is_empty() {
                    return Err(ChatError::bad_request(
                        "support needs a first message in Body",
                    ));
                }
                Ok(Self::Support(SupportCommand::Open {
                    msg_id: msg_id()?,
                    body,
                    topic,
                }))
            }
            EvtType::Claim => Ok(Self::Support(SupportCommand::Claim {
                gid: ticket_target(to_text)?,
                msg_id: optional_msg_id()?,
            })),
            EvtType::Close => Ok(Self::Support(SupportCommand::Close {
                gid: ticket_target(to_text)?,
                msg_id: optional_msg_id()?,
            })),
        }
    }
}

/// The uid list of a group operation: `Body` as a JSON array of uids, either encoded in the
/// string (as the contract says) or as an array. Duplicates are dropped, order kept.
fn member_list(object: &serde_json::Map<String, Value>) -> Result<Vec<UserId>, ChatError> {
    let parsed;
    let items = match object.get("Body") {
        Some(Value::Array(items)) => items,
        Some(Value::String(text)) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|_| ChatError::bad_request("Body must be a JSON array of uids"))?;
            parsed
                .as_array()
                .ok_or_else(|| ChatError::bad_request("Body must be a JSON array of uids"))?
        }
        _ => return Err(ChatError::bad_request("Body must be a JSON array of uids")),
    };
    let mut members: Vec<UserId> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let uid = UserId::parse(
            item.as_str()
                .ok_or_else(|| ChatError::bad_request("Body must be a JSON array of uids"))?,
        )?;
        if seen.insert(uid.clone()) {
            members.push(uid);
        }
    }
    if members.is_empty() {
        return Err(ChatError::bad_request("the member list is empty"));
    }
    Ok(members)
}

/// A string field; absent or null reads as "", any other type is refused.
fn string_field<'a>(
    object: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, ChatError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ChatError::bad_request(format!("{name} must be a string"))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A server → client `chat` event, also the form events are stored in (without `Seq`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// What the event is.
    #[serde(rename = "EvtType")]
    pub evt_type: String,
    /// 1:1 sender uid (or gid for group events).
    #[serde(rename = "From", default)]
    pub from: String,
    /// Acting uid in groups; "" in 1:1.
    #[serde(rename = "Originated", default)]
    pub originated: String,
    /// Recipient.
    #[serde(rename = "To", default)]
    pub to: String,
    /// Message id.
    #[serde(rename = "MsgID", default)]
    pub msg_id: String,
    /// Unix seconds, server clock.
    #[serde(rename = "Timestamp", default)]
    pub timestamp: i64,
    /// Text or JSON.
    #[serde(rename = "Body", default)]
    pub body: String,
    /// Per-recipient position; absent on live-only events.
    #[serde(rename = "Seq", default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// Unix milliseconds when the server accepted the event.
    #[serde(rename = "SentAt", default)]
    pub sent_at: i64,
    /// On receipts: members who have not displayed the message yet.
    #[serde(rename = "Unread", default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u32>,
    /// Stored events only: the key of the shared body that stands in for `Body` (see
    /// `inbox::shared_body`). A large body sent to many members is stored once, and each
    /// inbox entry names it; the delivery task puts it back as `Body` before a client sees
    /// the event, which never carries this field.
    #[serde(rename = "BodyRef", default, skip_serializing_if = "Option::is_none")]
    pub body_ref: Option<String>,
    /// Lifecycle events and replies (§11): the MsgID of the message this one is about.
    #[serde(rename = "Ref", default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
    /// `message` only: the attachment ids it carries (§12); absent when none.
    #[serde(rename = "Attachments", default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

/// A stored event as a socket gets it: `event` (stored without `Seq`) with its `seq`,
/// serialized like a [`WireEvent`] whose `seq` is set, without copying the event. A group
/// message reaches thousands of sockets of one node, each with its own Seq, and a copy
/// per socket cost six string allocations.
#[derive(Debug, Clone, Copy)]
pub struct WithSeq<'a> {
    /// The stored event.
    pub event: &'a WireEvent,
    /// Its position in the receiver's inbox.
    pub seq: Seq,
    /// The Body to send: the shared body `event.body_ref` names, resolved; `None` sends
    /// `event.body`. `BodyRef` itself is never sent.
    pub shared_body: Option<&'a str>,
}

impl Serialize for WithSeq<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // The fields, names and order of WireEvent's derived form (a unit test compares).
        // Destructured without `..`: a field added to WireEvent fails to compile here.
        let WireEvent {
            evt_type,
            from,
            originated,
            to,
            msg_id,
            timestamp,
            body,
            seq: _,
            sent_at,
            unread,
            body_ref: _,
            reference,
            attachments,
        } = self.event;
        debug_assert!(
            self.shared_body.is_some() || self.event.body_ref.is_none(),
            "a stored event's shared body is resolved before it is sent"
        );
        let body = self.shared_body.unwrap_or(body);
        let fields = 9
            + usize::from(unread.is_some())
            + usize::from(!reference.is_empty())
            + usize::from(!attachments.is_empty());
        let mut out = serializer.serialize_struct("WireEvent", fields)?;
        out.serialize_field("EvtType", evt_type)?;
        out.serialize_field("From", from)?;
        out.serialize_field("Originated", originated)?;
        out.serialize_field("To", to)?;
        out.serialize_field("MsgID", msg_id)?;
        out.serialize_field("Timestamp", timestamp)?;
        out.serialize_field("Body", body)?;
        out.serialize_field("Seq", &self.seq)?;
        out.serialize_field("SentAt", sent_at)?;
        match unread {
            Some(unread) => out.serialize_field("Unread", unread)?,
            None => out.skip_field("Unread")?,
        }
        if reference.is_empty() {
            out.skip_field("Ref")?;
        } else {
            out.serialize_field("Ref", reference)?;
        }
        if attachments.is_empty() {
            out.skip_field("Attachments")?;
        } else {
            out.serialize_field("Attachments", attachments)?;
        }
        out.end()
    }
}

impl WireEvent {
    /// A fresh event stamped with the server clock.
    pub fn new(evt_type: &str, from: &str, to: &str, msg_id: &str, body: String) -> Self {
        let sent_at = now_millis();
        Self {
            evt_type: evt_type.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            msg_id: msg_id.to_owned(),
            body,
            timestamp: sent_at / 1000,
            sent_at,
            ..Self::default()
        }
    }

    /// The `error` event sent when a client emitted without an ack callback.
    pub fn error(msg_id: Option<String>, error: &ChatError) -> Self {
        let body = serde_json::json!({ "code": error.code, "message": error.message }).to_string();
        Self::new("error", "", "", msg_id.as_deref().unwrap_or(""), body)
    }
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_event_with_its_seq_serializes_exactly_as_a_copy_with_seq_set() {
        let mut event = WireEvent::new("message", "g1", "g1", "m1", "a \"quoted\" body".into());
        event.originated = "alice".into();
        let ids = vec!["0123456789abcdef0123456789abcdef".to_owned()];
        for (unread, attachments) in [(None, Vec::new()), (Some(3), ids)] {
            event.unread = unread;
            event.attachments = attachments;
            let mut copy = event.clone();
            copy.seq = Some(42);
            let view = WithSeq {
                event: &event,
                seq: 42,
                shared_body: None,
            };
            assert_eq!(
                serde_json::to_string(&view).expect("json"),
                serde_json::to_string(&copy).expect("json")
            );
        }
    }

    #[test]
    fn a_stored_reference_is_sent_as_the_body_it_names_and_never_itself() {
        let mut stored = WireEvent::new("notify", "g1", "bob", "c1", String::new());
        stored.body_ref = Some("sb-1".into());
        let round_trip: WireEvent =
            serde_json::from_str(&serde_json::to_string(&stored).expect("json")).expect("parse");
        assert_eq!(
            round_trip.body_ref.as_deref(),
            Some("sb-1"),
            "stored with it"
        );

        let view = WithSeq {
            event: &stored,
            seq: 7,
            shared_body: Some("[\"alice\",\"bob\"]"),
        };
        let sent: serde_json::Value = serde_json::to_value(view).expect("json");
        assert_eq!(sent["Body"], "[\"alice\",\"bob\"]");
        assert_eq!(sent["Seq"], 7);
        assert!(sent.get("BodyRef").is_none(), "{sent}");
        let mut expected = stored.clone();
        expected.body = "[\"alice\",\"bob\"]".into();
        expected.body_ref = None;
        expected.seq = Some(7);
        assert_eq!(sent, serde_json::to_value(&expected).expect("json"));
    }

    fn parse(v: Value) -> Result<ClientCommand, (Option<String>, ChatError)> {
        ClientCommand::parse(v, 16)
    }

    #[test]
    fn message_parses_from_object_and_from_json_string() {
        let obj = json!({"EvtType":"message","To":"bob","MsgID":"m1","Body":"hi","From":"mallory"});
        let from_obj = parse(obj.clone()).expect("object");
        let from_str = parse(Value::String(obj.to_string())).expect("string");
        assert_eq!(from_obj, from_str);
        assert!(matches!(from_obj, ClientCommand::Message { ref to, .. } if to.as_str() == "bob"));
    }

    #[test]
    fn errors_name_the_offending_msg_id_and_code() {
        let (id, err) = parse(json!({"EvtType":"nope","MsgID":"m9"})).expect_err("unknown");
        assert_eq!(id.as_deref(), Some("m9"));
        assert_eq!(err.code, ErrorCode::BadRequest);

        let (_, err) =
            parse(json!({"EvtType":"message","To":"bob","MsgID":"m","Body":"x".repeat(17)}))
                .expect_err("too large");
        assert_eq!(err.code, ErrorCode::TooLarge);

        for bad in [
            json!("{not json"),
            json!(42),
            json!({"EvtType":"message","MsgID":"m","Body":"x"}),
            json!({"EvtType":"message","To":"bob","Body":"x"}),
            json!({"EvtType":"message","To":"bob","MsgID":"m","Body":7}),
            json!({"EvtType":"message","To":"group_","MsgID":"m","Body":"x"}),
            json!({"EvtType":"create","To":"","Body":"[]"}),
            json!({"EvtType":"create","To":"","Body":"not json"}),
            json!({"EvtType":"refer","To":"alice","Body":"[\"bob\"]"}),
            json!({"EvtType":"create","To":"","Body":"[\"bad uid\"]"}),
            json!({"EvtType":"delivery","From":"group_","To":"bob","MsgID":"m"}),
            json!({"EvtType":"delivery","To":"bob","MsgID":"m","Seq":-1}),
            json!({"EvtType":"typing","To":"bob","Body":"maybe"}),
        ] {
            let (_, err) = parse(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn group_commands_parse_their_member_lists() {
        let create =
            parse(json!({"EvtType":"create","To":"","Body":"[\"bob\",\"carol\",\"bob\"]"}))
                .expect("create");
        match create {
            ClientCommand::Create {
                gid,
                members,
                msg_id,
            } => {
                assert!(gid.is_none() && msg_id.is_none());
                let names: Vec<&str> = members.iter().map(UserId::as_str).collect();
                assert_eq!(names, ["bob", "carol"], "deduplicated, in order");
            }
            other => panic!("{other:?}"),
        }
        let refer = parse(json!({"EvtType":"refer","To":"group_g","Body":["dan"],"MsgID":"r1"}))
            .expect("refer");
        assert!(matches!(refer, ClientCommand::Refer { ref gid, .. } if gid.as_str() == "group_g"));
        let msg = parse(json!({"EvtType":"message","To":"group_g","MsgID":"m","Body":"hi"}))
            .expect("msg");
        assert!(matches!(msg, ClientCommand::GroupMessage { .. }));
        assert!(matches!(
            parse(json!({"EvtType":"depart","To":"group_g"})).expect("depart"),
            ClientCommand::Depart { .. }
        ));
        assert!(matches!(
            parse(json!({"EvtType":"rejoin","To":"group_g"})).expect("rejoin"),
            ClientCommand::Rejoin { .. }
        ));
    }

    #[test]
    fn block_and_unblock_name_a_user_never_a_group() {
        let block = parse(json!({"EvtType":"block","To":"bob","MsgID":"b1","From":"mallory"}))
            .expect("block");
        assert_eq!(
            block,
            ClientCommand::Block {
                target: UserId::parse("bob").expect("uid"),
                active: true,
                msg_id: Some(MsgId::parse("b1").expect("id")),
            }
        );
        assert!(matches!(
            parse(json!({"EvtType":"unblock","To":"bob"})).expect("unblock"),
            ClientCommand::Block {
                active: false,
                msg_id: None,
                ..
            }
        ));
        for bad in [
            json!({"EvtType":"block","To":"group_g"}),
            json!({"EvtType":"block","To":""}),
            json!({"EvtType":"unblock"}),
        ] {
            let (_, err) = parse(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn wire_event_omits_seq_and_unread_when_absent() {
        let e = WireEvent::new("message", "a", "b", "m", "hi".into());
        let v = serde_json::to_value(&e).expect("serialize");
        assert!(v.get("Seq").is_none());
        assert!(v.get("Unread").is_none());
        assert_eq!(v["EvtType"], "message");
    }

    /// Cases per fuzz property: `WEBCHAT_FUZZ_CASES` (default 2,000).
    fn fuzz_cases() -> u32 {
        std::env::var("WEBCHAT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000)
    }

    const FIELDS: &[&str] = &[
        "EvtType",
        "From",
        "Originated",
        "To",
        "MsgID",
        "Body",
        "Seq",
        "Timestamp",
        "SentAt",
        "Unread",
        "Ref",
    ];

    const EVT_TYPES: &[&str] = &[
        "message", "delivery", "display", "typing", "create", "refer", "depart", "rejoin", "block",
        "unblock", "notify", "error", "presence", "join", "Message", "", "edit", "delete", "react",
        "unreact",
    ];

    /// Strings near every rule: uids and gids around their length limits, EvtTypes, member
    /// lists as JSON text, bodies around the size limit, any Unicode including controls.
    fn fuzz_string() -> BoxedStrategy<String> {
        prop_oneof![
            Just(String::new()),
            prop::sample::select(EVT_TYPES).prop_map(str::to_owned),
            "[A-Za-z0-9_.@+-]{1,70}",
            "group_[A-Za-z0-9_.@+-]{0,64}",
            "\\PC{0,80}",
            any::<String>(),
            (0usize..40).prop_map(|n| "\u{7f}".repeat(n)),
            (FUZZ_MAX_BODY - 4..FUZZ_MAX_BODY + 4).prop_map(|n| "b".repeat(n)),
            (FUZZ_MAX_BODY / 4 - 2..FUZZ_MAX_BODY / 4 + 2).prop_map(|n| "\u{1F600}".repeat(n)),
            prop::collection::vec("[a-z@._+-]{0,10}|group_[a-z]{1,4}", 0..6)
                .prop_map(|v| serde_json::to_string(&v).unwrap_or_default()),
        ]
        .boxed()
    }

    fn fuzz_leaf() -> BoxedStrategy<Value> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            3 => fuzz_string().prop_map(Value::from),
        ]
        .boxed()
    }

    fn field_name() -> BoxedStrategy<String> {
        prop_oneof![
            3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
            1 => "\\PC{0,12}",
        ]
        .boxed()
    }

    /// Any JSON value, a few levels deep.
    fn fuzz_json() -> BoxedStrategy<Value> {
        fuzz_leaf()
            .prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(field_name(), inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
            .boxed()
    }

    /// Envelope-shaped objects: each field present or not, mostly plausible, sometimes any
    /// JSON, with extra fields.
    fn fuzz_envelope() -> BoxedStrategy<Value> {
        let field = || {
            prop::option::weighted(
                0.8,
                prop_oneof![4 => fuzz_string().prop_map(Value::from), 1 => fuzz_json()],
            )
        };
        (
            prop::option::weighted(0.95, prop::sample::select(EVT_TYPES)),
            field(),
            field(),
            field(),
            field(),
            field(),
            prop::option::of(fuzz_leaf()),
            prop::collection::btree_map(field_name(), fuzz_leaf(), 0..3),
        )
            .prop_map(|(evt, to, from, originated, msg_id, body, seq, extra)| {
                let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
                for (name, value) in [
                    ("EvtType", evt.map(Value::from)),
                    ("To", to),
                    ("From", from),
                    ("Originated", originated),
                    ("MsgID", msg_id),
                    ("Body", body),
                    ("Seq", seq),
                ] {
                    if let Some(value) = value {
                        object.insert(name.to_owned(), value);
                    }
                }
                Value::Object(object)
            })
            .boxed()
    }

    /// JSON-ish text, as a client may send the envelope: valid, truncated, deeply nested,
    /// with lone surrogate and bad escapes, with numbers out of every range.
    fn fuzz_text() -> BoxedStrategy<String> {
        let escapes = prop::collection::vec(
            prop::sample::select(vec![
                "\\ud800",
                "\\udfff",
                "\\ud83d\\ude00",
                "\\ud83d",
                "\\u0000",
                "\\uffff",
                "\\\"",
                "\\\\",
                "\\x41",
                "\\u12",
                "\\",
                "\u{0}",
                "\n",
                "a",
            ]),
            0..8,
        )
        .prop_map(|parts| parts.concat());
        let numbers = prop::sample::select(vec![
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551616",
            "18446744073709551615",
            "-9223372036854775809",
            "-0",
            "0.5",
            "1.0",
            "123456789012345678901234567890",
            "NaN",
            "Infinity",
            "01",
            "+1",
            "1e",
            ".5",
        ]);
        prop_oneof![
            fuzz_envelope().prop_map(|v| v.to_string()),
            fuzz_json().prop_map(|v| v.to_string()),
            fuzz_envelope().prop_flat_map(|v| {
                let text = v.to_string();
                let len = text.len();
                (Just(text), 0..=len).prop_map(|(t, cut)| {
                    let mut cut = cut;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t[..cut].to_owned()
                })
            }),
            any::<String>(),
            (1usize..100_000).prop_map(|n| "[".repeat(n)),
            (1usize..2_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
            (1usize..2_000).prop_map(|n| {
                format!(
                    "{{\"EvtType\":\"create\",\"To\":\"\",\"Body\":{}{}}}",
                    "[".repeat(n),
                    "]".repeat(n)
                )
            }),
            (prop::sample::select(EVT_TYPES), escapes).prop_map(|(evt, e)| {
                format!(
                    "{{\"EvtType\":\"{evt}\",\"To\":\"{e}\",\"MsgID\":\"{e}\",\"Body\":\"{e}\"}}"
                )
            }),
            (prop::sample::select(EVT_TYPES), numbers).prop_map(|(evt, n)| {
                format!("{{\"EvtType\":\"{evt}\",\"To\":\"bob\",\"MsgID\":\"m\",\"Seq\":{n},\"Body\":{n}}}")
            }),
        ]
        .boxed()
    }

    /// Any first argument of a `chat` event.
    fn fuzz_input() -> BoxedStrategy<Value> {
        prop_oneof![
            2 => fuzz_envelope(),
            1 => fuzz_json(),
            2 => fuzz_text().prop_map(Value::String),
            1 => (1usize..20_000).prop_map(|n| json!({"EvtType":"create","To":"","Body":"[".repeat(n)})),
        ]
        .boxed()
    }

    const FUZZ_MAX_BODY: usize = 64;

    /// What a refusal and an accepted command must look like.
    fn check_parse(input: Value) -> Result<(), TestCaseError> {
        match ClientCommand::parse(input, FUZZ_MAX_BODY) {
            Err((msg_id, e)) => {
                prop_assert!(
                    matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
                    "parse refused with {:?}",
                    e.code
                );
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.message.len() <= 512, "long error message: {}", e.message);
                if let Some(id) = &msg_id {
                    prop_assert!(id.len() <= 64, "MsgID echoed unbounded: {}", id.len());
                }
                // What the client gets: an ack body and an error event, both well formed.
                let ack = e.to_json();
                prop_assert_eq!(ack["error"]["code"].as_str(), Some(e.code.as_str()));
                let event = serde_json::to_value(WireEvent::error(msg_id, &e))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let body: Value = serde_json::from_str(event["Body"].as_str().unwrap_or(""))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(body["code"].as_str(), Some(e.code.as_str()));
            }
            Ok(command) => {
                let uid_ok = |u: &UserId| UserId::parse(u.as_str()).is_ok();
                let gid_ok = |g: &GroupId| GroupId::parse(g.as_str()).is_ok();
                let id_ok = |m: &MsgId| MsgId::parse(m.as_str()).is_ok() && m.as_str().len() <= 64;
                let members_ok = |members: &[UserId]| {
                    let unique: std::collections::HashSet<&UserId> = members.iter().collect();
                    !members.is_empty()
                        && unique.len() == members.len()
                        && members.iter().all(uid_ok)
                };
                let valid = match &command {
                    ClientCommand::Message {
                        to, msg_id, body, ..
                    } => {
                        uid_ok(to)
                            && id_ok(msg_id)
                            && body.clone().into_inner().len() <= FUZZ_MAX_BODY
                    }
                    ClientCommand::GroupMessage {
                        gid, msg_id, body, ..
                    } => {
                        gid_ok(gid)
                            && id_ok(msg_id)
                            && body.clone().into_inner().len() <= FUZZ_MAX_BODY
                    }
                    ClientCommand::Receipt { to, msg_id, .. } => uid_ok(to) && id_ok(msg_id),
                    ClientCommand::GroupReceipt {
                        gid, to, msg_id, ..
                    } => gid_ok(gid) && uid_ok(to) && id_ok(msg_id),
                    ClientCommand::Typing { to, .. } => uid_ok(to),
                    ClientCommand::GroupTyping { gid, .. } | ClientCommand::Rejoin { gid } => {
                        gid_ok(gid)
                    }
                    ClientCommand::Create {
                        gid,
                        members,
                        msg_id,
                    } => {
                        gid.as_ref().is_none_or(gid_ok)
                            && members_ok(members)
                            && msg_id.as_ref().is_none_or(id_ok)
                    }
                    ClientCommand::Refer {
                        gid,
                        members,
                        msg_id,
                    } => gid_ok(gid) && members_ok(members) && msg_id.as_ref().is_none_or(id_ok),
                    ClientCommand::Depart { gid, msg_id } => {
                        gid_ok(gid) && msg_id.as_ref().is_none_or(id_ok)
                    }
                    ClientCommand::Block { target, msg_id, .. } => {
                        uid_ok(target) && msg_id.as_ref().is_none_or(id_ok)
                    }
                    ClientCommand::Lifecycle(command) => {
                        let target_ok = match &command.target {
                            crate::domain::lifecycle::Target::User(u) => uid_ok(u),
                            crate::domain::lifecycle::Target::Group(g) => gid_ok(g),
                        };
                        target_ok
                            && id_ok(&command.msg_id)
                            && id_ok(&command.reference)
                            && command.body.len() <= FUZZ_MAX_BODY
                    }
                    ClientCommand::Support(crate::domain::support::SupportCommand::Open {
                        msg_id,
                        body,
                        topic,
                    }) => {
                        id_ok(msg_id)
                            && body.as_str().len() <= FUZZ_MAX_BODY
                            && topic.as_str().chars().count() <= 128
                    }
                    ClientCommand::Support(
                        crate::domain::support::SupportCommand::Claim { gid, msg_id }
                        | crate::domain::support::SupportCommand::Close { gid, msg_id },
                    ) => {
                        crate::domain::support::is_ticket(gid) && msg_id.as_ref().is_none_or(id_ok)
                    }
                };
                prop_assert!(valid, "accepted an invalid command: {:?}", command);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: fuzz_cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The fuzz target: `ClientCommand::parse` never panics on any input, refuses only
        /// with `bad_request`/`too_large` (short messages, bounded MsgID echo) and accepts
        /// only commands whose every field is valid.
        #[test]
        fn fuzz_parse_is_total_and_refuses_with_contract_codes(input in fuzz_input()) {
            check_parse(input)?;
        }

        /// An envelope sent as an object and as its JSON text parses the same.
        #[test]
        fn fuzz_object_and_its_json_text_parse_alike(envelope in fuzz_envelope()) {
            let text = Value::String(envelope.to_string());
            prop_assert_eq!(ClientCommand::parse(envelope, FUZZ_MAX_BODY), ClientCommand::parse(text, FUZZ_MAX_BODY));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_json_text(text in "\\PC{0,200}") {
            let _ = parse(Value::String(text));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_field_values(
            evt in prop_oneof![Just("message"), Just("delivery"), Just("typing"), Just("x")],
            to in "\\PC{0,70}", id in "\\PC{0,70}", body in "\\PC{0,30}", seq in any::<i64>()
        ) {
            let _ = parse(json!({"EvtType":evt,"To":to,"MsgID":id,"Body":body,"Seq":seq}));
        }
    }
}
