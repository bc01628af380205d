//! webchat-profile: the profile service of webchat (name, status, avatar of each user, shared
//! with the people they chat with).
//!
//! Module map:
//! - [`config`]   settings from flags and `WEBCHAT_*` env vars
//! - [`startup`]  chooses back-ends, loads the token key, binds, runs
//! - [`http`]     routes, extractors, `/health`, `/metrics`, OpenAPI
//! - [`service`]  read through the cache; write, invalidate, publish
//! - [`cache`]    Redis cache-aside with version fencing
//! - [`store`]    the `ProfileStore` trait: DynamoDB, Redis, redb
//! - [`auth`]     bearer tokens (`webchat-core`'s, as the chat server's) and revocations
//! - [`profile`]  the record and its validation rules
//! - [`redis`]    connection and key names
//! - [`error`]    the API error shape
//! - [`metrics`]  Prometheus counters

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod profile;
pub mod redis;
pub mod service;
pub mod startup;
pub mod store;

pub use config::{AuthMode, Settings};
pub use startup::Application;
