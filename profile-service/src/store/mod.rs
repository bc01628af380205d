//! Where profiles live. One small trait, three implementations chosen at start-up:
//! - [`dynamodb::DynamoStore`] when `WEBCHAT_DYNAMODB_ENDPOINT` is set,
//! - [`redis::RedisStore`] when only Redis is configured (Redis is the system of record),
//! - [`embedded::EmbeddedStore`] otherwise (one redb file, single process).
//!
//! Every write raises the record's version atomically with the write itself; the cache in
//! front relies on that to refuse stale fills.

pub mod dynamodb;
pub mod embedded;
pub mod redis;

use async_trait::async_trait;
use webchat_core::ids::UserId;

use crate::profile::{Change, Profile, Versioned};

/// A back-end failure (the chat server's type: `Unavailable` → 503, `Internal` → 500).
/// Client input never produces one.
pub use webchat_core::store::StoreError;

/// One page of a full listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Profiles of this page, in no particular order.
    pub items: Vec<Profile>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

/// The profile records.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// What this store is, for `/health`.
    fn kind(&self) -> &'static str;

    /// Whether the back-end answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// One profile, read strongly consistently (a read after an acknowledged write sees it).
    async fn get(&self, uid: &UserId) -> Result<Option<Versioned>, StoreError>;

    /// The profiles of `uids` that exist (unknown ones are absent), at most 100 uids.
    async fn get_many(&self, uids: &[UserId]) -> Result<Vec<Versioned>, StoreError>;

    /// Applies `change` at `updated_at` (unix ms), creating the profile if needed, and returns
    /// the record as stored, its version raised by one. The stored `updatedAt` is strictly
    /// greater than the previous one (one past it when `updated_at` is not), so subscribers
    /// can order updates of one uid by it even across instances with skewed clocks.
    async fn put(
        &self,
        uid: &UserId,
        change: &Change,
        updated_at: i64,
    ) -> Result<Versioned, StoreError>;

    /// Up to about `limit` profiles after `cursor` (`None`: from the start).
    async fn scan_page(&self, cursor: Option<String>, limit: usize) -> Result<Page, StoreError>;
}

/// Applies `change` to the previous record (if any): the read-modify-write of stores that
/// run it inside their own transaction.
pub(crate) fn apply(
    uid: &UserId,
    previous: Option<Versioned>,
    change: &Change,
    updated_at: i64,
) -> Versioned {
    let (status, avatar_url, version, at) = match previous {
        Some(prev) => (
            prev.profile.status,
            prev.profile.avatar_url,
            prev.version,
            // Grows with every write even if the clock went back.
            updated_at.max(prev.profile.updated_at.saturating_add(1)),
        ),
        None => (String::new(), String::new(), 0, updated_at),
    };
    Versioned {
        profile: Profile {
            uid: uid.to_string(),
            name: change.name.clone(),
            status: change.status.clone().unwrap_or(status),
            avatar_url: change.avatar_url.clone().unwrap_or(avatar_url),
            updated_at: at,
        },
        version: version + 1,
    }
}
