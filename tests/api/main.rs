//! Integration tests: real servers (in-process nodes, or `webchat` processes where a node
//! must be SIGKILLed), real Redis (WEBCHAT_TEST_REDIS_URL, started by scripts/test-all.sh),
//! and a real socket.io client speaking Engine.IO 4 over websocket.

mod helpers;

mod accounts;
mod attachments;
mod authz;
mod blocks;
mod calllog;
mod calllog_retention;
mod calllog_tables;
mod channels;
mod errors;
mod failover;
mod fused_append;
mod groups;
mod hardening;
mod hashing;
mod lifecycle;
mod limits;
mod malformed;
mod memory;
mod messaging;
mod open_mode;
mod presence;
mod profile_changes;
mod profile_sharing;
mod redis_cluster;
mod redis_faults;
mod secrets;
mod slow_consumer;
mod support;
mod traffic;
mod webhooks;
