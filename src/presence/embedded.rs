//! Presence on one node without Redis: counts in memory (a restart takes every socket down
//! anyway), contacts in the embedded store.

use async_trait::async_trait;
use dashmap::DashMap;

use super::{ContactStore, Heartbeat, PresenceStore};
use crate::{
    domain::{GroupId, UserId},
    storage::{
        embedded::{internal, EmbeddedDb, CONTACTS},
        StoreError,
    },
};

/// [`PresenceStore`] for a single node: every socket is local.
#[derive(Default)]
pub struct MemoryPresenceStore {
    sockets: DashMap<String, u32>,
}

#[async_trait]
impl PresenceStore for MemoryPresenceStore {
    async fn socket_up(&self, uid: &UserId) -> Result<bool, StoreError> {
        let mut count = self.sockets.entry(uid.to_string()).or_insert(0);
        *count += 1;
        Ok(*count == 1)
    }

    async fn socket_down(&self, uid: &UserId) -> Result<bool, StoreError> {
        let now_zero = match self.sockets.get_mut(uid.as_str()) {
            Some(mut count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => return Ok(false),
        };
        if now_zero {
            self.sockets.remove_if(uid.as_str(), |_, c| *c == 0);
        }
        Ok(now_zero)
    }

    async fn heartbeat(&self, _local: &[(String, u32)]) -> Result<Heartbeat, StoreError> {
        Ok(Heartbeat::default())
    }

    async fn online(&self, uids: &[String]) -> Result<Vec<bool>, StoreError> {
        Ok(uids
            .iter()
            .map(|u| self.sockets.get(u).is_some_and(|c| *c > 0))
            .collect())
    }
}

/// [`ContactStore`] in the embedded store: keys `w\0<uid>\0<peer>` (uid wrote to peer),
/// `h\0<uid>\0<peer>` (uid heard from peer) and `g\0<uid>\0<gid>`.
pub struct EmbeddedContactStore {
    db: EmbeddedDb,
}

impl EmbeddedContactStore {
    /// A store over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }

    async fn put(&self, keys: Vec<String>, present: bool) -> Result<(), StoreError> {
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CONTACTS).map_err(internal)?;
                    for key in &keys {
                        if present {
                            table.insert(key.as_str(), ()).map_err(internal)?;
                        } else {
                            table.remove(key.as_str()).map_err(internal)?;
                        }
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn list(&self, prefix: String) -> Result<Vec<String>, StoreError> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(CONTACTS).map_err(internal)?;
                let mut out = Vec::new();
                for entry in table.range(prefix.as_str()..).map_err(internal)? {
                    let (key, _) = entry.map_err(internal)?;
                    let Some(rest) = key.value().strip_prefix(prefix.as_str()) else {
                        break;
                    };
                    out.push(rest.to_owned());
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl ContactStore for EmbeddedContactStore {
    async fn note_sent(&self, sender: &UserId, recipient: &UserId) -> Result<(), StoreError> {
        let keys = vec![
            format!("w\0{sender}\0{recipient}"),
            format!("h\0{recipient}\0{sender}"),
        ];
        self.put(keys, true).await
    }

    async fn peers(&self, uid: &UserId) -> Result<Vec<String>, StoreError> {
        // Both lists come back sorted (key order): their intersection is one merge.
        let (wrote, heard) = tokio::try_join!(
            self.list(format!("w\0{uid}\0")),
            self.list(format!("h\0{uid}\0"))
        )?;
        let heard: std::collections::BTreeSet<String> = heard.into_iter().collect();
        Ok(wrote.into_iter().filter(|p| heard.contains(p)).collect())
    }

    async fn joined(&self, gid: &GroupId, members: &[UserId]) -> Result<(), StoreError> {
        let keys = members.iter().map(|m| format!("g\0{m}\0{gid}")).collect();
        self.put(keys, true).await
    }

    async fn left(&self, gid: &GroupId, member: &UserId) -> Result<(), StoreError> {
        self.put(vec![format!("g\0{member}\0{gid}")], false).await
    }

    async fn groups_of(&self, uid: &UserId) -> Result<Vec<String>, StoreError> {
        self.list(format!("g\0{uid}\0")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peers_are_only_users_who_wrote_to_each_other() {
        let dir = tempfile::tempdir().expect("dir");
        let contacts = EmbeddedContactStore::new(EmbeddedDb::open(dir.path()).expect("db"));
        let uid = |s: &str| UserId::parse(s).expect("uid");
        let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
        // Carol writes to Alice, who never answers: no contact either way.
        contacts.note_sent(&carol, &alice).await.expect("note");
        contacts.note_sent(&alice, &bob).await.expect("note");
        assert!(contacts.peers(&alice).await.expect("peers").is_empty());
        assert!(contacts.peers(&bob).await.expect("peers").is_empty());
        // Bob answers: Alice and Bob are mutual contacts; Carol is still no one's.
        contacts.note_sent(&bob, &alice).await.expect("note");
        assert_eq!(contacts.peers(&alice).await.expect("peers"), ["bob"]);
        assert_eq!(contacts.peers(&bob).await.expect("peers"), ["alice"]);
        assert!(contacts.peers(&carol).await.expect("peers").is_empty());
    }
}
