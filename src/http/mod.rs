//! The HTTP surface: REST under `/api/v1`, `/health`, `/metrics` and the web client.
//! One module per resource, each with its own `router()`; errors all go through
//! [`error::ApiError`].

mod accounts;
mod admin;
pub mod error;
pub mod extractor;
mod history;
mod openapi;
mod ops;
mod presence;

use axum::{
    http::{header, HeaderValue, Method},
    Router,
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    services::ServeDir,
};

use crate::state::AppState;

/// Every HTTP route of the chat server (socket.io is layered on top by start-up).
pub fn router(state: AppState) -> Router {
    let webclient =
        ServeDir::new(&state.settings.webclient_dir).append_index_html_on_directories(true);
    let cors = cors(state.settings.cors_origins.as_deref());
    let app = Router::new()
        .nest(
            "/api/v1",
            accounts::router()
                .merge(history::router())
                .merge(presence::router())
                .merge(openapi::router())
                .nest("/admin", admin::router()),
        )
        .merge(ops::router())
        .fallback_service(webclient)
        .with_state(state);
    match cors {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// CORS for the configured origins (`WEBCHAT_CORS_ORIGINS`: a comma list or `*`); none
/// configured means same origin only (no CORS headers). The profile service uses it too.
pub fn cors(origins: Option<&str>) -> Option<CorsLayer> {
    let origins = origins?.trim();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .split(',')
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}
