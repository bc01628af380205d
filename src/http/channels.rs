//! Channels over REST (§9): the list, a channel's publication history and presence, the
//! publish API for back-ends (admin token or a service key), and the admin settings API.

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Path, Query, State},
    http::{header::AUTHORIZATION, request::Parts, StatusCode},
    routing::{get, post, put},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{admin::Admin, error::ApiError, extractor::ApiJson, history::Params};
use crate::{
    channels::{ChannelName, ChannelSettings, Publisher, Reader, MAX_PAGE},
    domain::{ChatError, ErrorCode, MsgId},
    state::AppState,
};

/// Channel routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/channels", get(list))
        .route("/channels/{name}/publications", get(publications))
        .route("/channels/{name}/presence", get(presence))
        .route("/channels/{name}/publish", post(publish))
}

/// Admin channel routes (under `/api/v1/admin`).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/channels/{name}", put(put_channel).delete(delete_channel))
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// Who reads over REST: a user's token, or nobody (a guest, when guests are on).
struct RestReader(Reader);

impl FromRequestParts<AppState> for RestReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) => {
                state.accounts.verify(&token).await?;
                Ok(Self(Reader::User))
            }
            None if state.settings.guests => Ok(Self(Reader::Guest)),
            None => Err(ChatError::new(ErrorCode::Unauthorized, "missing bearer token").into()),
        }
    }
}

/// A signed-in user (guests have no REST identity).
struct RestUser;

impl FromRequestParts<AppState> for RestUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ChatError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        state.accounts.verify(&token).await?;
        Ok(Self)
    }
}

/// The admin token or a service key: who may publish over REST.
struct RestPublisher(Publisher);

impl FromRequestParts<AppState> for RestPublisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(presented) = bearer(parts) else {
            return Err(ChatError::new(ErrorCode::Unauthorized, "missing bearer token").into());
        };
        if Admin::from_request_parts(parts, state).await.is_ok() {
            return Ok(Self(Publisher::Admin));
        }
        if let Some(name) = state.channels.service_key(&presented) {
            return Ok(Self(Publisher::Service(name)));
        }
        if state.accounts.verify(&presented).await.is_ok() {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "publishing over REST takes the admin token or a service key; users publish from their socket",
            )
            .into());
        }
        Err(ChatError::new(
            ErrorCode::Unauthorized,
            "admin token or service key required",
        )
        .into())
    }
}

async fn list(State(state): State<AppState>, _user: RestUser) -> Result<Json<Value>, ApiError> {
    let mut items = Vec::new();
    for (name, settings) in state.channels.list().await? {
        let subscribers = match ChannelName::parse(&name) {
            Ok(channel) => state
                .channels
                .store()
                .subscribers(&channel)
                .await
                .map_err(ChatError::from)?,
            Err(_) => 0,
        };
        items.push(json!({
            "name": name,
            "publish": settings.publish,
            "guests": settings.guests,
            "presence": settings.presence,
            "subscribers": subscribers,
        }));
    }
    Ok(Json(json!({ "items": items, "next": null })))
}

async fn publications(
    State(state): State<AppState>,
    RestReader(reader): RestReader,
    Path(name): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let channel = ChannelName::parse(&name)?;
    let params = Params::new(raw);
    let limit = params.limit(super::history::DEFAULT_LIMIT, MAX_PAGE)?;
    // `cursor` (the §6 way) and `before` name the same thing: the offset to page back from.
    let before = match (params.int("cursor")?, params.int("before")?) {
        (Some(c), _) | (None, Some(c)) => Some(
            u64::try_from(c).map_err(|_| ChatError::bad_request("before is an offset (>= 0)"))?,
        ),
        (None, None) => None,
    };
    let (items, next) = state.channels.page(&channel, reader, before, limit).await?;
    Ok(Json(
        json!({ "items": items, "next": next.map(|n| n.to_string()) }),
    ))
}

async fn presence(
    State(state): State<AppState>,
    RestReader(reader): RestReader,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let channel = ChannelName::parse(&name)?;
    let uids = state.channels.present(&channel, reader).await?;
    Ok(Json(
        json!({ "count": uids.len(), "items": uids, "next": null }),
    ))
}

/// The body of `POST /channels/{name}/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    data: String,
    #[serde(default, rename = "MsgID")]
    msg_id: Option<String>,
}

async fn publish(
    State(state): State<AppState>,
    RestPublisher(publisher): RestPublisher,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = ChannelName::parse(&name)?;
    let msg_id = body.msg_id.as_deref().map(MsgId::parse).transpose()?;
    let published = state
        .channels
        .publish(&publisher, &channel, body.data, msg_id)
        .await?;
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "offset": published.offset, "epoch": published.epoch })),
    ))
}

async fn put_channel(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    ApiJson(settings): ApiJson<ChannelSettings>,
) -> Result<Json<Value>, ApiError> {
    let channel = ChannelName::parse(&name)?;
    state.channels.put(&channel, &settings).await?;
    let mut body = serde_json::to_value(&settings)
        .map_err(|e| ChatError::new(ErrorCode::Internal, e.to_string()))?;
    body["name"] = json!(channel.as_str());
    Ok(Json(body))
}

async fn delete_channel(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let channel = ChannelName::parse(&name)?;
    state.channels.delete(&channel).await?;
    Ok(StatusCode::NO_CONTENT)
}
