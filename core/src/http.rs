//! HTTP helpers both binaries share: CORS from `WEBCHAT_CORS_ORIGINS` and the security
//! headers every response gets.

use axum::{
    extract::State,
    http::{header, HeaderValue, Method},
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

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

/// The security headers every response gets (pages, REST, socket.io): the
/// Content-Security-Policy each binary chooses, and the fixed ones of
/// [`add_security_headers`].
#[derive(Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
}

impl SecurityHeaders {
    /// The headers with `csp` as Content-Security-Policy.
    pub fn with_policy(csp: HeaderValue) -> Self {
        Self { csp }
    }

    /// The headers for a service that answers JSON only (the profile service): it loads
    /// nothing, and nothing may frame it.
    pub fn api_only() -> Self {
        Self::with_policy(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ))
    }

    /// The Content-Security-Policy these headers set.
    pub fn policy(&self) -> &HeaderValue {
        &self.csp
    }
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
