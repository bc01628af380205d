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

use axum::{
    extract::State,
    http::{header, HeaderValue, Method},
    response::Response,
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

/// The security headers every response gets (pages, REST, socket.io).
#[derive(Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
}

impl SecurityHeaders {
    /// The headers for a node whose web client calls the profile service at `profile_url`
    /// (its origin is added to `connect-src`; a URL that is not a plain http(s) origin is
    /// left out, with a warning, rather than let it change the policy).
    pub fn new(profile_url: Option<&str>) -> Self {
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
        Self {
            // Only the fixed text and an origin of checked characters: always a valid value.
            csp: HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'")),
        }
    }
}

impl SecurityHeaders {
    /// The headers for a service that answers JSON only (the profile service): it loads
    /// nothing, and nothing may frame it.
    pub fn api_only() -> Self {
        Self {
            csp: HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        }
    }
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

/// Adds the security headers to a response: the [`SecurityHeaders`] policy, `nosniff` (a
/// JSON answer is never run as a script or rendered as HTML), and `no-referrer` (page URLs
/// never leave for an avatar's host).
pub async fn add_security_headers(
    State(security): State<SecurityHeaders>,
    mut response: Response,
) -> Response {
    let headers = response.headers_mut();
    // A response that set its own policy keeps it (attachments are sandboxed).
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| security.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
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
        let csp = SecurityHeaders::new(Some("http://127.0.0.1:4041")).csp;
        let csp = csp.to_str().expect("text");
        assert!(
            csp.contains("ws: wss: http://*:4040 https://*:4040 http://127.0.0.1:4041;"),
            "{csp}"
        );
        assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    }
}
