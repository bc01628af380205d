//! webchat: a realtime chat server that socket.io clients talk to unchanged.
//!
//! Module map:
//! - [`config`]    settings from flags and `WEBCHAT_*` env vars
//! - [`telemetry`] tracing subscriber and Prometheus counters
//! - [`startup`]   chooses back-ends, wires services, binds, runs, shuts down
//! - [`state`]     the shared `AppState`
//! - [`domain`]    parsed ids, the wire event, error codes
//! - [`accounts`]  signup/login/logout, tokens, account stores
//! - [`inbox`]     durable per-user inboxes: Seq, idempotency, replay
//! - [`limits`]    event and connection rate limits, the failed-login throttle
//! - [`bus`]       receiver-keyed pub/sub and the local routing table
//! - [`calllog`]   every conversation event, written behind to DynamoDB / Redis / embedded
//! - [`channels`]  public topics and server broadcast: settings, history, recovery
//! - [`groups`]    durable group membership
//! - [`receipts`]  who displayed what, for unread counts
//! - [`presence`]  online state across nodes and who is told
//! - [`profiles`]  profile updates from the profile service to contacts' sockets
//! - [`chat`]      what a client command does (no sockets)
//! - [`lifecycle`] replies, edits, deletes, reactions: the rules and the message index
//! - [`gateway`]   socket.io handlers and per-socket delivery
//! - [`http`]      REST, `/health`, `/metrics`, the web client
//! - [`health`]    back-end probes
//! - [`storage`]   the embedded database and the Redis connection
//! - [`support`]   the support desk: roles, tickets, claims, the staff queue
//! - [`attachments`] uploads, their access rules, thumbnails, blob stores, the orphan sweep
//! - [`webhooks`]  signed webhooks and Web Push for offline users: registry, durable queue

pub mod accounts;
pub mod attachments;
pub mod blocks;
pub mod bus;
pub mod calllog;
pub mod channels;
pub mod chat;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod groups;
pub mod health;
pub mod http;
pub mod inbox;
pub mod lifecycle;
pub mod limits;
pub mod presence;
pub mod profiles;
pub mod receipts;
pub mod server;
pub mod startup;
pub mod state;
pub mod storage;
pub mod support;
pub mod telemetry;
pub mod webhooks;

pub use config::Settings;
pub use startup::Application;
