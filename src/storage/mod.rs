//! Shared plumbing of the two storage back-ends: the embedded database (redb, one file in the
//! data dir, writes group-committed by one writer thread) and the Redis connection (fred).
//! Owns connections and the storage error type; the per-concept stores (accounts, inbox) live
//! in their own modules and only borrow these handles.

pub mod dynamo;
pub mod embedded;
pub mod redis;
pub mod redis_table;
pub mod table;

use crate::domain::{ChatError, ErrorCode};

/// A back-end failure. Client-facing code maps it to `unavailable` or `internal`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The back-end could not be reached or timed out; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The back-end answered with something that should not happen.
    #[error("store error: {0}")]
    Internal(String),
    /// The back-end refused this one write, and stored nothing of it (say, a key of the
    /// wrong type); unlike [`StoreError::Unavailable`], its outcome is known.
    #[error("store refused the write: {0}")]
    Rejected(String),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ChatError::new(ErrorCode::Unavailable, "storage is unavailable, try again")
            }
            StoreError::Internal(_) | StoreError::Rejected(_) => {
                tracing::error!(error = %e, "store failure");
                ChatError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}
