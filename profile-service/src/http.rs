//! Routes: the profile API, the legacy open-mode routes, `/health`, `/metrics` and the
//! OpenAPI document. Handlers parse and check input, then call [`ProfileService`].
//!
//! Reads need no token: a profile (name, status, avatar) is what a user shows to the people
//! they chat with, and the chat server fetches profiles of contacts for its clients, so
//! gating reads behind a token would only force every reader to hold one without hiding
//! anything. Writes always identify the owner (except in open mode, see below).

use std::{collections::HashSet, sync::Arc};

use axum::{
    body::Bytes,
    extract::{
        rejection::JsonRejection, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query,
        Request, State,
    },
    http::{
        header::{AUTHORIZATION, CONTENT_TYPE},
        request::Parts,
        StatusCode,
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};
use webchat_core::{
    http::{add_security_headers, cors, Credentials, SecurityHeaders},
    ids::UserId,
};

use crate::{
    auth::Authenticator,
    config::{AuthMode, Settings},
    error::ApiError,
    metrics::Metrics,
    profile::{check_name, parse_id_list, Change, Profile, UpdateBody},
    service::ProfileService,
};

/// Most ids in one batch read.
pub const MAX_BATCH_IDS: usize = 100;
/// Page size of the legacy full listing (one DynamoDB Scan call per page).
const GETALL_PAGE: usize = 100;
/// Largest accepted request body: a profile is well under 1 KiB.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The OpenAPI 3 description of these routes.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Settings the service started with.
    pub settings: Arc<Settings>,
    /// Profiles.
    pub profiles: ProfileService,
    /// Token checks.
    pub auth: Authenticator,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Redis, probed by `/health` when configured.
    pub redis: Option<fred::clients::Pool>,
}

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/api/v1/profiles", get(get_many))
        .route("/api/v1/profiles/{uid}", get(get_one).put(put_one))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    if state.settings.auth == AuthMode::Open {
        // The original web client's routes; in token mode they do not exist (fallback 404).
        app = app
            .route("/add", post(legacy_add))
            .route("/search/{uid}", get(legacy_search))
            .route("/getall", get(legacy_getall));
    }
    let cors = cors(state.settings.cors_origins.as_deref(), Credentials::Refused);
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state);
    let app = match cors {
        Some(layer) => app.layer(layer),
        None => app,
    };
    // Outermost: every answer gets them, CORS preflights included.
    app.layer(middleware::map_response_with_state(
        SecurityHeaders::api_only(),
        add_security_headers,
    ))
}

async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.metrics.requests.inc();
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    let body = json!({ "error": { "code": "bad_request", "message": "method not allowed" } });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// `Json<T>` whose failures (syntax, types, content type, size) answer `400 bad_request`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection_text(&rejection))),
        }
    }
}

/// A JSON body whatever its `Content-Type`, for the original client's routes only: its `/add`
/// is a bare synchronous XHR that sends JSON as `text/plain;charset=UTF-8`, which the original
/// service accepted. Failures (syntax, types, size) answer `400 bad_request`.
pub struct LegacyJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for LegacyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::BadRequest(format!("unreadable body: {}", r.body_text())))?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

fn rejection_text(rejection: &JsonRejection) -> String {
    format!("invalid JSON body: {}", rejection.body_text())
}

/// A path parameter whose failures answer `400 bad_request`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|r| ApiError::BadRequest(r.body_text()))
    }
}

/// Who may write: the token's user, or anyone in open mode without a token. Runs before the
/// body is read, so an unauthenticated caller learns nothing about body validation.
pub struct Caller(Option<UserId>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return match state.settings.auth {
                AuthMode::Open => Ok(Self(None)),
                AuthMode::Token => Err(ApiError::Unauthorized("missing bearer token".into())),
            };
        };
        // A token that is sent is checked even in open mode: a wrong one is a client bug.
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("expected Authorization: Bearer <token>".into())
            })?;
        Ok(Self(Some(state.auth.verify(token).await?)))
    }
}

fn parse_uid(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::BadRequest(e.message))
}

fn no_profile(uid: &UserId) -> ApiError {
    ApiError::NotFound(format!("no profile for {uid}"))
}

