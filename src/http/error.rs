//! The one error type of the REST API: `{"error":{"code","message"}}` with a fitting status.

use std::time::Duration;

use axum::{
    http::{header::RETRY_AFTER, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::{
    accounts::hashing::Busy,
    domain::{ChatError, ErrorCode},
    limits::{retry_after_secs, Refusal},
};

/// A REST failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A contract error (status chosen by its code).
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The resource exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// Refused for now (`rate_limited` 429 or `unavailable` 503): try again after the
    /// `Retry-After` header's seconds.
    #[error("{error}")]
    RetryLater {
        /// The code (and so the status) and message.
        error: ChatError,
        /// Rounded up to whole seconds in the header.
        after: Duration,
    },
}

impl From<Busy> for ApiError {
    fn from(busy: Busy) -> Self {
        ApiError::RetryLater {
            error: ChatError::new(ErrorCode::Unavailable, busy.to_string()),
            after: busy.retry_after,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Limited {
                message,
                retry_after,
            } => ApiError::RetryLater {
                error: ChatError::new(ErrorCode::RateLimited, message),
                after: retry_after,
            },
            Refusal::Store(e) => ApiError::Chat(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Chat(e) => (status_of(e.code), e.to_json()),
            ApiError::RetryLater { error, after } => {
                let seconds = retry_after_secs(*after).to_string();
                return (
                    status_of(error.code),
                    [(RETRY_AFTER, seconds)],
                    Json(error.to_json()),
                )
                    .into_response();
            }
            ApiError::Conflict(message) => (
                StatusCode::CONFLICT,
                serde_json::json!({ "error": { "code": "conflict", "message": message } }),
            ),
        };
        (status, Json(body)).into_response()
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
