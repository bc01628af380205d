//! The HTTP surface: REST under `/api/v1`, `/health`, `/metrics` and the web client.
//! One module per resource, each with its own `router()`; errors all go through
//! [`error::ApiError`].

mod accounts;
mod admin;
mod blocks;
pub mod error;
pub mod extractor;
mod history;
mod openapi;
mod ops;
mod presence;
mod webclient;

use axum::{
    http::{header, HeaderValue, Method},
    Router,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;

/// Every HTTP route of the chat server (socket.io and CORS are layered on top by start-up,
/// so that one CORS policy covers REST and both socket.io transports).
pub fn router(state: AppState) -> Router {
    let webclient = webclient::service(state.settings.webclient_dir.as_deref());
    Router::new()
        .nest(
            "/api/v1",
            accounts::router()
                .merge(history::router())
                .merge(presence::router())
                .merge(blocks::router())
                .merge(openapi::router())
                .nest("/admin", admin::router()),
        )
        .merge(ops::router())
        .fallback_service(webclient)
        .with_state(state)
}

/// Whether cross-origin requests may carry the browser's credentials (cookies, and the
/// `withCredentials` flag that socket.io-client 1.x/2.x long-polling always sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// `Access-Control-Allow-Credentials: true`; with `*`, the request's origin is echoed,
    /// since browsers refuse a literal `*` on a credentialed request.
    Allowed,
    /// No credentials header; `*` is sent as `*`.
    Refused,
}

/// CORS for the configured origins (`WEBCHAT_CORS_ORIGINS`: a comma list or `*`); none
/// configured means same origin only (no CORS headers). The profile service uses it too.
pub fn cors(origins: Option<&str>, credentials: Credentials) -> Option<CorsLayer> {
    let origins = origins?.trim();
    if origins.is_empty() {
        return None;
    }
    let allow = match (origins, credentials) {
        ("*", Credentials::Allowed) => AllowOrigin::mirror_request(),
        ("*", Credentials::Refused) => AllowOrigin::any(),
        (list, _) => AllowOrigin::list(
            list.split(',')
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(credentials == Credentials::Allowed)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}
