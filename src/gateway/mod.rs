//! The socket.io gateway: authentication, the `join` and `chat` events, and per-socket
//! delivery (replay then live, with acks).
//!
//! Handlers stay thin: parse the payload into a [`ClientCommand`](crate::domain::ClientCommand),
//! call the chat service, answer with an ack or an `error` event. Owns nothing that must
//! survive a socket; all state lives in the services.

mod auth;
mod channel_events;
pub mod channel_hub;
pub mod connecting;
mod delivery;
mod handlers;
mod lane;
pub mod sessions;

use axum::{
    extract::{OriginalUri, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Uri},
};
use socketioxide::{handler::ConnectHandler, SocketIo};

/// Registers every socket handler on namespace `/`, and starts releasing the sockets that
/// hang up between the connect middleware and the connect handler (see [`connecting`]).
///
/// Event handlers are installed by a connect middleware, not by the connect handler:
/// socketioxide sends the CONNECT answer before it spawns the connect handler, so a client
/// that emits `join` right after connecting (as the original client does) would otherwise
/// race the registration and lose the event. Middlewares run before the answer. (`with`
/// runs the middleware added last first: authentication, then handler installation.)
pub fn register(io: &SocketIo, state: &crate::state::AppState) {
    tokio::spawn(handlers::release_abandoned_connects(state.clone()));
    io.ns(
        "/",
        handlers::on_connect
            .with(handlers::install_handlers)
            .with(auth::authenticate),
    );
}

/// Copies a request's URI and headers out of hyper's connection read buffer (8–16 KiB).
///
/// engineioxide keeps every socket's request parts for the socket's lifetime, and hyper's
/// header values and URI (also the copy axum keeps as [`OriginalUri`]) are slices of that
/// read buffer, so each socket pinned the whole buffer: about 16 KiB of the ~44 KiB an idle
/// socket cost. Runs before socket.io sees the request.
pub async fn own_request_parts(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        headers.append(name, value);
    }
    parts.headers = headers;
    parts.uri = owned_uri(&parts.uri);
    if let Some(OriginalUri(original)) = parts.extensions.get::<OriginalUri>() {
        let owned = OriginalUri(owned_uri(original));
        parts.extensions.insert(owned);
    }
    Request::from_parts(parts, body)
}

/// A copy of `uri` in its own allocation (the same `uri` if it cannot be re-parsed).
fn owned_uri(uri: &Uri) -> Uri {
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owned_request_parts_keep_every_header_and_the_uris() {
        let mut request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("sec-websocket-key", "a2V5")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .body(axum::body::Body::empty())
            .expect("request");
        let original = OriginalUri(request.uri().clone());
        request.extensions_mut().insert(original);
        let owned = own_request_parts(request).await;
        assert_eq!(owned.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            owned.extensions().get::<OriginalUri>().map(|u| u.0.clone()),
            Some(owned.uri().clone())
        );
        assert_eq!(owned.headers()["sec-websocket-key"], "a2V5");
        let hops: Vec<_> = owned.headers().get_all("x-forwarded-for").iter().collect();
        assert_eq!(hops, ["10.0.0.1", "10.0.0.2"]);
    }

    /// As hyper builds them: the URI and header values are slices of one read buffer.
    #[tokio::test]
    async fn owned_request_parts_point_into_no_part_of_the_connection_buffer() {
        let buffer = axum::body::Bytes::from_static(
            b"/socket.io/?EIO=4&transport=websocket|a2V5key-of-some-length".as_slice(),
        )
        .slice(..);
        let inside = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let uri = Uri::from_maybe_shared(buffer.slice(..37)).expect("uri");
        let key = HeaderValue::from_maybe_shared(buffer.slice(38..)).expect("value");
        let mut request = Request::builder()
            .uri(uri.clone())
            .header("sec-websocket-key", key)
            .body(axum::body::Body::empty())
            .expect("request");
        request.extensions_mut().insert(OriginalUri(uri));
        let slices = |r: &Request| {
            let original = r.extensions().get::<OriginalUri>().expect("original uri");
            [
                r.uri().path().as_ptr(),
                original.0.path().as_ptr(),
                r.headers()["sec-websocket-key"].as_bytes().as_ptr(),
            ]
        };
        assert!(
            slices(&request).into_iter().all(inside),
            "the set-up shares the buffer"
        );
        let owned = own_request_parts(request).await;
        assert!(
            !slices(&owned).into_iter().any(inside),
            "nothing kept by socket.io points into the read buffer"
        );
    }
}
