//! The one error type of the REST API: `{"error":{"code","message"}}` with a fitting status.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::domain::{ChatError, ErrorCode};

/// A REST failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A contract error (status chosen by its code).
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The resource exists already (409).
    #[error("{0}")]
    Conflict(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Chat(e) => (status_of(e.code), e.to_json()),
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
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
