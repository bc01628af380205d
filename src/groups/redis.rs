//! Group membership in Redis: a set per group, `wc:{gid}:members`. A set emptied by the last
//! departure disappears, which is the contract's "an empty group is deleted".

use async_trait::async_trait;
use fred::{
    clients::Pool,
    cmd,
    interfaces::{ClientLike, KeysInterface, SetsInterface},
    types::{scripts::Script, Expiration},
};

use super::GroupStore;
use crate::{
    domain::{GroupId, UserId},
    storage::{
        redis::{unavailable, user_key},
        StoreError,
    },
};

const MEMBERS_LUA: &str = include_str!("members.lua");
/// SSCAN's COUNT when reading a member set: more than any group holds, so one page is the
/// whole set (COUNT is a hint; the scan still follows the cursor to the end).
const MEMBERS_PER_SCAN: u32 = 1_000_000;

/// [`GroupStore`] over Redis sets; a group's hot state is `wc:{gid}:hot`, expiring after the
/// idle time.
#[derive(Clone)]
pub struct RedisGroupStore {
    pool: Pool,
    script: Script,
    /// The idle time a new group starts with.
    created_idle_secs: u64,
    /// SSCAN's COUNT when reading a member set.
    members_per_scan: u32,
}

impl RedisGroupStore {
    /// A store over `pool`; new groups stay hot for `idle_secs`.
    pub fn new(pool: Pool, idle_secs: u64) -> Self {
        Self {
            pool,
            script: Script::from_lua(MEMBERS_LUA),
            created_idle_secs: idle_secs,
            members_per_scan: MEMBERS_PER_SCAN,
        }
    }

    /// The same store reading member sets `count` members per SSCAN page (the default asks
    /// for the whole set at once); a small count shows that a set read in pages is whole.
    /// Pages are not one snapshot, as one SMEMBERS reply is: a member added or removed while
    /// a set is read in several pages may or may not be in the result.
    pub fn with_members_per_scan(mut self, count: u32) -> Self {
        self.members_per_scan = count.max(1);
        self
    }

    async fn change(
        &self,
        gid: &GroupId,
        op: &str,
        uids: &[UserId],
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut args = Vec::with_capacity(uids.len() + 1);
        args.push(op.to_owned());
        args.extend(uids.iter().map(UserId::to_string));
        let mut reply: Vec<String> = self
            .script
            .evalsha_with_reload(self.pool.next(), vec![members_key(gid)], args)
            .await
            .map_err(unavailable)?;
        if reply.first().map(String::as_str) != Some("1") {
            return Ok(None);
        }
        reply.remove(0);
        reply.sort();
        Ok(Some(reply))
    }
}

fn members_key(gid: &GroupId) -> String {
    user_key(gid.as_str(), "members")
}

#[async_trait]
impl GroupStore for RedisGroupStore {
    async fn create(&self, gid: &GroupId, members: &[UserId]) -> Result<bool, StoreError> {
        let created = self.change(gid, "create", members).await?.is_some();
        if created {
            // A new group is hot: its first message needs no restart.
            self.wake(gid, self.created_idle_secs).await?;
        }
        Ok(created)
    }

    async fn members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError> {
        // SSCAN, not SMEMBERS: over RESP3 a SMEMBERS reply is a set, which the client decodes
        // into a hash set, hashing every member and growing the table as it goes (~8 % of
        // the sending node's CPU in a 10,000-member fan-out, before the first append can
        // start); an SSCAN page is a plain array. The count asks for every member at once;
        // Redis may still answer in pages, and may repeat a member across pages.
        let key = members_key(gid);
        let mut members: Vec<String> = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, page): (String, Vec<String>) = self
                .pool
                .next()
                .custom(
                    cmd!("SSCAN"),
                    vec![
                        key.clone(),
                        cursor,
                        "COUNT".to_owned(),
                        self.members_per_scan.to_string(),
                    ],
                )
                .await
                .map_err(unavailable)?;
            members.extend(page);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        if members.is_empty() {
            return Ok(None);
        }
        members.sort_unstable();
        members.dedup();
        Ok(Some(members))
    }

    async fn size(&self, gid: &GroupId) -> Result<Option<usize>, StoreError> {
        let size: u64 = self
            .pool
            .scard(members_key(gid))
            .await
            .map_err(unavailable)?;
        Ok((size > 0).then(|| usize::try_from(size).unwrap_or(usize::MAX)))
    }

    async fn add(
        &self,
        gid: &GroupId,
        members: &[UserId],
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.change(gid, "add", members).await
    }

    async fn remove(
        &self,
        gid: &GroupId,
        member: &UserId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.change(gid, "remove", std::slice::from_ref(member))
            .await
    }

    async fn wake(&self, gid: &GroupId, idle_secs: u64) -> Result<bool, StoreError> {
        let ttl = i64::try_from(idle_secs.max(1)).unwrap_or(i64::MAX);
        let previous: Option<String> = self
            .pool
            .set(
                user_key(gid.as_str(), "hot"),
                "1",
                Some(Expiration::EX(ttl)),
                None,
                true,
            )
            .await
            .map_err(unavailable)?;
        Ok(previous.is_none())
    }
}
