//! `GET /api/v1/presence?ids=a,b`: who of one's contacts is online now (live changes then come
//! as `presence` events).

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use super::{error::ApiError, extractor::AuthUser, history::Params};
use crate::{
    domain::{ChatError, UserId},
    state::AppState,
};

/// Most ids one request may name.
const MAX_IDS: usize = 100;

/// The presence route (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/presence", get(presence))
}

async fn presence(
    State(state): State<AppState>,
    user: AuthUser,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(raw);
    let ids: Vec<String> = params
        .text("ids")
        .ok_or_else(|| ChatError::bad_request("ids is required: a comma-separated uid list"))?
        .split(',')
        .map(|id| UserId::parse(id.trim()).map(|u| u.to_string()))
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_IDS {
        return Err(ChatError::bad_request(format!("at most {MAX_IDS} ids")).into());
    }
    let online = state
        .presence
        .online_for(&user.uid, &ids)
        .await
        .map_err(ChatError::from)?;
    let items: Vec<Value> = online
        .into_iter()
        .map(|(uid, online)| json!({ "uid": uid, "online": online }))
        .collect();
    Ok(Json(json!({ "items": items })))
}
