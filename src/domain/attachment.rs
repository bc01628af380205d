//! Attachment ids as a `message` names them (contract §12): parsed once, so the chat service
//! and the attachment service only ever see well-formed ids.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::ChatError;

/// Most attachments one message may carry.
pub const MAX_ATTACHMENTS: usize = 10;

/// An attachment id: 32 lowercase hex digits (a random UUID, made by the server on upload).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AttachmentId(String);

impl AttachmentId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses an id; anything but 32 lowercase hex digits is `bad_request`.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if raw.len() == 32 && raw.chars().all(hex) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ChatError::bad_request("not an attachment id"))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Attachments` field of a client `message`: absent or `null` is none; otherwise an
/// array of at most [`MAX_ATTACHMENTS`] ids, duplicates dropped (first order kept).
pub fn parse_attachments(field: Option<&Value>) -> Result<Vec<AttachmentId>, ChatError> {
    let items = match field {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ChatError::bad_request(
                "Attachments must be an array of ids",
            ))
        }
    };
    if items.len() > MAX_ATTACHMENTS {
        return Err(ChatError::bad_request(format!(
            "at most {MAX_ATTACHMENTS} attachments per message"
        )));
    }
    let mut ids: Vec<AttachmentId> = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(s) => AttachmentId::parse(s)?,
            _ => {
                return Err(ChatError::bad_request(
                    "Attachments must be an array of ids",
                ))
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        let id = AttachmentId::random();
        assert_eq!(AttachmentId::parse(id.as_str()).expect("own id"), id);
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "../etc/passwd",
            "a".repeat(33).as_str(),
        ] {
            assert!(AttachmentId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_field_is_optional_bounded_and_deduplicated() {
        assert!(parse_attachments(None).expect("absent").is_empty());
        assert!(parse_attachments(Some(&Value::Null))
            .expect("null")
            .is_empty());
        let id = AttachmentId::random();
        let twice = json!([id.as_str(), id.as_str()]);
        assert_eq!(parse_attachments(Some(&twice)).expect("dupes"), [id]);
        let eleven: Vec<String> = (0..11)
            .map(|_| AttachmentId::random().to_string())
            .collect();
        assert!(parse_attachments(Some(&json!(eleven))).is_err());
        assert!(parse_attachments(Some(&json!("abc"))).is_err());
        assert!(parse_attachments(Some(&json!([1]))).is_err());
    }
}
