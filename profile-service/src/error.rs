//! The one error type of the HTTP API: `{"error":{"code","message"}}` with a fitting status,
//! the chat server's shape and codes.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::{profile::InvalidProfile, store::StoreError};

/// A refused or failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Input breaks a rule (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// No valid, unrevoked token (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid token, but not the owner (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// No such profile or route (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// A back-end failed (503 `unavailable` or 500 `internal`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<InvalidProfile> for ApiError {
    fn from(e: InvalidProfile) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// Status and wire code.
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Store(StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Store(StoreError::Internal(_) | StoreError::Rejected(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            // Back-end details go to the log, not to clients.
            Self::Store(e) => {
                tracing::warn!(error = %e, "request failed on a back-end");
                match e {
                    StoreError::Unavailable(_) => "a back-end is unavailable; retry later",
                    StoreError::Internal(_) | StoreError::Rejected(_) => "internal error",
                }
                .to_owned()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_match_the_chat_server() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (
                ApiError::Store(StoreError::Unavailable("x".into())),
                503,
                "unavailable",
            ),
        ];
        for (err, status, code) in cases {
            let (s, c) = err.parts();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }
}
