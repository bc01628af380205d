//! The support desk over REST (§10): the staff queue (`/support/tickets`) and, behind the
//! admin token, users' roles and every ticket. Handlers parse and call the one
//! [`SupportService`](crate::support::SupportService).

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    admin::Admin,
    error::ApiError,
    extractor::{ApiJson, AuthUser},
    history::{Params, DEFAULT_LIMIT, MAX_USER_LIMIT},
};
use crate::{
    domain::{
        support::{Role, TicketState},
        ChatError, UserId,
    },
    state::AppState,
    support::TicketPage,
};

/// The staff routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/support/tickets", get(tickets))
}

/// The admin routes (under `/api/v1/admin`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/users/{uid}/roles", get(roles).put(set_roles))
        .route("/support/tickets", get(admin_tickets))
}

/// `state` (default `open`), `cursor` and `limit` of a ticket list.
fn page_params(
    raw: HashMap<String, String>,
) -> Result<(TicketState, Option<String>, usize), ChatError> {
    let params = Params::new(raw);
    let state = params
        .text("state")
        .map_or(Ok(TicketState::Open), TicketState::parse)?;
    let limit = params.limit(DEFAULT_LIMIT, MAX_USER_LIMIT)?;
    let cursor = params.text("cursor").map(str::to_owned);
    Ok((state, cursor, limit))
}

/// Tickets in one state, for staff: open ones oldest first (the queue), others newest first.
async fn tickets(
    State(state): State<AppState>,
    user: AuthUser,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<TicketPage>, ApiError> {
    let (ticket_state, cursor, limit) = page_params(raw)?;
    let page = state
        .support
        .list(Some(&user.uid), ticket_state, cursor.as_deref(), limit)
        .await?;
    Ok(Json(page))
}

/// The same list for the admin API.
async fn admin_tickets(
    State(state): State<AppState>,
    _admin: Admin,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<TicketPage>, ApiError> {
    let (ticket_state, cursor, limit) = page_params(raw)?;
    let page = state
        .support
        .list(None, ticket_state, cursor.as_deref(), limit)
        .await?;
    Ok(Json(page))
}

/// The body of `PUT /admin/users/{uid}/roles`.
#[derive(Debug, Deserialize)]
struct RolesBody {
    roles: Vec<String>,
}

async fn roles(
    State(state): State<AppState>,
    _admin: Admin,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let uid = UserId::parse(&uid)?;
    let roles = state.support.roles(&uid).await?;
    Ok(Json(json!({ "uid": uid, "roles": roles })))
}

/// Replaces the user's roles. The user need not have an account yet (staff may be set up
/// before they sign up), but a guest uid cannot hold a role.
async fn set_roles(
    State(state): State<AppState>,
    _admin: Admin,
    Path(uid): Path<String>,
    ApiJson(body): ApiJson<RolesBody>,
) -> Result<Json<Value>, ApiError> {
    let uid = UserId::parse(&uid)?;
    if uid.as_str().starts_with(crate::accounts::GUEST_UID_PREFIX) {
        return Err(ChatError::bad_request("a guest cannot hold a role").into());
    }
    let roles = body
        .roles
        .iter()
        .map(|r| Role::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let roles = state.support.set_roles(&uid, &roles).await?;
    Ok(Json(json!({ "uid": uid, "roles": roles })))
}
