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

/// 200 when the store and bus answer, 503 otherwise; the body lists each back-end.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let backends = state.health.check().await;
    // A back-end the node can chat without (DynamoDB; the call log below) is reported but
    // does not fail the node.
    let all_ok = backends.iter().all(|(_, b)| b.ok || !b.required);
    let mut detail = Map::new();
    for (name, status) in backends {
        detail.insert(
            name.to_owned(),
            serde_json::to_value(status).unwrap_or(Value::Null),
        );
    }
    // The call log is reported but does not fail the node: chat keeps working while its
    // table is away, and the backlog drains when it returns.
    let (table, backlog) = tokio::join!(state.calllog.table().ping(), state.calllog.backlog());
    let mut calllog = crate::calllog::backlog_json(backlog);
    if let Err(e) = table {
        calllog["ok"] = Value::Bool(false);
        calllog["error"] = Value::String(e.to_string());
    }
    detail.insert("calllog".to_owned(), calllog);
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
