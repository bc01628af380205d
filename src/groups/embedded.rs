//! Group membership in the embedded store: gid → sorted JSON list of uids.

use std::collections::BTreeSet;

use async_trait::async_trait;
use redb::ReadableTable;

use super::GroupStore;
use crate::{
    domain::{now_millis, GroupId, UserId},
    storage::{
        embedded::{internal, EmbeddedDb, GROUPS, GROUP_ACTIVITY},
        StoreError,
    },
};

/// [`GroupStore`] over the embedded database.
pub struct EmbeddedGroupStore {
    db: EmbeddedDb,
}

impl EmbeddedGroupStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }

    /// Applies `change` to the stored member set of `gid` in one transaction.
    async fn update(
        &self,
        gid: &GroupId,
        change: impl FnOnce(&mut BTreeSet<String>) + Send + 'static,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let gid = gid.to_string();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(GROUPS).map_err(internal)?;
                    let Some(raw) = table.get(gid.as_str()).map_err(internal)? else {
                        return Ok(None);
                    };
                    let mut members: BTreeSet<String> =
                        serde_json::from_slice(raw.value()).map_err(internal)?;
                    drop(raw);
                    change(&mut members);
                    if members.is_empty() {
                        table.remove(gid.as_str()).map_err(internal)?;
                    } else {
                        let json = serde_json::to_vec(&members).map_err(internal)?;
                        table
                            .insert(gid.as_str(), json.as_slice())
                            .map_err(internal)?;
                    }
                    Ok(Some(members.into_iter().collect()))
                },
                |_| {},
            )
            .await
    }
}

#[async_trait]
impl GroupStore for EmbeddedGroupStore {
    async fn create(&self, gid: &GroupId, members: &[UserId]) -> Result<bool, StoreError> {
        let gid = gid.to_string();
        let members: BTreeSet<String> = members.iter().map(UserId::to_string).collect();
        let json = serde_json::to_vec(&members).map_err(internal)?;
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(GROUPS).map_err(internal)?;
                    if table.get(gid.as_str()).map_err(internal)?.is_some() {
                        return Ok(false);
                    }
                    table
                        .insert(gid.as_str(), json.as_slice())
                        .map_err(internal)?;
                    // A new group is hot: its first message needs no restart.
                    let mut activity = txn.open_table(GROUP_ACTIVITY).map_err(internal)?;
                    activity
                        .insert(gid.as_str(), now_millis())
                        .map_err(internal)?;
                    Ok(true)
                },
                |_| {},
            )
            .await
    }

    async fn members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError> {
        let gid = gid.to_string();
        self.db
            .read(move |txn| {
                let table = txn.open_table(GROUPS).map_err(internal)?;
                let Some(raw) = table.get(gid.as_str()).map_err(internal)? else {
                    return Ok(None);
                };
                let members: BTreeSet<String> =
                    serde_json::from_slice(raw.value()).map_err(internal)?;
                Ok(Some(members.into_iter().collect()))
            })
            .await
    }

    async fn add(
        &self,
        gid: &GroupId,
        members: &[UserId],
    ) -> Result<Option<Vec<String>>, StoreError> {
        let added: Vec<String> = members.iter().map(UserId::to_string).collect();
        self.update(gid, move |set| set.extend(added)).await
    }

    async fn remove(
        &self,
        gid: &GroupId,
        member: &UserId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let gone = member.to_string();
        self.update(gid, move |set| {
            set.remove(&gone);
        })
        .await
    }

    async fn wake(&self, gid: &GroupId, idle_secs: u64) -> Result<bool, StoreError> {
        let gid = gid.to_string();
        let idle_ms = i64::try_from(idle_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.db
            .write(
                move |txn| {
                    let mut activity = txn.open_table(GROUP_ACTIVITY).map_err(internal)?;
                    let now = now_millis();
                    let last = activity
                        .get(gid.as_str())
                        .map_err(internal)?
                        .map(|v| v.value());
                    activity.insert(gid.as_str(), now).map_err(internal)?;
                    Ok(last.is_none_or(|t| now.saturating_sub(t) > idle_ms))
                },
                |_| {},
            )
            .await
    }
}
