//! Shared plumbing of the two storage back-ends: the embedded database (redb, one file in the
//! data dir, writes group-committed by one writer thread) and the Redis connection (fred).
//! Owns connections (the storage error type is `webchat-core`'s); the per-concept stores live
//! in their own modules (accounts, inbox) and only borrow these handles.

pub mod dynamo;
pub mod embedded;
pub mod redis;
pub mod redis_table;
pub mod table;

/// The store error and the data dir's file modes live in `webchat-core` (the profile service
/// shares them); these are their old paths.
pub use webchat_core::store::{create_private_dir, private_file, StoreError};
