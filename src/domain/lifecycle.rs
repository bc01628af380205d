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
/// [`MAX_EMOJI_BYTES`] bytes that is an emoji: it holds a pictographic character (the main
/// emoji blocks, approximating Unicode's `Extended_Pictographic`), or is a flag (two regional
/// indicators) or a keycap (`[0-9#*]`, VS16 perhaps, U+20E3); and no whitespace, control
/// or invisible format character but the joiner (ZWJ), the variation selectors and the tags
/// of a subdivision flag (after U+1F3F4).
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
    let first = text.chars().next();
    let tags_allowed = first == Some('\u{1F3F4}');
    let invisible = text.chars().any(|c| match c {
        '\u{E0020}'..='\u{E007F}' => !tags_allowed,
        c => is_format(c),
    });
    if invisible || !(text.chars().any(is_pictographic) || is_flag(text) || is_keycap(text)) {
        return Err(ChatError::bad_request("a reaction must be an emoji"));
    }
    Ok(text)
}

/// Whether `c` is in the main emoji blocks (approximates `Extended_Pictographic`; regional
/// indicators count only as a pair, see [`is_flag`]).
fn is_pictographic(c: char) -> bool {
    matches!(c,
        '\u{1F000}'..='\u{1F1E5}'
        | '\u{1F200}'..='\u{1FAFF}'
        | '\u{2600}'..='\u{27BF}'
        | '\u{2B00}'..='\u{2BFF}'
        | '\u{2190}'..='\u{21FF}'
        | '\u{2300}'..='\u{23FF}'
        | '\u{25A0}'..='\u{25FF}'
        | '\u{3030}'
        | '\u{303D}'
        | '\u{3297}'
        | '\u{3299}'
        | '\u{00A9}'
        | '\u{00AE}'
        | '\u{203C}'
        | '\u{2049}'
        | '\u{2122}'
        | '\u{2139}'
        | '\u{24C2}')
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c, '\u{1F1E6}'..='\u{1F1FF}')
}

/// A flag: two regional indicators.
fn is_flag(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(
        (chars.next(), chars.next(), chars.next()),
        (Some(a), Some(b), None) if is_regional_indicator(a) && is_regional_indicator(b)
    )
}

/// A keycap: `[0-9#*]`, VS16 perhaps, U+20E3.
fn is_keycap(text: &str) -> bool {
    let mut chars = text.chars();
    let Some(key) = chars.next() else {
        return false;
    };
    let rest: Vec<char> = chars.collect();
    (key.is_ascii_digit() || key == '#' || key == '*')
        && matches!(rest.as_slice(), ['\u{20E3}'] | ['\u{FE0F}', '\u{20E3}'])
}

/// Whether `c` is a format character (general category Cf) other than the joiner (ZWJ):
/// invisible, so never part of a reaction. Tags (U+E0020..U+E007F) are judged by the caller.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200C}'
        | '\u{200E}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;
    use serde_json::json;

    #[test]
    fn one_emoji_is_a_reaction_whatever_its_code_points() {
        for ok in [
            "👍",
            "❤️",
            "👍🏽",
            "🇫🇷",
            "1️⃣",
            "#\u{20E3}",
            "👨‍👩‍👧",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "©",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
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
            // Invisible or not an emoji.
            "\u{200B}",
            "\u{0301}",
            "a\u{0301}",
            "中",
            "é",
            "\u{E0067}",
            "\u{E0067}\u{E0062}\u{E007F}",
            "👍\u{E0067}",
            "👍\u{200B}",
            "\u{FEFF}",
            "\u{2063}",
            "\u{1F1EB}",
            "1\u{FE0F}",
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
