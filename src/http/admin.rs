//! The admin API: the call log of any user or group, behind the admin bearer token.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Query, State},
    http::{header::AUTHORIZATION, request::Parts},
    routing::get,
    Json, Router,
};

use super::{error::ApiError, history::Params};
use crate::{
    calllog::{AdminSubject, LoggedEvent, Page},
    domain::{ChatError, ErrorCode, GroupId, UserId},
    state::AppState,
};

/// Largest page of the admin call log.
pub const MAX_ADMIN_LIMIT: usize = 1000;

/// Admin routes (under `/api/v1/admin`).
pub fn router() -> Router<AppState> {
    Router::new().route("/calllogs", get(calllogs))
}

/// Proof that the request carries the configured admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let refuse = |message: &str| ChatError::new(ErrorCode::Unauthorized, message).into();
        let Some(expected) = state
            .settings
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
        else {
            return Err(refuse("the admin API is off (no admin token configured)"));
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
            return Err(refuse("admin token required"));
        }
        Ok(Admin)
    }
}

/// Compares without an early exit, so response time does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn calllogs(
    State(state): State<AppState>,
    _admin: Admin,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Page<LoggedEvent>>, ApiError> {
    let params = Params::new(raw);
    let subject = match (params.text("uid"), params.text("gid")) {
        (Some(uid), None) => AdminSubject::User(UserId::parse(uid)?),
        (None, Some(gid)) => AdminSubject::Group(GroupId::parse(gid)?),
        _ => return Err(ChatError::bad_request("give exactly one of uid and gid").into()),
    };
    let since = params.int("since")?;
    let until = params.int("until")?;
    if since.is_some_and(|s| s < 0) || until.is_some_and(|u| u < 0) {
        return Err(ChatError::bad_request("since and until are unix milliseconds").into());
    }
    if let (Some(since), Some(until)) = (since, until) {
        if since > until {
            return Err(ChatError::bad_request("since is after until").into());
        }
    }
    let limit = params.limit(100, MAX_ADMIN_LIMIT)?;
    let page = state
        .calllog
        .admin(&subject, since, until, params.text("cursor"), limit)
        .await?;
    Ok(Json(page))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
