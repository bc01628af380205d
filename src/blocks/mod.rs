//! Blocking (contract §16): who refuses what from whom.
//!
//! Owns the [`BlockStore`] trait (embedded and Redis implementations side by side) and the
//! [`BlockService`], which the chat service asks before it stores anything a blocked user
//! sends to the blocker, and which the presence service asks before it shares the blocker's
//! presence. The store is the only source of truth: every node reads it on every check, so a
//! block holds on every node from the moment it is acknowledged.

mod embedded;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::embedded::EmbeddedBlockStore;
pub use self::redis::RedisBlockStore;
use crate::{
    accounts::AccountService,
    domain::{ChatError, ErrorCode, UserId},
    inbox::Rider,
    storage::StoreError,
};

/// Where blocks are kept: for each user, the set of users they block.
#[async_trait]
pub trait BlockStore: Send + Sync {
    /// `blocker` blocks `blocked` (idempotent).
    async fn block(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError>;
    /// `blocker` no longer blocks `blocked` (idempotent).
    async fn unblock(&self, blocker: &UserId, blocked: &UserId) -> Result<(), StoreError>;
    /// Whether `blocker` blocks `other`: one read, in `blocker`'s slot.
    async fn blocks(&self, blocker: &UserId, other: &UserId) -> Result<bool, StoreError>;
    /// Everyone `blocker` blocks, sorted.
    async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<String>, StoreError>;

    /// The check "`blocker` blocks `other`" as a rider an inbox append can carry (see
    /// [`Rider`]), where this store can describe it; `None` otherwise.
    fn refusal_rider(&self, _blocker: &UserId, _other: &UserId) -> Option<Rider> {
        None
    }
}

/// The refusal a blocked user gets. It names no one and says no more than the code: a
/// blocked sender learns only that this recipient does not take this from them.
fn refused() -> ChatError {
    ChatError::new(ErrorCode::Forbidden, "not allowed")
}

/// The blocking rules over a [`BlockStore`].
#[derive(Clone)]
pub struct BlockService {
    store: Arc<dyn BlockStore>,
    /// Token mode: the accounts that may be blocked (`not_found` for any other uid). Open
    /// mode (`None`): any valid uid, as any valid uid may be messaged there.
    known_users: Option<AccountService>,
}

impl BlockService {
    /// A service over `store`; with `known_users`, only existing accounts can be blocked.
    pub fn new(store: Arc<dyn BlockStore>, known_users: Option<AccountService>) -> Self {
        Self { store, known_users }
    }

    /// The store (the presence service reads it too).
    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    /// `actor` blocks (`active`) or unblocks `target`. Blocking oneself is `bad_request`;
    /// blocking an unknown user in token mode is `not_found`. Unblocking is idempotent and
    /// checks no account (an account deleted since can still be unblocked).
    pub async fn set(
        &self,
        actor: &UserId,
        target: &UserId,
        active: bool,
    ) -> Result<(), ChatError> {
        if actor == target {
            return Err(ChatError::bad_request("you cannot block yourself"));
        }
        if active {
            if let Some(accounts) = &self.known_users {
                if !accounts.exists(target).await? {
                    return Err(ChatError::new(
                        ErrorCode::NotFound,
                        format!("no user {target}"),
                    ));
                }
            }
            self.store.block(actor, target).await?;
        } else {
            self.store.unblock(actor, target).await?;
        }
        tracing::info!(actor = %actor, target = %target, blocked = active, "block changed");
        Ok(())
    }

    /// Everyone `actor` blocks, sorted.
    pub async fn list(&self, actor: &UserId) -> Result<Vec<String>, ChatError> {
        Ok(self.store.blocked_by(actor).await?)
    }

    /// `forbidden` when `recipient` blocks `sender`: checked before anything `sender`
    /// addresses to `recipient` is stored or published (one store read).
    pub async fn check_allowed(
        &self,
        sender: &UserId,
        recipient: &UserId,
    ) -> Result<(), ChatError> {
        if sender != recipient && self.store.blocks(recipient, sender).await? {
            tracing::debug!(sender = %sender, recipient = %recipient, "refused: blocked");
            return Err(refused());
        }
        Ok(())
    }

