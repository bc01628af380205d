//! The HTTP surface: REST under `/api/v1`, `/health`, `/metrics` and the web client.
//! One module per resource, each with its own `router()`; errors all go through
//! [`error::ApiError`].

mod accounts;
mod admin;
mod attachments;
mod blocks;
mod channels;
pub mod error;
pub mod extractor;
mod history;
mod openapi;
mod ops;
mod presence;
mod profile_changes;
mod support;
mod webclient;
mod webhooks;

use axum::{http::HeaderValue, Router};
/// CORS and the security headers are shared with the profile service.
pub use webchat_core::http::{add_security_headers, cors, Credentials, SecurityHeaders};

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
                .merge(profile_changes::router())
                .merge(blocks::router())
                .merge(attachments::router())
                .merge(channels::router())
                .merge(support::router())
                .merge(webhooks::router())
                .merge(openapi::router())
                .nest(
                    "/admin",
                    admin::router()
                        .merge(channels::admin_router())
                        .merge(support::admin_router())
                        .merge(webhooks::admin_router()),
                ),
        )
        .merge(ops::router())
        .route(webclient::SHOP_DEMO_PATH, webclient::shop_demo())
        .route("/demo/shop/", webclient::shop_demo())
        .route("/demo/shop/{*path}", webclient::shop_demo())
        .fallback_service(webclient)
        .with_state(state)
}

/// The Content-Security-Policy of every response, as a header (`frame-ancestors` is ignored
/// in a `<meta>` policy, so only the header stops the client being framed). What the web
/// client needs and nothing more: its own scripts and styles (it has no inline ones),
/// avatars from any https URL, and its own origin, websockets and the profile service
/// (`:4040` on the page's host by default, see `webclient/config.js`, or the origin of
/// `--profile-url`). `index.html` carries the same policy in a `<meta>`, for a copy served
/// by something else.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; connect-src 'self' ws: wss: http://*:4040 https://*:4040";
const CSP_REST: &str =
    "; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The security headers of a node whose web client calls the profile service at
/// `profile_url` (its origin is added to `connect-src`; a URL that is not a plain http(s)
/// origin is left out, with a warning, rather than let it change the policy).
pub fn security_headers(profile_url: Option<&str>) -> SecurityHeaders {
    let mut policy = CSP.to_owned();
    match profile_url.map(origin_of) {
        Some(Some(origin)) => {
            policy.push(' ');
            policy.push_str(&origin);
        }
        Some(None) => tracing::warn!(
            "--profile-url is not an http(s) URL: the web client's Content-Security-Policy does not allow it"
        ),
        None => {}
    }
    policy.push_str(CSP_REST);
    // Only the fixed text and an origin of checked characters: always a valid value.
    SecurityHeaders::with_policy(
        HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'")),
    )
}

/// `scheme://host[:port]` of an http(s) URL, if every character of it is one an origin may
/// have (nothing that could end a CSP directive or a header).
fn origin_of(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then(|| format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_services_origin_joins_connect_src_and_nothing_else_does() {
        assert_eq!(
            origin_of("https://profiles.example.com:8443/base/"),
            Some("https://profiles.example.com:8443".to_owned())
        );
        assert_eq!(
            origin_of("http://127.0.0.1:4040"),
            Some("http://127.0.0.1:4040".to_owned())
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("http://a; script-src *"), None);
        assert_eq!(origin_of("http://"), None);
        assert_eq!(origin_of("x"), None);
        let headers = security_headers(Some("http://127.0.0.1:4041"));
        let csp = headers.policy();
        let csp = csp.to_str().expect("text");
        assert!(
            csp.contains("ws: wss: http://*:4040 https://*:4040 http://127.0.0.1:4041;"),
            "{csp}"
        );
        assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    }
}
