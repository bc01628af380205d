//! Webhooks and Web Push over REST (§13): the admin endpoint registry, the VAPID public key,
//! and a user's push subscriptions. Parses and answers; the service decides.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{admin::Admin, error::ApiError, extractor::ApiJson, extractor::AuthUser};
use crate::{
    domain::{ChatError, ErrorCode},
    state::AppState,
    webhooks::{listed, NewEndpoint, WebhookError},
};

/// User routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/push/vapid", get(vapid)).route(
        "/push/subscriptions",
        post(subscribe).delete(unsubscribe).get(list_subscriptions),
    )
}

/// Admin routes (under `/api/v1/admin`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", post(register).get(list))
        .route("/webhooks/{id}", delete(remove))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Store(e) => ApiError::Chat(e.into()),
            other => ApiError::Chat(ChatError::bad_request(other.to_string())),
        }
    }
}

/// `POST /admin/webhooks` body.
#[derive(Deserialize)]
struct Register {
    url: String,
    events: Vec<String>,
    secret: String,
}

async fn register(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Register>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let endpoint = state
        .webhooks
        .register(NewEndpoint {
            url: body.url,
            events: body.events,
            secret: body.secret,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": endpoint.id }))))
}

async fn list(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let endpoints = state.webhooks.endpoints().await.map_err(ChatError::from)?;
    let items: Vec<Value> = endpoints.iter().map(listed).collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

async fn remove(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.webhooks.delete(&id).await.map_err(ChatError::from)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ChatError::new(ErrorCode::NotFound, format!("no webhook {id}")).into())
    }
}

async fn vapid(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "publicKey": state.webhooks.vapid_public_key() }))
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Deserialize)]
struct PushSubscriptionJson {
    endpoint: String,
    #[serde(default)]
    keys: Option<Keys>,
}

#[derive(Deserialize)]
struct Keys {
    p256dh: String,
    auth: String,
}

async fn subscribe(
    user: AuthUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PushSubscriptionJson>,
) -> Result<StatusCode, ApiError> {
    let keys = body
        .keys
        .ok_or_else(|| ChatError::bad_request("keys.p256dh and keys.auth are required"))?;
    state
        .webhooks
        .subscribe(&user.uid, &body.endpoint, &keys.p256dh, &keys.auth)
        .await?;
    Ok(StatusCode::CREATED)
}

/// `DELETE` takes the same JSON (only its endpoint is read).
#[derive(Deserialize)]
struct Unsubscribe {
    endpoint: String,
}

async fn unsubscribe(
    user: AuthUser,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Unsubscribe>,
) -> Result<StatusCode, ApiError> {
    if state
        .webhooks
        .unsubscribe(&user.uid, &body.endpoint)
        .await
        .map_err(ChatError::from)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ChatError::new(ErrorCode::NotFound, "no such subscription").into())
    }
}

async fn list_subscriptions(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let subs = state
        .webhooks
        .subscriptions(&user.uid)
        .await
        .map_err(ChatError::from)?;
    let items: Vec<Value> = subs
        .iter()
        .map(|s| json!({ "endpoint": s.endpoint, "createdAt": s.created_at }))
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}
