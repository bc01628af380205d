//! The message-lifecycle commands of contract §11: replies, edits, deletes and reactions.
//!
//! Each is an event of its own (own MsgID, stored, Seq, acked) that names an earlier message
//! of the same conversation in `Ref`. This module parses and validates the client's fields;
//! who may do what, and whether `Ref` exists, is the `lifecycle` service's.

use serde_json::Value;
use unicode_segmentation::UnicodeSegmentation;

use super::{ChatError, GroupId, MessageBody, MsgId, UserId};

/// Largest reaction, in UTF-8 bytes (contract §11).
pub const MAX_EMOJI_BYTES: usize = 32;

/// Which lifecycle event a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind {
    /// A `message` with `Ref`: a reply.
    Reply,
    /// New text for the referenced message.
    Edit,
    /// The referenced message is taken back.
    Delete,
    /// An emoji is added to the referenced message.
    React,
    /// An emoji the actor added is removed.
    Unreact,
}

impl LifecycleKind {
    /// The EvtType on the wire (a reply is a `message`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "message",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::React => "react",
            Self::Unreact => "unreact",
        }
    }

    /// The kind of a stored EvtType other than a plain `message`.
    pub fn from_evt_type(evt_type: &str) -> Option<Self> {
        Some(match evt_type {
            "edit" => Self::Edit,
            "delete" => Self::Delete,
            "react" => Self::React,
            "unreact" => Self::Unreact,
            _ => return None,
        })
    }
}

/// Where a lifecycle event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A 1:1 conversation with this user.
    User(UserId),
    /// A group.
    Group(GroupId),
}

/// A validated lifecycle command. The actor is not part of it (it comes from the session).
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleCommand {
    /// What it does.
    pub kind: LifecycleKind,
    /// The conversation.
    pub target: Target,
    /// This event's own idempotency key.
    pub msg_id: MsgId,
    /// The message it is about.
    pub reference: MsgId,
    /// Reply / edit: the text; react / unreact: the emoji; delete: "".
    pub body: String,
}

impl LifecycleCommand {
    /// Parses the fields of a lifecycle event (`raw_ref` is the `Ref` field, `body` the
    /// `Body`), with `to` the conversation's `To`.
    pub fn parse(
        kind: LifecycleKind,
        to: &str,
        msg_id: &str,
        raw_ref: &str,
        body: Option<&Value>,
        max_body_bytes: usize,
    ) -> Result<Self, ChatError> {
        let target = if to.starts_with("group_") {
            Target::Group(GroupId::parse(to)?)
        } else {
            Target::User(UserId::parse(to)?)
        };
        let msg_id = MsgId::parse(msg_id)?;
        if raw_ref.is_empty() {
            return Err(ChatError::bad_request(format!(
                "{} needs Ref, the MsgID of the message it is about",
                kind.as_str()
            )));
        }
        let reference = MsgId::parse(raw_ref)
            .map_err(|e| ChatError::bad_request(format!("Ref: {}", e.message)))?;
        let text = match body {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(ChatError::bad_request("Body must be a string")),
        };
        let body = match kind {
            LifecycleKind::Reply => {
                MessageBody::parse(text.to_owned(), max_body_bytes)?.into_inner()
            }
            LifecycleKind::Edit => {
                if text.is_empty() {
                    return Err(ChatError::bad_request(
                        "an edit needs the new text; take a message back with delete",
                    ));
                }
                MessageBody::parse(text.to_owned(), max_body_bytes)?.into_inner()
            }
            // Whatever a client sent along, a delete carries no text.
            LifecycleKind::Delete => String::new(),
            LifecycleKind::React | LifecycleKind::Unreact => check_emoji(text)?.to_owned(),
        };
        Ok(Self {
            kind,
            target,
            msg_id,
            reference,
            body,
        })
    }
}

/// Accepts `text` as one reaction: a single extended grapheme cluster of at most
/// [`MAX_EMOJI_BYTES`] bytes that is not plain ASCII, whitespace or a control character.
/// (Telling an emoji from any other symbol needs Unicode's emoji tables; what is refused is
/// what is surely not one: letters and digits of the keyboard, spaces, invisible controls.)
pub fn check_emoji(text: &str) -> Result<&str, ChatError> {
    if text.is_empty() {
        return Err(ChatError::bad_request("a reaction needs one emoji in Body"));
    }
    if text.len() > MAX_EMOJI_BYTES {
        return Err(ChatError::bad_request(format!(
            "a reaction is at most {MAX_EMOJI_BYTES} bytes"
        )));
    }
    let mut clusters = text.graphemes(true);
    if clusters.next().is_none() || clusters.next().is_some() {
        return Err(ChatError::bad_request(
            "a reaction is one emoji (one grapheme cluster)",
        ));
    }
    if text.is_ascii()
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
        || super::has_bidi_controls(text)
    {
        return Err(ChatError::bad_request("a reaction must be an emoji"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;
    use serde_json::json;

    #[test]
    fn one_emoji_is_a_reaction_whatever_its_code_points() {
        for ok in ["👍", "❤️", "👍🏽", "🇫🇷", "1️⃣", "👨‍👩‍👧‍👦", "🏳️‍🌈", "©"]
        {
            assert_eq!(check_emoji(ok).ok(), Some(ok), "{ok:?}");
        }
    }

    #[test]
    fn anything_but_one_emoji_is_refused() {
        let long_family = "👨‍👩‍👧‍👦".to_owned() + "\u{200D}👦\u{200D}👦";
        for bad in [
            "",
            "a",
            "ab",
            "👍👍",
            "👍 ",
            " ",
            "\n",
            "\u{200E}",
            ":)",
            "🇫🇷🇩🇪",
            &long_family,
        ] {
            let err = check_emoji(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad:?}");
        }
    }

    fn parse(
        kind: LifecycleKind,
        to: &str,
        r: &str,
        body: Value,
    ) -> Result<LifecycleCommand, ChatError> {
        LifecycleCommand::parse(kind, to, "e1", r, Some(&body), 16)
    }

    #[test]
    fn every_kind_needs_a_ref_and_its_own_body_rules() {
        for kind in [
            LifecycleKind::Reply,
            LifecycleKind::Edit,
            LifecycleKind::Delete,
            LifecycleKind::React,
            LifecycleKind::Unreact,
        ] {
            let err = parse(kind, "bob", "", json!("👍")).expect_err("no ref");
            assert_eq!(err.code, ErrorCode::BadRequest);
        }
        let edit = parse(LifecycleKind::Edit, "group_g", "m1", json!("fixed")).expect("edit");
        assert_eq!(
            edit.target,
            Target::Group(GroupId::parse("group_g").expect("gid"))
        );
        assert_eq!(edit.reference.as_str(), "m1");
        assert_eq!(
            parse(LifecycleKind::Edit, "bob", "m1", json!(""))
                .expect_err("empty")
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse(LifecycleKind::Edit, "bob", "m1", json!("x".repeat(17)))
                .expect_err("big")
                .code,
            ErrorCode::TooLarge
        );
        let delete = parse(LifecycleKind::Delete, "bob", "m1", json!("ignored")).expect("delete");
        assert_eq!(delete.body, "");
        assert_eq!(
            parse(LifecycleKind::React, "bob", "m1", json!("ok"))
                .expect_err("ascii")
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse(LifecycleKind::React, "bob", "m1", json!(7))
                .expect_err("number")
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse(LifecycleKind::Reply, "bob", "m\u{1}", json!("hi"))
                .expect_err("ctl")
                .code,
            ErrorCode::BadRequest
        );
    }
}
