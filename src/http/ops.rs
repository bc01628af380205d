//! `/health` and `/metrics`.

use axum::{
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// Operational routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// 200 when every back-end answers, 503 otherwise; the body lists each back-end.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let backends = state.health.check().await;
    let all_ok = backends.iter().all(|(_, b)| b.ok);
    let mut detail = Map::new();
    for (name, status) in backends {
        detail.insert(
            name.to_owned(),
            serde_json::to_value(status).unwrap_or(Value::Null),
        );
    }
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if all_ok { "ok" } else { "degraded" },
        "backends": detail,
        "connections": state.metrics.connections.get(),
    });
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
