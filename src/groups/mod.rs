//! Group membership: the durable record of who is in which group.
//!
//! Owns the [`GroupStore`] trait and its embedded and Redis implementations. Membership is
//! saved before anyone is told about it, so a member never misses the first messages. What
//! happens on create/refer/depart (who is notified, fan-out) is the chat service's.

mod dynamo;
mod embedded;
mod redis;

use async_trait::async_trait;

pub use self::dynamo::DurableGroupStore;
pub use self::embedded::EmbeddedGroupStore;
pub use self::redis::RedisGroupStore;
use crate::{
    domain::{GroupId, UserId},
    storage::StoreError,
};

/// Where group membership is kept. Member lists come back sorted.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates `gid` with `members`; false when the gid is taken.
    async fn create(&self, gid: &GroupId, members: &[UserId]) -> Result<bool, StoreError>;
    /// The members, or `None` when there is no such group.
    async fn members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError>;
    /// How many members the group has (`None`: no such group), without reading them: the
    /// presence audience skips large groups, and must not fetch 10,000 uids to learn that.
    async fn size(&self, gid: &GroupId) -> Result<Option<usize>, StoreError> {
        Ok(self.members(gid).await?.map(|m| m.len()))
    }
    /// Adds `members`; the full list afterwards, or `None` when there is no such group.
    async fn add(
        &self,
        gid: &GroupId,
        members: &[UserId],
    ) -> Result<Option<Vec<String>>, StoreError>;
    /// Removes `member`; the remaining members (the group is deleted when none remain), or
    /// `None` when there is no such group.
    async fn remove(
        &self,
        gid: &GroupId,
        member: &UserId,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// Marks the group as used now and says whether it had been idle for longer than
    /// `idle_secs` (dormant: its hot state was gone, and the caller restarts it). Membership is
    /// never touched by dormancy.
    async fn wake(&self, gid: &GroupId, idle_secs: u64) -> Result<bool, StoreError>;
}
