//! The signed-in user's view of the call log: conversations, message history, a group's
//! members, and the address book. Only participants read a conversation.

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use super::{
    error::ApiError,
    extractor::{AuthUser, UserOrGuest},
};
use crate::{
    calllog::{ConversationSummary, LoggedEvent, MessageVersion, Page},
    domain::{ChatError, ErrorCode, GroupId, MsgId},
    state::AppState,
};

/// Page size when the request names none.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page a user route serves.
pub const MAX_USER_LIMIT: usize = 200;

/// History routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(conversations))
        .route("/conversations/{with}/messages", get(messages))
        .route(
            "/conversations/{with}/messages/{msg_id}/versions",
            get(versions),
        )
        .route("/groups/{gid}", get(group))
        .route("/users", get(users))
}

/// Query parameters, parsed by hand so that every mistake answers in the API's error shape.
pub struct Params(HashMap<String, String>);

impl Params {
    /// Wraps the raw query.
    pub fn new(raw: HashMap<String, String>) -> Self {
        Self(raw)
    }

    /// A text parameter ("" counts as absent).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ChatError> {
        self.text(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ChatError::bad_request(format!("{name} must be an integer")))
            })
            .transpose()
    }

    /// `limit`, defaulting to `default`, within 1..=`max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ChatError> {
        match self.int("limit")? {
            None => Ok(default),
            Some(n) if n >= 1 && usize::try_from(n).is_ok_and(|n| n <= max) => {
                Ok(usize::try_from(n).unwrap_or(default))
            }
            Some(_) => Err(ChatError::bad_request(format!(
                "limit must be between 1 and {max}"
            ))),
        }
    }
}

async fn conversations(
    State(state): State<AppState>,
    user: AuthUser,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Page<ConversationSummary>>, ApiError> {
    let params = Params::new(raw);
    let limit = params.limit(DEFAULT_LIMIT, MAX_USER_LIMIT)?;
    let page = state
        .calllog
        .conversations(&user.uid, params.text("cursor"), limit)
        .await?;
    Ok(Json(page))
}

async fn messages(
    State(state): State<AppState>,
    user: UserOrGuest,
    Path(with): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Page<LoggedEvent>>, ApiError> {
    let params = Params::new(raw);
    let limit = params.limit(DEFAULT_LIMIT, MAX_USER_LIMIT)?;
    let before = params.int("before")?;
    if before.is_some_and(|b| b < 0) {
        return Err(ChatError::bad_request("before must not be negative").into());
    }
    // In a group, reactions on messages from before the user joined are not theirs to see.
    let reactions_since = if with.starts_with("group_") {
        state
            .lifecycle
            .joined_at(&with, user.uid.as_str())
            .await
            .map_err(ChatError::from)?
    } else {
        0
    };
    let page = state
        .calllog
        .messages(
            &user.uid,
            &with,
            before,
            params.text("cursor"),
            limit,
            reactions_since,
        )
        .await?;
    Ok(Json(page))
}

/// The earlier versions of an edited message, oldest first (§11).
async fn versions(
    State(state): State<AppState>,
    user: AuthUser,
    Path((with, msg_id)): Path<(String, String)>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Page<MessageVersion>>, ApiError> {
    let params = Params::new(raw);
    let limit = params.limit(DEFAULT_LIMIT, MAX_USER_LIMIT)?;
    let msg_id = MsgId::parse(&msg_id)?;
    let page = state
        .calllog
        .versions(
            &user.uid,
            &with,
            msg_id.as_str(),
            params.text("cursor"),
            limit,
        )
        .await?;
    Ok(Json(page))
}

async fn group(
    State(state): State<AppState>,
    user: AuthUser,
    Path(gid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gid = GroupId::parse(&gid)?;
    let members = state
        .groups
        .members(&gid)
        .await
        .map_err(ChatError::from)?
        .ok_or_else(|| ChatError::new(ErrorCode::NotFound, format!("no group {gid}")))?;
    if !members.iter().any(|m| m == user.uid.as_str()) {
        return Err(ChatError::new(ErrorCode::Forbidden, format!("not a member of {gid}")).into());
    }
    Ok(Json(json!({ "gid": gid, "members": members })))
}

async fn users(
    State(state): State<AppState>,
    _user: AuthUser,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(raw);
    let limit = params.limit(DEFAULT_LIMIT, MAX_USER_LIMIT)?;
    let prefix = params.text("prefix").unwrap_or("");
    if prefix.len() > 64 {
        return Err(ChatError::bad_request("prefix is at most 64 characters").into());
    }
    let after = params.text("cursor");
    let mut accounts = state.accounts.list(prefix, after, limit + 1).await?;
    let more = accounts.len() > limit;
    accounts.truncate(limit);
    let next = if more {
        accounts.last().map(|a| a.uid.clone())
    } else {
        None
    };
    let items: Vec<Value> = accounts
        .iter()
        .map(|a| json!({ "uid": a.uid, "name": a.name }))
        .collect();
    Ok(Json(json!({ "items": items, "next": next })))
}
