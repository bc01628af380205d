//! The web client's static files, served at `/` from a copy built into the binary.
//!
//! Owns: finding a file for a path, its content type, `ETag` revalidation and cache headers.
//! Does not own: compression (a layer in [`service`]) or the files themselves (`webclient/`).
//!
//! The binary carries the client so that `/` works whatever the working directory (an
//! installed binary, a service manager, a test harness). `--webclient-dir` swaps in a
//! directory on disk instead, for developing the client or customising `config.js`.

use std::path::Path;

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, MethodRouter},
};
use rust_embed::RustEmbed;
use tower::ServiceExt;
use tower_http::{compression::CompressionLayer, services::ServeDir};

/// The files of `webclient/` that a browser loads (not its build scripts or npm files).
#[derive(RustEmbed)]
#[folder = "webclient/"]
#[exclude = "node_modules/*"]
#[exclude = "scripts/*"]
#[exclude = "package.json"]
#[exclude = "package-lock.json"]
#[exclude = "README.md"]
#[exclude = ".*"]
struct WebClientFiles;

/// The shop demo (`demo/shop/`), served at `/demo/shop/`: items with live stock and "talk to
/// staff" (contract §9 and §10 in one page). It loads the web client's socket.io build, DOM
/// helpers and ticket module from `/`.
#[derive(RustEmbed)]
#[folder = "demo/shop/"]
struct ShopDemoFiles;

/// Where the shop demo is served.
pub const SHOP_DEMO_PATH: &str = "/demo/shop";

/// The service behind `/demo/shop/`: the built-in copy of the demo (gzip when accepted).
pub fn shop_demo<S: Clone + Send + Sync + 'static>() -> MethodRouter<S> {
    any(|method: Method, uri: Uri, headers: HeaderMap| async move {
        let Some(rest) = uri.path().strip_prefix(SHOP_DEMO_PATH) else {
            return not_found();
        };
        if rest.is_empty() {
            // `/demo/shop` → `/demo/shop/`, so the page's relative links resolve under it.
            return (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, "/demo/shop/")],
            )
                .into_response();
        }
        serve_embedded::<ShopDemoFiles>(&method, rest, &headers)
    })
    .layer(CompressionLayer::new())
}

/// File names are not content-hashed, so a browser must revalidate every time; the `ETag`
/// makes that a cheap `304`.
const CACHE_CONTROL: &str = "no-cache";

/// The service behind `/`: the built-in copy, or `dir` when one is configured; gzip when the
/// browser accepts it.
pub fn service(dir: Option<&Path>) -> MethodRouter {
    let files = match dir {
        Some(dir) => {
            let files = ServeDir::new(dir).append_index_html_on_directories(true);
            any(move |request: Request| serve_from_dir(files.clone(), request))
        }
        None => any(serve_built_in),
    };
    files.layer(CompressionLayer::new())
}

/// Answers from a directory on disk, but only the files the built-in copy would carry: a
/// client directory is usually a checkout, with its README, npm and build files beside it.
async fn serve_from_dir(files: ServeDir, request: Request) -> Response {
    if !is_client_path(request.uri().path()) {
        return not_found();
    }
    match files.oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// Whether a request path may name a file of the client: not a dotfile or anything in a
/// dot-directory, not the npm and build files the built-in copy leaves out (see
/// [`WebClientFiles`]), and not a path that starts with `//`. `ServeDir` answers a directory
/// without its trailing slash with a redirect to the same path plus `/`: for `//js` that is
/// `Location: //js/`, which a browser reads as another host (`http://js/`).
///
/// Checked on the decoded path, as `ServeDir` decodes it before it opens a file: otherwise
/// `/%2Enpmrc` or `/README%2Emd` would pass the check and be served. A path that does not
/// decode to UTF-8 names no client file.
fn is_client_path(path: &str) -> bool {
    if path.starts_with("//") {
        return false;
    }
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return false;
    };
    if decoded.starts_with("//") || decoded.contains('\\') {
        return false;
    }
    let relative = decoded.trim_start_matches('/');
    let first = relative.split('/').next().unwrap_or_default();
    if matches!(
        first,
        "node_modules" | "scripts" | "package.json" | "package-lock.json" | "README.md"
    ) {
        return false;
    }
    !relative.split('/').any(|segment| segment.starts_with('.'))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Answers one request from the built-in files.
async fn serve_built_in(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    serve_embedded::<WebClientFiles>(&method, uri.path(), &headers)
}

/// Answers a request for `path` from the files of `E`.
fn serve_embedded<E: RustEmbed>(method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    if !is_client_path(path) {
        return not_found();
    }
    let Some(file) = E::get(&file_path(path)) else {
        return not_found();
    };
    let etag = etag(&file.metadata.sha256_hash());
    let mut response = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(file.data.len()));
        r
    } else {
        Response::new(Body::from(file.data))
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The body differs with the browser's Accept-Encoding (gzip), also on a 304.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// The embedded file a request path names: `index.html` for a directory. No percent-decoding
/// is needed (no file name has a character that would be encoded), and a `..` segment
/// names nothing, since embedded names are plain relative paths.
fn file_path(path: &str) -> String {
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    }
}

