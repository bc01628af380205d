//! The embedded store: one redb file in the data dir.
//!
//! redb allows one write transaction at a time and each commit waits for fsync, so a naive
//! commit per message would cap throughput at the disk's fsync rate. Instead every write goes
//! to one writer thread that applies all queued writes in one transaction and commits once
//! (group commit). Completions run on that thread, in commit order, which is what lets the
//! embedded inbox publish events in Seq order.

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use redb::{Database, ReadTransaction, TableDefinition, WriteTransaction};
pub use redb::{ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use super::StoreError;

/// Accounts: uid → JSON.
pub const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Revoked token ids → expiry (unix seconds).
pub const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");
/// Last Seq handed out per user.
pub const SEQS: TableDefinition<&str, u64> = TableDefinition::new("seqs");
/// Unconfirmed events: (uid, Seq) → event JSON.
pub const INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
/// Idempotency keys → (SentAt ms, expiry ms).
pub const DEDUPE: TableDefinition<&str, (i64, i64)> = TableDefinition::new("dedupe");

/// Idempotency keys → the receiver's Seq of the first send.
pub const DEDUPE_SEQ: TableDefinition<&str, u64> = TableDefinition::new("dedupe_seq");

/// Claims of group messages' sends (`inbox::claims`) → (state text, expiry ms).
pub const SEND_CLAIMS: TableDefinition<&str, (&str, i64)> = TableDefinition::new("send_claims");
/// Key → (a large body shared by a fan-out's inbox entries, expiry in Unix ms); see
/// `inbox::shared_body`.
pub const SHARED_BODIES: TableDefinition<&str, (&str, i64)> = TableDefinition::new("shared_bodies");

/// Group membership: gid → JSON list of uids.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// Group activity: gid → unix ms of its last use (for dormancy).
pub const GROUP_ACTIVITY: TableDefinition<&str, i64> = TableDefinition::new("group_activity");

/// Contacts (presence audience): `w\0<uid>\0<peer>` (uid wrote to peer), `h\0<uid>\0<peer>`
/// (uid heard from peer) and `g\0<uid>\0<gid>`; `p\0…` keys of older versions are unread.
pub const CONTACTS: TableDefinition<&str, ()> = TableDefinition::new("contacts");

/// Blocks: `<blocker>\0<blocked>`.
pub const BLOCKS: TableDefinition<&str, ()> = TableDefinition::new("blocks");

/// Channels (`channels`): name → settings JSON.
pub const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");

/// Receipt state: `<sender>\0<gid or ->:<MsgID>` → JSON.
pub const RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("receipts");

/// Call log rows: (partition key, sort key) → attributes JSON (see `calllog::table`).
pub const CALLLOG: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("calllog");

/// Call-log write-behind queue: position → record JSON.
pub const CALLLOG_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("calllog_queue");

/// Message lifecycle index: (conversation, MsgID) → (sender, SentAt ms, deleted); see
/// `lifecycle`.
pub const LIFECYCLE_MESSAGES: TableDefinition<(&str, &str), (&str, i64, bool)> =
    TableDefinition::new("lifecycle_messages");
/// When each group member joined: (gid, uid) → Unix ms; see `lifecycle`.
pub const LIFECYCLE_JOINED: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("lifecycle_joined");
/// Attachment records: id → JSON (see `attachments`).
pub const ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attachments");
/// Attachments never sent: (upload time in unix ms, id).
pub const ATTACHMENTS_UNSENT: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("attachments_unsent");
/// Sent attachments: (last send in unix ms, id).
pub const ATTACHMENTS_SENT: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("attachments_sent");
/// The edits of a message and each user's emoji on it, counted against the caps:
/// (conversation, scope, edit MsgID or emoji) → (); see `lifecycle`.
pub const LIFECYCLE_USES: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("lifecycle_uses");
/// Support tickets by gid, as JSON (§10).
pub const SUPPORT_TICKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("support_tickets");
/// Support tickets by state: (state, `Ticket::index_member`) (§10).
pub const SUPPORT_INDEX: TableDefinition<(&str, &str), ()> = TableDefinition::new("support_index");
/// A user's roles, as a JSON array (§10).
pub const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");

/// Webhook endpoints: id → JSON (see `webhooks`).
pub const WEBHOOK_ENDPOINTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("webhook_endpoints");
/// Push subscriptions: (uid, endpoint URL) → JSON.
pub const PUSH_SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("push_subscriptions");
/// Webhook queue jobs: id → (due unix ms, JSON).
pub const WEBHOOK_JOBS: TableDefinition<&str, (i64, &[u8])> = TableDefinition::new("webhook_jobs");
/// Webhook queue order: (due unix ms, id) → ().
pub const WEBHOOK_DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("webhook_due");

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type WriteOp = Box<dyn FnOnce(&WriteTransaction) -> (bool, Completion) + Send>;

/// Handle to the embedded database; cheap to clone. [`EmbeddedDb::close`] releases the file
/// (and its lock) even while clones are still around, so a node can be restarted in-process.
#[derive(Clone)]
pub struct EmbeddedDb {
    db: Arc<RwLock<Option<Database>>>,
    writes: std::sync::mpsc::Sender<WriteOp>,
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store is closed".into())
}

impl EmbeddedDb {
    /// Opens (or creates) `webchat.redb` in `dir` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        super::create_private_dir(dir)?;
        let path = dir.join("webchat.redb");
        // Created owner-only before redb opens it: it holds password hashes and messages.
        super::private_file(&path)?;
        let db = Database::create(&path)
            .map_err(|e| StoreError::Internal(format!("open {}: {e}", path.display())))?;
        // Create every table up front so read transactions never meet a missing table.
        {
            let txn = db.begin_write().map_err(internal)?;
            txn.open_table(ACCOUNTS).map_err(internal)?;
            txn.open_table(REVOKED).map_err(internal)?;
            txn.open_table(SEQS).map_err(internal)?;
            txn.open_table(INBOX).map_err(internal)?;
            txn.open_table(DEDUPE).map_err(internal)?;
            txn.open_table(DEDUPE_SEQ).map_err(internal)?;
            txn.open_table(SEND_CLAIMS).map_err(internal)?;
            txn.open_table(SHARED_BODIES).map_err(internal)?;
            txn.open_table(GROUPS).map_err(internal)?;
            txn.open_table(RECEIPTS).map_err(internal)?;
            txn.open_table(GROUP_ACTIVITY).map_err(internal)?;
            txn.open_table(CONTACTS).map_err(internal)?;
            txn.open_table(BLOCKS).map_err(internal)?;
            txn.open_table(CHANNELS).map_err(internal)?;
            txn.open_table(CALLLOG).map_err(internal)?;
            txn.open_table(CALLLOG_QUEUE).map_err(internal)?;
            txn.open_table(LIFECYCLE_MESSAGES).map_err(internal)?;
            txn.open_table(LIFECYCLE_JOINED).map_err(internal)?;
            txn.open_table(ATTACHMENTS).map_err(internal)?;
            txn.open_table(ATTACHMENTS_UNSENT).map_err(internal)?;
            txn.open_table(ATTACHMENTS_SENT).map_err(internal)?;
            txn.open_table(LIFECYCLE_USES).map_err(internal)?;
            txn.open_table(SUPPORT_TICKETS).map_err(internal)?;
            txn.open_table(SUPPORT_INDEX).map_err(internal)?;
            txn.open_table(ROLES).map_err(internal)?;
            txn.open_table(WEBHOOK_ENDPOINTS).map_err(internal)?;
            txn.open_table(PUSH_SUBSCRIPTIONS).map_err(internal)?;
            txn.open_table(WEBHOOK_JOBS).map_err(internal)?;
            txn.open_table(WEBHOOK_DUE).map_err(internal)?;
            txn.commit().map_err(internal)?;
        }
        let db = Arc::new(RwLock::new(Some(db)));
        let (writes, queue) = std::sync::mpsc::channel::<WriteOp>();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("webchat-embedded-writer".into())
            .spawn(move || run_writer(&writer_db, &queue))
            .map_err(|e| StoreError::Internal(format!("spawn writer: {e}")))?;
        Ok(Self { db, writes })
    }

    /// Runs `apply` inside the next group-committed write transaction and returns its result
    /// once the commit is durable. `after_commit` runs on the writer thread right after the
    /// commit, in commit order, with `apply`'s result.
    pub async fn write<T, F, A>(&self, apply: F, after_commit: A) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let op: WriteOp = Box::new(move |txn| {
            let applied = apply(txn);
            let ok = applied.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let outcome = commit.and(applied);
                if let Ok(value) = &outcome {
                    after_commit(value);
                }
                let _ = done.send(outcome);
            });
            (ok, completion)
        });
        self.writes
            .send(op)
            .map_err(|_| StoreError::Internal("embedded writer stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Internal("embedded writer dropped a write".into()))?
    }

    /// Runs a read-only closure on a snapshot, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let guard = db.read().map_err(internal)?;
            let txn = guard
                .as_ref()
                .ok_or_else(closed)?
                .begin_read()
                .map_err(internal)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task: {e}")))?
    }

    /// Closes the database: pending and later operations fail with `Unavailable`.
    pub fn close(&self) {
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
    }
}

fn run_writer(db: &RwLock<Option<Database>>, queue: &std::sync::mpsc::Receiver<WriteOp>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let Ok(guard) = db.read() else { return };
        let Some(open) = guard.as_ref() else {
            continue; // closed: dropping the ops fails their callers
        };
        let txn = match open.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                tracing::error!(error = %e, "embedded store: begin write failed");
                continue; // dropping the ops fails their callers with an error
            }
        };
        let mut completions = Vec::with_capacity(batch.len());
        let mut all_ok = true;
        for op in batch {
            let (ok, completion) = op(&txn);
            all_ok &= ok;
            completions.push(completion);
        }
        // One failed op aborts the batch: a half-applied op must never be committed.
        let commit = if all_ok {
            txn.commit().map_err(internal)
        } else {
            let _ = txn.abort();
            Err(StoreError::Internal("write batch aborted".into()))
        };
        for completion in completions {
            completion(commit.clone());
        }
    }
}

/// Maps any redb error to [`StoreError::Internal`].
pub fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}