    /// The block check of a 1:1 message from `sender` to `recipient` as a rider of its
    /// append (so it costs no round trip of its own); `None` when there is nothing to check
    /// (a message to oneself) or the store cannot describe it. An append it refused is
    /// answered with [`BlockService::refusal`].
    pub fn refusal_rider(&self, sender: &UserId, recipient: &UserId) -> Option<Rider> {
        (sender != recipient)
            .then(|| self.store.refusal_rider(recipient, sender))
            .flatten()
    }

    /// What a sender gets for a message its recipient's block list refused.
    pub fn refusal(&self) -> ChatError {
        refused()
    }

    /// `forbidden` when any of `named` blocks `actor` (a group `create`/`refer` naming
    /// them); a few reads run side by side.
    pub async fn check_allowed_all(
        &self,
        actor: &UserId,
        named: &[UserId],
    ) -> Result<(), ChatError> {
        let checks = named.iter().map(|u| self.check_allowed(actor, u)).collect();
        crate::limits::first_refusal(checks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedDb;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).expect("uid")
    }

    fn service(dir: &std::path::Path) -> BlockService {
        let db = EmbeddedDb::open(dir).expect("db");
        BlockService::new(Arc::new(EmbeddedBlockStore::new(db)), None)
    }

    #[tokio::test]
    async fn a_block_refuses_the_blocked_one_way_until_unblocked() {
        let dir = tempfile::tempdir().expect("dir");
        let blocks = service(dir.path());
        let (alice, bob) = (uid("alice"), uid("bob"));
        blocks
            .check_allowed(&bob, &alice)
            .await
            .expect("no block yet");

        blocks.set(&alice, &bob, true).await.expect("block");
        let refused = blocks
            .check_allowed(&bob, &alice)
            .await
            .expect_err("blocked");
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert_eq!(refused.message, "not allowed", "names no one");
        // One way only: the blocker may still reach the blocked user.
        blocks
            .check_allowed(&alice, &bob)
            .await
            .expect("blocker not refused");
        // Twice is the same as once.
        blocks.set(&alice, &bob, true).await.expect("block again");
        assert_eq!(blocks.list(&alice).await.expect("list"), ["bob"]);
        assert!(blocks.list(&bob).await.expect("list").is_empty());

        blocks.set(&alice, &bob, false).await.expect("unblock");
        blocks.check_allowed(&bob, &alice).await.expect("unblocked");
        assert!(blocks.list(&alice).await.expect("list").is_empty());
        blocks
            .set(&alice, &bob, false)
            .await
            .expect("unblock is idempotent");
    }

    #[tokio::test]
    async fn blocking_oneself_is_a_bad_request_and_a_group_add_naming_a_blocker_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let blocks = service(dir.path());
        let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
        let err = blocks.set(&alice, &alice, true).await.expect_err("self");
        assert_eq!(err.code, ErrorCode::BadRequest);

        blocks.set(&carol, &bob, true).await.expect("block");
        blocks
            .check_allowed_all(&bob, std::slice::from_ref(&alice))
            .await
            .expect("alice does not block bob");
        let err = blocks
            .check_allowed_all(&bob, &[alice.clone(), carol.clone()])
            .await
            .expect_err("carol blocks bob");
        assert_eq!(err.code, ErrorCode::Forbidden);
        // Prefix neighbours are other users: "bo" is not blocked by carol's "bob".
        blocks.check_allowed(&uid("bo"), &carol).await.expect("bo");
        let list = blocks.list(&uid("caro")).await.expect("list");
        assert!(list.is_empty(), "{list:?}");
    }

    #[tokio::test]
    async fn embedded_blocks_outlive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let (alice, bob) = (uid("alice"), uid("bob"));
        let db = EmbeddedDb::open(dir.path()).expect("db");
        let store = EmbeddedBlockStore::new(db.clone());
        store.block(&alice, &bob).await.expect("block");
        store.block(&alice, &uid("carol")).await.expect("block");
        store.unblock(&alice, &uid("carol")).await.expect("unblock");
        db.close();
        // A new node over the same file reads its copy from the file.
        let store = EmbeddedBlockStore::new(EmbeddedDb::open(dir.path()).expect("reopen"));
        assert!(store.blocks(&alice, &bob).await.expect("check"));
        assert!(!store.blocks(&bob, &alice).await.expect("check"));
        assert_eq!(store.blocked_by(&alice).await.expect("list"), ["bob"]);
    }
}