/// A validator from the file's SHA-256, which rust-embed computes at build time. Weak, since
/// the same tag goes with the gzip and the plain representation (`If-None-Match` compares
/// weakly, so revalidation works for both).
fn etag(hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// Whether the browser's cached copy (`If-None-Match`, possibly a list or `*`) is current.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag.trim_start_matches("W/"))
}

/// Text types are sent as UTF-8, which every file of the client is.
fn content_type(mime: &str) -> String {
    if mime.starts_with("text/") || mime == "application/javascript" || mime.ends_with("+xml") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_path_names_its_index_file() {
        assert_eq!(file_path("/"), "index.html");
        assert_eq!(file_path(""), "index.html");
        assert_eq!(file_path("/js/"), "js/index.html");
        assert_eq!(file_path("/js/main.js"), "js/main.js");
    }

    #[test]
    fn the_built_in_copy_has_the_client_and_not_its_build_files() {
        assert!(WebClientFiles::get("index.html").is_some());
        assert!(WebClientFiles::get("js/main.js").is_some());
        assert!(WebClientFiles::get("vendor/socket.io.min.js").is_some());
        assert!(WebClientFiles::get("package.json").is_none());
        assert!(WebClientFiles::get("scripts/vendor.sh").is_none());
        assert!(WebClientFiles::get("../Cargo.toml").is_none());
        assert!(WebClientFiles::get(".npmrc").is_none());
    }

    #[test]
    fn only_the_clients_own_paths_are_served() {
        for path in [
            "/",
            "/index.html",
            "/js/main.js",
            "/css/",
            "/vendor/socket.io.min.js",
        ] {
            assert!(is_client_path(path), "{path}");
        }
        for path in [
            "/README.md",
            "/package.json",
            "/package-lock.json",
            "/.npmrc",
            "/scripts/vendor.sh",
            "/node_modules/x/index.js",
            "/js/.hidden",
            "/.git/config",
            "//js",
            "//evil.example/js",
            // Encoded, as ServeDir decodes them before opening a file.
            "/%2Enpmrc",
            "/README%2Emd",
            "/package%2Ejson",
            "/node_modules%2Fx/index.js",
            "/js/%2Ehidden",
            "/%2F%2Fjs",
            "/%ff",
        ] {
            assert!(!is_client_path(path), "{path}");
        }
    }

    #[test]
    fn a_cached_copy_is_current_when_any_listed_tag_matches() {
        let tag = etag(&[0xab, 0x01]);
        assert_eq!(tag, "W/\"ab01\"");
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &tag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"00\", W/\"ab01\""),
        );
        assert!(if_none_match(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"00\""));
        assert!(!if_none_match(&headers, &tag));
    }

    #[test]
    fn text_types_say_utf8() {
        assert_eq!(content_type("text/html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("image/svg+xml"),
            "image/svg+xml; charset=utf-8"
        );
        assert_eq!(content_type("image/png"), "image/png");
    }
}
