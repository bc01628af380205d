//! `/api/v1/blocks` (contract §16): the signed-in user's blocks. The socket events `block` /
//! `unblock` do the same through the chat service; both go through the one
//! [`BlockService`](crate::blocks::BlockService).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
    Json, Router,
};
use serde_json::{json, Value};

use super::{error::ApiError, extractor::AuthUser};
use crate::{domain::UserId, state::AppState};

/// The block routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/blocks", get(list))
        .route("/blocks/{uid}", put(block).delete(unblock))
}

/// Everyone the user blocks, in one page: a block list is short, and `next` is there so
/// that paging can come later without changing the shape.
async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let items = state.blocks.list(&user.uid).await?;
    Ok(Json(json!({ "items": items, "next": null })))
}

async fn block(
    State(state): State<AppState>,
    user: AuthUser,
    Path(uid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target = UserId::parse(&uid)?;
    state.blocks.set(&user.uid, &target, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unblock(
    State(state): State<AppState>,
    user: AuthUser,
    Path(uid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target = UserId::parse(&uid)?;
    state.blocks.set(&user.uid, &target, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
