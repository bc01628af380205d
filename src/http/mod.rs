//! The HTTP surface: REST under `/api/v1`, `/health`, `/metrics` and the web client.
//! One module per resource, each with its own `router()`; errors all go through
//! [`error::ApiError`].

mod accounts;
pub mod error;
pub mod extractor;
mod ops;

use axum::Router;
use tower_http::services::ServeDir;

use crate::state::AppState;

/// Every HTTP route of the chat server (socket.io is layered on top by start-up).
pub fn router(state: AppState) -> Router {
    let webclient =
        ServeDir::new(&state.settings.webclient_dir).append_index_html_on_directories(true);
    Router::new()
        .nest("/api/v1", accounts::router())
        .merge(ops::router())
        .fallback_service(webclient)
        .with_state(state)
}
