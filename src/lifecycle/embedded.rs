//! The message index in the embedded store: (conversation, MsgID) → (sender, SentAt,
//! deleted), and (gid, uid) → when the member joined. Kept as long as the data dir: one
//! node's disk, no expiry needed.

use async_trait::async_trait;

use super::{IndexedMessage, MessageIndex};
use crate::storage::{
    embedded::{
        internal, EmbeddedDb, ReadableTable, LIFECYCLE_JOINED, LIFECYCLE_MESSAGES, LIFECYCLE_USES,
    },
    StoreError,
};

/// [`MessageIndex`] over the embedded database.
pub struct EmbeddedMessageIndex {
    db: EmbeddedDb,
}

impl EmbeddedMessageIndex {
    /// An index over `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl MessageIndex for EmbeddedMessageIndex {
    async fn note_message(
        &self,
        conv: &str,
        msg_id: &str,
        sender: &str,
        sent_at: i64,
    ) -> Result<(), StoreError> {
        let (conv, msg_id, sender) = (conv.to_owned(), msg_id.to_owned(), sender.to_owned());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(LIFECYCLE_MESSAGES).map_err(internal)?;
                    let key = (conv.as_str(), msg_id.as_str());
                    if table.get(key).map_err(internal)?.is_none() {
                        table
                            .insert(key, (sender.as_str(), sent_at, false))
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn lookup(&self, conv: &str, msg_id: &str) -> Result<Option<IndexedMessage>, StoreError> {
        let (conv, msg_id) = (conv.to_owned(), msg_id.to_owned());
        self.db
            .read(move |txn| {
                let table = txn.open_table(LIFECYCLE_MESSAGES).map_err(internal)?;
                Ok(table
                    .get((conv.as_str(), msg_id.as_str()))
                    .map_err(internal)?
                    .map(|v| {
                        let (sender, sent_at, deleted) = v.value();
                        IndexedMessage {
                            sender: sender.to_owned(),
                            sent_at,
                            deleted,
                        }
                    }))
            })
            .await
    }

    async fn mark_deleted(
        &self,
        conv: &str,
        msg_id: &str,
        message: &IndexedMessage,
    ) -> Result<(), StoreError> {
        let (conv, msg_id, message) = (conv.to_owned(), msg_id.to_owned(), message.clone());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(LIFECYCLE_MESSAGES).map_err(internal)?;
                    table
                        .insert(
                            (conv.as_str(), msg_id.as_str()),
                            (message.sender.as_str(), message.sent_at, true),
                        )
                        .map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn claim(
        &self,
        conv: &str,
        scope: &str,
        member: &str,
        cap: usize,
    ) -> Result<bool, StoreError> {
        let (conv, scope, member) = (conv.to_owned(), scope.to_owned(), member.to_owned());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(LIFECYCLE_USES).map_err(internal)?;
                    let key = (conv.as_str(), scope.as_str(), member.as_str());
                    if table.get(key).map_err(internal)?.is_some() {
                        return Ok(true);
                    }
                    let mut counted = 0;
                    for entry in table
                        .range((conv.as_str(), scope.as_str(), "")..)
                        .map_err(internal)?
                    {
                        let (k, _) = entry.map_err(internal)?;
                        let (c, s, _) = k.value();
                        if c != conv || s != scope {
                            break;
                        }
                        counted += 1;
                        if counted >= cap {
                            return Ok(false);
                        }
                    }
                    table.insert(key, ()).map_err(internal)?;
                    Ok(true)
                },
                |_| {},
            )
            .await
    }

    async fn note_joined(&self, gid: &str, members: &[String], at: i64) -> Result<(), StoreError> {
        let (gid, members) = (gid.to_owned(), members.to_vec());
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(LIFECYCLE_JOINED).map_err(internal)?;
                    for member in &members {
                        table
                            .insert((gid.as_str(), member.as_str()), at)
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn joined_at(
        &self,
        gid: &str,
        members: &[String],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let (gid, members) = (gid.to_owned(), members.to_vec());
        self.db
            .read(move |txn| {
                let table = txn.open_table(LIFECYCLE_JOINED).map_err(internal)?;
                members
                    .iter()
                    .map(|m| {
                        Ok(table
                            .get((gid.as_str(), m.as_str()))
                            .map_err(internal)?
                            .map(|v| v.value()))
                    })
                    .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_note_stands_and_a_delete_sticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = EmbeddedMessageIndex::new(EmbeddedDb::open(dir.path()).expect("db"));
        assert_eq!(index.lookup("p:a:b", "m1").await.expect("lookup"), None);
        index
            .note_message("p:a:b", "m1", "a", 10)
            .await
            .expect("note");
        index
            .note_message("p:a:b", "m1", "b", 20)
            .await
            .expect("note");
        let found = index
            .lookup("p:a:b", "m1")
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(
            (found.sender.as_str(), found.sent_at, found.deleted),
            ("a", 10, false)
        );
        assert_eq!(
            index.lookup("p:a:c", "m1").await.expect("lookup"),
            None,
            "other conversation"
        );
        index
            .mark_deleted("p:a:b", "m1", &found)
            .await
            .expect("delete");
        assert!(
            index
                .lookup("p:a:b", "m1")
                .await
                .expect("lookup")
                .expect("found")
                .deleted
        );

        assert_eq!(
            index.joined_at("g:x", &["a".into()]).await.expect("joined"),
            [None]
        );
        index
            .note_joined("g:x", &["a".into(), "b".into()], 5)
            .await
            .expect("join");
        index
            .note_joined("g:x", &["b".into()], 7)
            .await
            .expect("rejoin");
        assert_eq!(
            index
                .joined_at("g:x", &["a".into(), "b".into(), "c".into()])
                .await
                .expect("joined"),
            [Some(5), Some(7), None]
        );
    }
}
