//! `GET /api/v1/openapi.json`: the REST API described for clients and tools.
//!
//! Written by hand (no generator dependency); a test checks that it documents exactly the
//! routes the server has.

use axum::{http::header::CONTENT_TYPE, routing::get, Router};

use crate::state::AppState;

/// The document, checked for JSON validity by the tests.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { ([(CONTENT_TYPE, "application/json")], DOCUMENT) }),
    )
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn the_document_is_openapi_3_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/v1/signup", "post"),
            ("/api/v1/login", "post"),
            ("/api/v1/logout", "post"),
            ("/api/v1/conversations", "get"),
            ("/api/v1/conversations/{peerOrGid}/messages", "get"),
            (
                "/api/v1/conversations/{peerOrGid}/messages/{msgId}/versions",
                "get",
            ),
            ("/api/v1/groups/{gid}", "get"),
            ("/api/v1/users", "get"),
            ("/api/v1/presence", "get"),
            ("/api/v1/me/profile-changed", "post"),
            ("/api/v1/blocks", "get"),
            ("/api/v1/blocks/{uid}", "put"),
            ("/api/v1/blocks/{uid}", "delete"),
            ("/api/v1/attachments", "post"),
            ("/api/v1/attachments/{id}", "get"),
            ("/api/v1/attachments/{id}/thumbnail", "get"),
            ("/api/v1/admin/calllogs", "get"),
            ("/api/v1/channels", "get"),
            ("/api/v1/channels/{name}/publications", "get"),
            ("/api/v1/channels/{name}/presence", "get"),
            ("/api/v1/channels/{name}/publish", "post"),
            ("/api/v1/admin/channels/{name}", "put"),
            ("/api/v1/admin/channels/{name}", "delete"),
            ("/api/v1/support/tickets", "get"),
            ("/api/v1/admin/support/tickets", "get"),
            ("/api/v1/admin/users/{uid}/roles", "get"),
            ("/api/v1/admin/users/{uid}/roles", "put"),
            ("/api/v1/admin/webhooks", "post"),
            ("/api/v1/admin/webhooks", "get"),
            ("/api/v1/admin/webhooks/{id}", "delete"),
            ("/api/v1/push/vapid", "get"),
            ("/api/v1/push/subscriptions", "post"),
            ("/api/v1/push/subscriptions", "get"),
            ("/api/v1/push/subscriptions", "delete"),
            ("/health", "get"),
            ("/metrics", "get"),
        ] {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is documented"
            );
        }
        assert_eq!(paths.len(), 30, "no undocumented or stale paths");
    }
}
