//! The error vocabulary of the contract: every refusal a client can see has one of these codes.

use serde::Serialize;

/// The codes of the wire contract (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input does not parse or breaks a rule.
    BadRequest,
    /// No valid credentials.
    Unauthorized,
    /// Authenticated, but not allowed.
    Forbidden,
    /// The addressed user or resource does not exist.
    NotFound,
    /// The payload exceeds a configured size limit.
    TooLarge,
    /// The request lost to another one over the same state (§10: a ticket claimed by
    /// someone else, or no longer open).
    Conflict,
    /// A configured rate limit was hit.
    RateLimited,
    /// A back-end (Redis, DynamoDB) is unreachable; nothing was acknowledged.
    Unavailable,
    /// A bug; details are logged, not sent.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// A refusal with its contract code and a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ChatError {
    /// The contract code.
    pub code: ErrorCode,
    /// Human-readable reason, safe to show to the client.
    pub message: String,
}

impl ChatError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The `{"error":{"code","message"}}` body used by acks and REST.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}