/// `GET /api/v1/profiles/{uid}`
async fn get_one(
    State(state): State<AppState>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<Profile>, ApiError> {
    let uid = parse_uid(&uid)?;
    let profile = state.profiles.get(&uid).await?;
    profile.map(Json).ok_or_else(|| no_profile(&uid))
}

/// Query of the batch read.
#[derive(Deserialize)]
struct BatchQuery {
    ids: Option<String>,
}

/// `GET /api/v1/profiles?ids=a,b,c`
async fn get_many(
    State(state): State<AppState>,
    query: Result<Query<BatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let raw = query
        .ids
        .ok_or_else(|| ApiError::BadRequest("ids is required: ?ids=a,b,c".into()))?;
    let ids = parse_id_list(&raw, MAX_BATCH_IDS).map_err(ApiError::BadRequest)?;
    let items = state.profiles.get_many(&ids).await?;
    Ok(Json(json!({ "items": items })))
}

/// `PUT /api/v1/profiles/{uid}`: the owner replaces their profile.
async fn put_one(
    State(state): State<AppState>,
    ApiPath(uid): ApiPath<String>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Profile>, ApiError> {
    if let Some(caller) = &caller {
        if caller.as_str() != uid {
            return Err(ApiError::Forbidden(
                "only the owner may update a profile".into(),
            ));
        }
    }
    let uid = parse_uid(&uid)?;
    let change = body.validate()?;
    Ok(Json(state.profiles.update(&uid, &change).await?))
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

/// 200 when every back-end answers, 503 otherwise; the body lists each back-end.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.profiles.store();
    let mut backends = serde_json::Map::new();
    let mut all_ok = true;
    let status = |kind: &str, result: Result<(), String>| match result {
        Ok(()) => json!({ "kind": kind, "ok": true }),
        Err(error) => json!({ "kind": kind, "ok": false, "error": error }),
    };
    let probe = store.ping().await.map_err(|e| e.to_string());
    all_ok &= probe.is_ok();
    backends.insert("store".into(), status(store.kind(), probe));
    if let Some(pool) = &state.redis {
        use fred::interfaces::ClientLike;
        let ping: Result<String, _> = pool.next().ping(None).await;
        let probe = ping.map(|_| ()).map_err(|e| e.to_string());
        all_ok &= probe.is_ok();
        backends.insert("redis".into(), status("redis", probe));
    }
    let code = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if all_ok { "ok" } else { "degraded" },
        "backends": backends,
    });
    (code, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// A profile as the legacy routes return it: the original client's `UID`/`Name` beside the
/// profile's own fields, so both old and new clients read it.
fn legacy(profile: Profile) -> Value {
    json!({
        "UID": profile.uid,
        "Name": profile.name,
        "uid": profile.uid,
        "name": profile.name,
        "status": profile.status,
        "avatarUrl": profile.avatar_url,
        "updatedAt": profile.updated_at,
    })
}

/// Body of the legacy `POST /add`.
#[derive(Deserialize)]
struct AddBody {
    #[serde(rename = "UID")]
    uid: String,
    #[serde(rename = "Name")]
    name: String,
}

/// `POST /add {"UID","Name"}` (open mode): sets the name, keeps status and avatar.
async fn legacy_add(
    State(state): State<AppState>,
    LegacyJson(body): LegacyJson<AddBody>,
) -> Result<Json<Value>, ApiError> {
    let uid = parse_uid(&body.uid)?;
    check_name(&body.name)?;
    let change = Change {
        name: body.name,
        status: None,
        avatar_url: None,
    };
    Ok(Json(legacy(state.profiles.update(&uid, &change).await?)))
}

/// `GET /search/{uid}` (open mode).
async fn legacy_search(
    State(state): State<AppState>,
    ApiPath(uid): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let uid = parse_uid(&uid)?;
    let profile = state.profiles.get(&uid).await?;
    profile
        .map(|p| Json(legacy(p)))
        .ok_or_else(|| no_profile(&uid))
}

/// `GET /getall` (open mode): every profile, read page by page.
async fn legacy_getall(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut all = Vec::new();
    // Redis SCAN may return a key twice across pages; each uid is listed once.
    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let page = state.profiles.scan_page(cursor, GETALL_PAGE).await?;
        for profile in page.items {
            if seen.insert(profile.uid.clone()) {
                all.push(legacy(profile));
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Json(Value::Array(all)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for path in [
            "/api/v1/profiles",
            "/api/v1/profiles/{uid}",
            "/health",
            "/metrics",
            "/add",
            "/search/{uid}",
            "/getall",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
