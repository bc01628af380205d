//! The socket.io gateway: authentication, the `join` and `chat` events, and per-socket
//! delivery (replay then live, with acks).
//!
//! Handlers stay thin: parse the payload into a [`ClientCommand`](crate::domain::ClientCommand),
//! call the chat service, answer with an ack or an `error` event. Owns nothing that must
//! survive a socket; all state lives in the services.

mod auth;
mod delivery;
mod handlers;

use socketioxide::{handler::ConnectHandler, SocketIo};

/// Registers every socket handler on namespace `/`.
pub fn register(io: &SocketIo) {
    io.ns("/", handlers::on_connect.with(auth::authenticate));
}
