//! Identifier newtypes: a value of these types has already been checked against the contract.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ChatError, ErrorCode};

/// A user id: 1–64 chars of `[A-Za-z0-9_.@+-]`, never starting with `group_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Parses a uid, refusing anything outside the contract's alphabet and length.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.@+-".contains(c);
        if raw.is_empty() || raw.len() > 64 {
            return Err(ChatError::bad_request("uid must be 1-64 characters"));
        }
        if !raw.chars().all(valid_char) {
            return Err(ChatError::bad_request(
                "uid may only contain letters, digits and _ . @ + -",
            ));
        }
        if raw.starts_with("group_") {
            return Err(ChatError::bad_request("uid must not start with group_"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The uid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group id: `group_` followed by 1–58 chars of the uid alphabet (64 in all).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupId(String);

impl GroupId {
    /// Parses a gid.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.@+-".contains(c);
        match raw.strip_prefix("group_") {
            Some(rest) if !rest.is_empty() && raw.len() <= 64 && rest.chars().all(valid_char) => {
                Ok(Self(raw.to_owned()))
            }
            _ => Err(ChatError::bad_request(
                "a group id is group_ followed by 1-58 letters, digits or _ . @ + -",
            )),
        }
    }

    /// A fresh, unguessable gid.
    pub fn generate() -> Self {
        Self(format!("group_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The gid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-made message id: 1–64 chars, the idempotency key of a send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MsgId(String);

impl MsgId {
    /// Parses a MsgID; control characters are refused so ids stay printable in logs and keys.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        if raw.is_empty() {
            return Err(ChatError::bad_request("MsgID is required"));
        }
        if raw.len() > 64 {
            return Err(ChatError::bad_request("MsgID must be at most 64 bytes"));
        }
        if raw.chars().any(char::is_control) {
            return Err(ChatError::bad_request(
                "MsgID must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The MsgID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Position of a stored event in one user's inbox; strictly increasing per user, starting at 1.
pub type Seq = u64;

/// A message text within the configured size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Accepts `raw` when it is at most `max_bytes` long (UTF-8 bytes).
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, ChatError> {
        if raw.len() > max_bytes {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!("Body is {} bytes; the limit is {max_bytes}", raw.len()),
            ));
        }
        Ok(Self(raw))
    }

    /// The text, borrowed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text.
    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uid_accepts_the_contract_alphabet() {
        for ok in ["a", "alice", "A.b_c-d+e@f", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn uid_refuses_what_the_contract_forbids() {
        for bad in ["", "group_x", "a b", "é", &"x".repeat(65), "a/b", "a\u{0}"] {
            let err = UserId::parse(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn msg_id_is_bounded() {
        assert!(MsgId::parse("m-1").is_ok());
        assert!(MsgId::parse("").is_err());
        assert!(MsgId::parse(&"m".repeat(65)).is_err());
        assert!(MsgId::parse("a\nb").is_err());
    }

    #[test]
    fn body_over_the_limit_is_too_large() {
        assert!(MessageBody::parse("abcd".into(), 4).is_ok());
        let err = MessageBody::parse("abcde".into(), 4).expect_err("over limit");
        assert_eq!(err.code, ErrorCode::TooLarge);
    }

    #[test]
    fn gid_needs_the_prefix_and_a_name() {
        assert!(GroupId::parse("group_a").is_ok());
        assert!(GroupId::parse(GroupId::generate().as_str()).is_ok());
        for bad in [
            "group_",
            "group",
            "alice",
            "group_a b",
            &format!("group_{}", "x".repeat(59)),
        ] {
            assert!(GroupId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn uid_parse_never_panics_and_round_trips(raw in "\\PC{0,80}") {
            if let Ok(uid) = UserId::parse(&raw) {
                prop_assert_eq!(uid.as_str(), raw.as_str());
                prop_assert!(uid.as_str().len() <= 64);
            }
        }
    }
}
