//! Load generator support for webchat: [`client`] is a minimal socket.io v5 /
//! Engine.IO 4 websocket client, shared with the server's integration tests, over [`ws`], a
//! minimal WebSocket client.

pub mod client;
pub mod ws;
