//! Group membership with DynamoDB as the durable record and Redis as the hot copy.
//!
//! Table `<prefix>groups`, rows of the generic [`DynamoTable`] layout: `g#<gid>` / `#meta`
//! marks that the group exists, `g#<gid>` / `m#<uid>` is one member (one row per member: a
//! 100,000-member list would not fit one item). Every change is written to DynamoDB first,
//! then to the hot Redis set; reads come from Redis, and a group missing there (Redis lost,
//! or flushed) is rebuilt from DynamoDB on first use.

use async_trait::async_trait;

use super::{GroupStore, RedisGroupStore};
use crate::{
    domain::{GroupId, UserId},
    storage::{
        dynamo::DynamoTable,
        table::{Order, Row, SkRange, SortedTable},
        StoreError,
    },
};

const META: &str = "#meta";
/// Larger than any group the settings allow.
const ALL_MEMBERS: usize = 10_000_000;

/// [`GroupStore`]: DynamoDB durable, Redis hot.
pub struct DurableGroupStore {
    durable: DynamoTable,
    hot: RedisGroupStore,
}

fn pk(gid: &GroupId) -> String {
    format!("g#{gid}")
}

fn member_row(gid: &GroupId, uid: &str) -> Row {
    Row::new(pk(gid), format!("m#{uid}"))
}

impl DurableGroupStore {
    /// Membership in `durable`, cached in `hot`.
    pub fn new(durable: DynamoTable, hot: RedisGroupStore) -> Self {
        Self { durable, hot }
    }

    /// The durable member list, `None` when the group does not exist.
    async fn durable_members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError> {
        let exists = !self
            .durable
            .get_rows(vec![(pk(gid), META.to_owned())])
            .await?
            .is_empty();
        if !exists {
            return Ok(None);
        }
        let rows = self
            .durable
            .query(
                &pk(gid),
                SkRange::prefix("m#"),
                Order::Ascending,
                ALL_MEMBERS,
            )
            .await?;
        let members: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.sk.strip_prefix("m#").map(str::to_owned))
            .collect();
        Ok((!members.is_empty()).then_some(members))
    }

    /// Makes the hot copy match `members` (after Redis lost it, or a change raced).
    async fn rehydrate(&self, gid: &GroupId, members: &[String]) -> Result<(), StoreError> {
        let uids: Vec<UserId> = members
            .iter()
            .filter_map(|m| UserId::parse(m).ok())
            .collect();
        if !self.hot.create(gid, &uids).await? {
            self.hot.add(gid, &uids).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl GroupStore for DurableGroupStore {
    async fn create(&self, gid: &GroupId, members: &[UserId]) -> Result<bool, StoreError> {
        if !self
            .durable
            .insert_if_absent(&Row::new(pk(gid), META))
            .await?
        {
            return Ok(false);
        }
        self.durable
            .put_rows(
                members
                    .iter()
                    .map(|m| member_row(gid, m.as_str()))
                    .collect(),
            )
            .await?;
        self.hot.create(gid, members).await?;
        Ok(true)
    }

    async fn members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError> {
        if let Some(members) = self.hot.members(gid).await? {
            return Ok(Some(members));
        }
        let Some(members) = self.durable_members(gid).await? else {
            return Ok(None);
        };
        tracing::info!(gid = %gid, members = members.len(), "group restored from DynamoDB");
        self.rehydrate(gid, &members).await?;
        Ok(Some(members))
    }

    async fn size(&self, gid: &GroupId) -> Result<Option<usize>, StoreError> {
        match self.hot.size(gid).await? {
            Some(size) => Ok(Some(size)),
            // Not hot: members() restores the hot copy from DynamoDB.
            None => Ok(self.members(gid).await?.map(|m| m.len())),
        }
    }

    async fn add(
        &self,
        gid: &GroupId,
        members: &[UserId],
    ) -> Result<Option<Vec<String>>, StoreError> {
        if self.durable_members(gid).await?.is_none() {
            return Ok(None);
        }
        self.durable
            .put_rows(
                members
                    .iter()
                    .map(|m| member_row(gid, m.as_str()))
                    .collect(),
            )
            .await?;
        let Some(after) = self.durable_members(gid).await? else {
            return Ok(None);
        };
        self.rehydrate(gid, &after).await?;
        Ok(Some(after))
    }

    async fn remove(
        &self,
        gid: &GroupId,
        member: &UserId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if self.durable_members(gid).await?.is_none() {
            return Ok(None);
        }
        let row = member_row(gid, member.as_str());
        self.durable.delete_rows(vec![(row.pk, row.sk)]).await?;
        let remaining = self.durable_members(gid).await?.unwrap_or_default();
        if remaining.is_empty() {
            self.durable
                .delete_rows(vec![(pk(gid), META.to_owned())])
                .await?;
        }
        // The hot set follows; its own reply is ignored (it may have been lost).
        self.hot.remove(gid, member).await?;
        Ok(Some(remaining))
    }

    async fn wake(&self, gid: &GroupId, idle_secs: u64) -> Result<bool, StoreError> {
        self.hot.wake(gid, idle_secs).await
    }
}
