//! webchat-core: what the chat server (`webchat`) and the profile service
//! (`webchat-profile`) share, so that both agree on it by construction and neither binary
//! depends on the other.
//!
//! Module map:
//! - [`ids`]       parsed ids (`UserId`, `GroupId`, `MsgId`) and message bodies
//! - [`error`]     the wire contract's error codes and `ChatError`
//! - [`text`]      checks on user-chosen text others see
//! - [`tokens`]    signed bearer tokens
//! - [`token_key`] where the token key comes from when none is configured
//! - [`store`]     the back-end error type and the data dir's file modes
//! - [`redis`]     Redis client settings, key names, error mapping
//! - [`dynamo`]    the DynamoDB client, tables, and batch loops over unprocessed items
//! - [`telemetry`] the tracing subscriber and Prometheus counter/gauge atomics
//! - [`http`]      CORS and security headers
//! - [`config`]    settings both binaries read the same way
//! - [`shutdown`]  the SIGINT/SIGTERM future

pub mod config;
pub mod dynamo;
pub mod error;
pub mod http;
pub mod ids;
pub mod redis;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod token_key;
pub mod tokens;

pub use error::{ChatError, ErrorCode};
pub use ids::{GroupId, MessageBody, MsgId, Seq, UserId};
pub use store::StoreError;
