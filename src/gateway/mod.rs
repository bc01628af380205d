//! The socket.io gateway: authentication, the `join` and `chat` events, and per-socket
//! delivery (replay then live, with acks).
//!
//! Handlers stay thin: parse the payload into a [`ClientCommand`](crate::domain::ClientCommand),
//! call the chat service, answer with an ack or an `error` event. Owns nothing that must
//! survive a socket; all state lives in the services.

mod auth;
mod delivery;
mod handlers;
pub mod sessions;

use socketioxide::{handler::ConnectHandler, SocketIo};

/// Registers every socket handler on namespace `/`.
///
/// Event handlers are installed by a connect middleware, not by the connect handler:
/// socketioxide sends the CONNECT answer before it spawns the connect handler, so a client
/// that emits `join` right after connecting (as the original client does) would otherwise
/// race the registration and lose the event. Middlewares run before the answer. (`with`
/// runs the middleware added last first: authentication, then handler installation.)
pub fn register(io: &SocketIo) {
    io.ns(
        "/",
        handlers::on_connect
            .with(handlers::install_handlers)
            .with(auth::authenticate),
    );
}
