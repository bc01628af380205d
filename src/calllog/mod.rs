//! The call log: every conversation event, kept for history and audit.
//!
//! Chat commands hand a [`LogRecord`] to the [`CallLog`] before the sender's ack; it goes into
//! a durable write-behind queue ([`queue`]), and a drain task ([`drain`]) writes batches to the
//! call-log table (a [`SortedTable`]): DynamoDB, Redis or the embedded store. The REST history routes
//! read the table through [`CallLog`]'s queries.
//!
//! Row layout (partition key / sort key; every write is idempotent):
//! - `c#<conv>` / `t#<SentAt:13>#<EvtType>#<actor>#<MsgID>`: an event of the conversation
//!   (`conv` is `p:<uid>:<uid>` with the uids sorted, or `g:<gid>`);
//! - `c#<conv>` / `r#<sender>#<MsgID>#delivery|display`: receipt state of that message
//!   (delivery keeps the first time, display the latest time and its Unread);
//! - `u#<uid>` / `t#<SentAt:13>#<conv>#…`: a copy of each event the user sent or received
//!   1:1, for the admin call log by uid (group traffic a user received is under the gid);
//! - `v#<uid>` / `p:…`: the user's 1:1 conversations with their latest event;
//! - `v#<uid>` / `g:<gid>`: the user's groups (written by create / refer / depart), so the
//!   conversation list needs nothing but the call log;
//! - `v#<uid>` / `read#<conv>`: when the user last displayed something there (unread counts).

pub mod drain;
mod lifecycle;
pub mod queue;
pub mod retention;

use std::sync::Arc;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::storage::table::RowsToWrite;
use crate::storage::table::{Order, Row, SkRange, SortedTable, SEQ_FROM_APPEND};
use crate::{
    domain::{ChatError, ErrorCode, GroupId, UserId},
    groups::GroupStore,
    storage::StoreError,
};
use queue::LogQueue;

/// A conversation: two users, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Conversation {
    /// 1:1 with `peer` (seen from the actor).
    Direct {
        /// The other user.
        peer: String,
    },
    /// A group.
    Group {
        /// The group id.
        gid: String,
    },
}

/// One thing that happened in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// A message, or a group's create / refer / depart.
    Event {
        /// `message`, `create`, `refer` or `depart`.
        evt_type: String,
        /// Who sent or acted.
        actor: String,
        /// Where.
        conversation: Conversation,
        /// The event's MsgID.
        msg_id: String,
        /// Text, or the JSON uid list of a membership change.
        body: String,
        /// Unix ms when the server accepted it.
        sent_at: i64,
        /// The recipient's Seq (1:1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// `message`: the attachment ids it carried (§12).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    /// A reply, edit, delete, react or unreact (§11): an event about the message `reference`.
    Lifecycle {
        /// `message` (a reply), `edit`, `delete`, `react` or `unreact`.
        evt_type: String,
        /// Who acted.
        actor: String,
        /// Where.
        conversation: Conversation,
        /// The event's own MsgID.
        msg_id: String,
        /// The MsgID of the message it is about.
        reference: String,
        /// Reply / edit: the text; react / unreact: the emoji; delete: "".
        body: String,
        /// Unix ms when the server accepted it.
        sent_at: i64,
        /// The recipient's Seq (1:1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A `delivery` or `display` receipt.
    Receipt {
        /// `delivery` or `display`.
        receipt: String,
        /// Who received or displayed the message.
        reader: String,
        /// Who sent the message.
        sender: String,
        /// The message's group, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The message's MsgID.
        msg_id: String,
        /// Unix ms of the receipt.
        at: i64,
        /// Members who have not displayed the message yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unread: Option<u32>,
    },
}

/// The key of a conversation in the table.
fn conv_key(actor: &str, conversation: &Conversation) -> String {
    match conversation {
        Conversation::Direct { peer } => {
            let (a, b) = if actor <= peer.as_str() {
                (actor, peer.as_str())
            } else {
                (peer.as_str(), actor)
            };
            format!("p:{a}:{b}")
        }
        Conversation::Group { gid } => format!("g:{gid}"),
    }
}

fn event_sk(sent_at: i64, evt_type: &str, actor: &str, msg_id: &str) -> String {
    format!("t#{:013}#{evt_type}#{actor}#{msg_id}", sent_at.max(0))
}

fn receipt_sk(sender: &str, msg_id: &str, receipt: &str) -> String {
    format!("r#{sender}#{msg_id}#{receipt}")
}

/// Turns records into table rows (pure: the drain writes them).
pub fn rows_for(records: &[LogRecord]) -> RowsToWrite {
    rows_of(records, false)
}

/// The rows of `record` for an inbox append that writes them in its own store call (see
/// [`CallLog::entry_for_append`]): its event rows take the Seq the append assigns
/// ([`SEQ_FROM_APPEND`]).
fn rows_for_append(record: &LogRecord) -> RowsToWrite {
    rows_of(std::slice::from_ref(record), true)
}

/// [`rows_for`]; with `seq_from_append`, an event without a Seq gets the append's.
fn rows_of(records: &[LogRecord], seq_from_append: bool) -> RowsToWrite {
    let mut out = RowsToWrite::default();
    for record in records {
        match record {
            LogRecord::Event {
                evt_type,
                actor,
                conversation,
                msg_id,
                body,
                sent_at,
                seq,
                attachments,
            } => event_rows(
                &mut out,
                &EventFields {
                    evt_type,
                    actor,
                    conversation,
                    msg_id,
                    body,
                    sent_at: *sent_at,
                    seq: *seq,
                    seq_from_append,
                    reference: None,
                    attachments,
                },
            ),
            LogRecord::Lifecycle {
                evt_type,
                actor,
                conversation,
                msg_id,
                reference,
                body,
                sent_at,
                seq,
            } => {
                let fields = EventFields {
                    evt_type,
                    actor,
                    conversation,
                    msg_id,
                    body,
                    sent_at: *sent_at,
                    seq: *seq,
                    seq_from_append,
                    reference: Some(reference),
                    attachments: &[],
                };
                event_rows(&mut out, &fields);
                lifecycle::rows(&mut out, &conv_key(actor, conversation), &fields);
            }
            LogRecord::Receipt {
                receipt,
                reader,
                sender,
                group,
                msg_id,
                at,
                unread,
            } => {
                let conversation = match group {
                    Some(gid) => Conversation::Group { gid: gid.clone() },
                    None => Conversation::Direct {
                        peer: sender.clone(),
                    },
                };
                let conv = conv_key(reader, &conversation);
                let mut row = Row::new(format!("c#{conv}"), receipt_sk(sender, msg_id, receipt))
                    .with("at", *at)
                    .with("reader", reader.as_str());
                if let Some(unread) = unread {
                    row = row.with("unread", *unread);
                }
                if receipt == "display" {
                    out.versioned.push((row, "at"));
                    let marker =
                        Row::new(format!("v#{reader}"), format!("read#{conv}")).with("at", *at);
                    out.versioned.push((marker, "at"));
                } else {
                    // The first delivery is the one worth knowing: a smaller time wins.
                    out.versioned.push((row.with("first", -*at), "first"));
                }
            }
        }
    }
    out
}

/// The fields of an event record (a plain event or a lifecycle one).
pub(crate) struct EventFields<'a> {
    pub(crate) evt_type: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) conversation: &'a Conversation,
    pub(crate) msg_id: &'a str,
    pub(crate) body: &'a str,
    pub(crate) sent_at: i64,
    pub(crate) seq: Option<u64>,
    /// Without `seq`: the event's rows take the Seq of the append that writes them.
    pub(crate) seq_from_append: bool,
    /// Lifecycle events and replies: the message it is about.
    pub(crate) reference: Option<&'a str>,
    /// A message's attachment ids (§12).
    pub(crate) attachments: &'a [String],
}

/// The rows of one event: the conversation's row, the actors' copies, the 1:1 summaries,
/// and for a message the row that finds it by MsgID (`calllog::lifecycle`).
fn event_rows(out: &mut RowsToWrite, fields: &EventFields<'_>) {
    let &EventFields {
        evt_type,
        actor,
        conversation,
        msg_id,
        body,
        sent_at,
        seq,
        seq_from_append,
        reference,
        attachments,
    } = fields;
    let conv = conv_key(actor, conversation);
    let sk = event_sk(sent_at, evt_type, actor, msg_id);
    let (to, group) = match conversation {
        Conversation::Direct { peer } => (peer.clone(), None),
        Conversation::Group { gid } => (gid.clone(), Some(gid.clone())),
    };
    let mut row = Row::new(format!("c#{conv}"), &sk)
        .with("e", evt_type)
        .with("a", actor)
        .with("to", to.as_str())
        .with("m", msg_id)
        .with("b", body)
        .with("at", sent_at);
    match seq {
        Some(seq) => row = row.with("seq", seq),
        None if seq_from_append => row = row.with("seq", SEQ_FROM_APPEND),
        None => {}
    }
    if let Some(reference) = reference {
        row = row.with("ref", reference);
    }
    if !attachments.is_empty() {
        row = row.with("att", attachments.to_vec());
    }
    if evt_type == "message" {
        // First writer wins, as in the index (SET NX): a later message reusing the MsgID
        // (another sender's) must not take the message over once the index forgets it.
        out.versioned.push((
            lifecycle::message_row(&conv, msg_id, actor, sent_at, &sk).with("first", -sent_at),
            "first",
        ));
    }
    if let Some(gid) = &group {
        row = row.with("g", gid.as_str());
        out.versioned
            .extend(membership_rows(evt_type, gid, body, sent_at));
    }
    let index_sk = format!("t#{:013}#{conv}#{}", sent_at.max(0), &sk[16..]);
    let indexed = |uid: &str| {
        let mut copy = Row::new(format!("u#{uid}"), &index_sk);
        copy.attrs = row.attrs.clone();
        copy.with("c", conv.as_str()).with("s", sk.as_str())
    };
    out.plain.push(indexed(actor));
    if group.is_none() && to != actor {
        out.plain.push(indexed(&to));
        // A conversation list shows the latest message, not the latest reaction or edit.
        if evt_type == "message" || reference.is_none() {
            for (me, other) in [(actor, to.as_str()), (to.as_str(), actor)] {
                let mut summary = Row::new(format!("v#{me}"), &conv);
                summary.attrs = row.attrs.clone();
                out.versioned.push((summary.with("with", other), "at"));
            }
        }
    }
    out.plain.push(row);
}

/// The `v#<uid>` / `g:<gid>` rows a membership change makes (none for other events).
fn membership_rows(evt_type: &str, gid: &str, body: &str, at: i64) -> Vec<(Row, &'static str)> {
    let member = match evt_type {
        "create" | "refer" => true,
        "depart" => false,
        _ => return Vec::new(),
    };
    let uids: Vec<String> = serde_json::from_str(body).unwrap_or_default();
    uids.into_iter()
        .map(|uid| {
            let row = Row::new(format!("v#{uid}"), format!("g:{gid}"))
                .with("at", at)
                .with("member", member);
            (row, "at")
        })
        .collect()
}

/// One event as the REST API shows it (the contract's call-log item).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedEvent {
    /// Message id.
    #[serde(rename = "MsgID")]
    pub msg_id: String,
    /// `message`, `create`, `refer`, `depart`.
    #[serde(rename = "EvtType")]
    pub evt_type: String,
    /// 1:1: the sender. Group: the gid.
    #[serde(rename = "From")]
    pub from: String,
    /// Group: the acting uid. 1:1: "".
    #[serde(rename = "Originated")]
    pub originated: String,
    /// 1:1: the recipient. Group: the gid.
    #[serde(rename = "To")]
    pub to: String,
    /// Text or JSON uid list.
    #[serde(rename = "Body")]
    pub body: String,
    /// Unix ms when accepted.
    #[serde(rename = "SentAt")]
    pub sent_at: i64,
    /// The recipient's Seq (1:1).
    #[serde(rename = "Seq", skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Unix ms of the first delivery receipt.
    #[serde(rename = "DeliveredAt")]
    pub delivered_at: Option<i64>,
    /// Unix ms of the latest display receipt.
    #[serde(rename = "DisplayedAt")]
    pub displayed_at: Option<i64>,
    /// Members who had not displayed it at the latest receipt.
    #[serde(rename = "Unread", skip_serializing_if = "Option::is_none")]
    pub unread: Option<u32>,
    /// A reply or lifecycle event: the MsgID of the message it is about (§11).
    #[serde(rename = "Ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// History: when the text shown was last edited (unix ms).
    #[serde(rename = "EditedAt", skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// History: the sender deleted the message (its Body is then empty).
    #[serde(rename = "Deleted", skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// History, messages: emoji → who reacted with it, in the order they did.
    #[serde(rename = "Reactions", skip_serializing_if = "Option::is_none")]
    pub reactions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// The attachment ids a `message` carried (§12); absent when none.
    #[serde(rename = "Attachments", skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

/// One earlier version of an edited message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageVersion {
    /// The MsgID of the event that carried this text: the message's own, or an edit's.
    #[serde(rename = "MsgID")]
    pub msg_id: String,
    /// The text then.
    #[serde(rename = "Body")]
    pub body: String,
    /// Unix ms when this text was sent.
    #[serde(rename = "SentAt")]
    pub sent_at: i64,
}

/// One row of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    /// The peer's uid or the gid (what `/conversations/{id}/messages` takes).
    pub id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// The latest event, if any.
    pub last: Option<LoggedEvent>,
    /// Messages from others after the user's last display there (at most 100 counted).
    pub unread: u32,
    /// Unix ms of the latest event (0 for a group without any yet).
    pub updated_at: i64,
}

/// A page of results and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// This page.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    pub next: Option<String>,
}

/// Whose call log an admin reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSubject {
    /// Everything a user sent, and the 1:1 traffic they received.
    User(UserId),
    /// Everything in a group.
    Group(GroupId),
}

/// Unread counts stop here (a badge shows "99+").
const UNREAD_CAP: usize = 100;
/// A user's conversation list is read whole (then sorted); this bounds it.
const MAX_CONVERSATIONS: usize = 5_000;

/// Records events (through the write-behind queue) and answers history queries.
#[derive(Clone)]
pub struct CallLog {
    queue: Option<Arc<dyn LogQueue>>,
    table: Arc<dyn SortedTable>,
    groups: Arc<dyn GroupStore>,
}

impl CallLog {
    /// A call log over `table`; `queue` is `None` when logging is switched off.
    pub fn new(
        queue: Option<Arc<dyn LogQueue>>,
        table: Arc<dyn SortedTable>,
        groups: Arc<dyn GroupStore>,
    ) -> Self {
        Self {
            queue,
            table,
            groups,
        }
    }

    /// Queues `record` durably; the caller acks its sender only after this succeeded.
    pub async fn record(&self, record: LogRecord) -> Result<(), StoreError> {
        match &self.queue {
            Some(queue) => queue.enqueue(std::slice::from_ref(&record)).await,
            None => Ok(()),
        }
    }

    /// `record` as an entry an inbox append may write in the same step (see
    /// `inbox::LogEntry`): its table rows where the table is in the inbox's own Redis, else
    /// its queue entry; `None` when logging is off.
    pub fn entry_for_append(
        &self,
        record: &LogRecord,
    ) -> Result<Option<crate::inbox::LogEntry>, StoreError> {
        if self.queue.is_none() {
            return Ok(None);
        }
        if self.table.carries_writes() {
            if let Some(rows) = self.table.carried(&rows_for_append(record))? {
                return Ok(Some(crate::inbox::LogEntry::Rows(Arc::new(rows))));
            }
        }
        queue::entry_for_append(record).map(Some)
    }

    /// Records waiting to be written to the table (0 when logging is off).
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        match &self.queue {
            Some(queue) => queue.backlog().await,
            None => Ok(0),
        }
    }

    /// The table (for the drain and `/health`).
    pub fn table(&self) -> &Arc<dyn SortedTable> {
        &self.table
    }

    /// `user`'s conversations, newest first.
    pub async fn conversations(
        &self,
        user: &UserId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>, ChatError> {
        let after = cursor
            .map(|c| decode_cursor(c, "conversations"))
            .transpose()?;
        let own = format!("v#{user}");
        let (direct, markers, memberships) = tokio::try_join!(
            self.table.query(
                &own,
                SkRange::prefix("p:"),
                Order::Ascending,
                MAX_CONVERSATIONS
            ),
            self.table.query(
                &own,
                SkRange::prefix("read#"),
                Order::Ascending,
                MAX_CONVERSATIONS
            ),
            self.table.query(
                &own,
                SkRange::prefix("g:"),
                Order::Ascending,
                MAX_CONVERSATIONS
            ),
        )?;
        let gids: Vec<String> = memberships
            .iter()
            .filter(|r| r.attrs.get("member").and_then(Value::as_bool) == Some(true))
            .filter_map(|r| r.sk.strip_prefix("g:").map(str::to_owned))
            .collect();
        let read_at = |conv: &str| {
            markers
                .iter()
                .find(|m| m.sk.strip_prefix("read#") == Some(conv))
                .and_then(|m| m.int("at"))
                .unwrap_or(0)
        };
        let mut rows: Vec<(String, &'static str, Option<Row>, String)> = direct
            .into_iter()
            .map(|row| {
                let conv = row.sk.clone();
                (row.str("with").to_owned(), "direct", Some(row), conv)
            })
            .collect();
        let group_lasts = join_all(gids.iter().map(|gid| {
            let pk = format!("c#g:{gid}");
            async move {
                self.table
                    .query(&pk, SkRange::prefix("t#"), Order::Descending, 1)
                    .await
            }
        }))
        .await;
        for (gid, last) in gids.iter().zip(group_lasts) {
            rows.push((gid.clone(), "group", last?.pop(), format!("g:{gid}")));
        }
        // (position, summary without `last`, conv, last event row)
        let mut summaries: Vec<(String, ConversationSummary, String, Option<Row>)> = rows
            .into_iter()
            .map(|(id, kind, last, conv)| {
                let updated_at = last.as_ref().and_then(|r| r.int("at")).unwrap_or(0);
                let summary = ConversationSummary {
                    id: id.clone(),
                    kind,
                    last: None,
                    unread: 0,
                    updated_at,
                };
                (format!("{updated_at:013}#{id}"), summary, conv, last)
            })
            .collect();
        summaries.sort_by(|a, b| b.0.cmp(&a.0));
        if let Some(after) = &after {
            summaries.retain(|(position, ..)| position < after);
        }
        let more = summaries.len() > limit;
        summaries.truncate(limit);
        // The receipt state of each last message, in one read.
        let receipt_keys: Vec<(String, String)> = summaries
            .iter()
            .filter_map(|(_, _, conv, last)| Some((conv, last.as_ref()?)))
            .filter(|(_, last)| last.str("e") == "message")
            .flat_map(|(conv, last)| {
                ["delivery", "display"].map(|kind| {
                    (
                        format!("c#{conv}"),
                        receipt_sk(last.str("a"), last.str("m"), kind),
                    )
                })
            })
            .collect();
        let receipts = if receipt_keys.is_empty() {
            Vec::new()
        } else {
            self.table.get_rows(receipt_keys).await?
        };
        let unread = join_all(summaries.iter().map(|(_, s, conv, _)| {
            self.unread_in(conv, user.as_str(), read_at(conv), s.updated_at)
        }))
        .await;
        let next = if more {
            summaries
                .last()
                .map(|(position, ..)| encode_cursor("conversations", position))
        } else {
            None
        };
        let mut items = Vec::with_capacity(summaries.len());
        let mut pks = Vec::with_capacity(summaries.len());
        for ((_, mut summary, conv, last), unread) in summaries.into_iter().zip(unread) {
            summary.unread = unread?;
            summary.last = last.map(|row| {
                let own: Vec<Row> = receipts
                    .iter()
                    .filter(|r| r.pk.strip_prefix("c#") == Some(conv.as_str()))
                    .cloned()
                    .collect();
                logged_event(&row, &own)
            });
            pks.push(format!("c#{conv}"));
            items.push(summary);
        }
        // A last message shows as history does: its latest text, or nothing once deleted.
        let lasts: Vec<(&str, &mut LoggedEvent)> = pks
            .iter()
            .zip(items.iter_mut())
            .filter_map(|(pk, summary)| Some((pk.as_str(), summary.last.as_mut()?)))
            .collect();
        self.apply_lifecycle(lasts, 0).await?;
        Ok(Page { items, next })
    }

    async fn unread_in(
        &self,
        conv: &str,
        user: &str,
        read_at: i64,
        updated_at: i64,
    ) -> Result<u32, StoreError> {
        if updated_at <= read_at {
            return Ok(0);
        }
        let range = SkRange {
            after: Some(format!("t#{:013}~", read_at.max(0))),
            before: Some("t#\u{7f}".into()),
        };
        let rows = self
            .table
            .query(&format!("c#{conv}"), range, Order::Descending, UNREAD_CAP)
            .await?;
        let count = rows
            .iter()
            .filter(|r| r.str("e") == "message" && r.str("a") != user)
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// The call-log key of `user`'s conversation with `with` (a uid or a gid): groups are
    /// for members only (`not_found`, `forbidden`).
    async fn conversation_of(&self, user: &UserId, with: &str) -> Result<String, ChatError> {
        if with.starts_with("group_") {
            let gid = GroupId::parse(with)?;
            let members =
                self.groups.members(&gid).await?.ok_or_else(|| {
                    ChatError::new(ErrorCode::NotFound, format!("no group {gid}"))
                })?;
            if !members.iter().any(|m| m == user.as_str()) {
                return Err(ChatError::new(
                    ErrorCode::Forbidden,
                    format!("not a member of {gid}"),
                ));
            }
            Ok(format!("g:{gid}"))
        } else {
            let peer = UserId::parse(with)?;
            Ok(conv_key(
                user.as_str(),
                &Conversation::Direct {
                    peer: peer.to_string(),
                },
            ))
        }
    }

    /// History of `user`'s conversation with `with` (a uid or a gid), newest first, with
    /// receipt states. Groups: members only. Messages show their latest text, `Deleted`, and
    /// their reactions when sent at or after `reactions_since` (unix ms: when the user
    /// joined the group); edits, deletes and reactions are not rows of their own.
    pub async fn messages(
        &self,
        user: &UserId,
        with: &str,
        before: Option<i64>,
        cursor: Option<&str>,
        limit: usize,
        reactions_since: i64,
    ) -> Result<Page<LoggedEvent>, ChatError> {
        let conv = self.conversation_of(user, with).await?;
        let scope = format!("messages:{conv}");
        let upper = match (cursor, before) {
            (Some(c), _) => decode_cursor(c, &scope)?,
            (None, Some(before)) => format!("t#{:013}", before.max(0)),
            (None, None) => "t#\u{7f}".to_owned(),
        };
        let pk = format!("c#{conv}");
        let (rows, next) = self.history_rows(&pk, upper, limit).await?;
        let receipts = self.receipts_of(&rows).await?;
        let mut items: Vec<LoggedEvent> = rows.iter().map(|r| logged_event(r, &receipts)).collect();
        let with_pk = items.iter_mut().map(|item| (pk.as_str(), item)).collect();
        self.apply_lifecycle(with_pk, reactions_since).await?;
        Ok(Page {
            items,
            next: next.map(|position| encode_cursor(&scope, &position)),
        })
    }

    /// Up to `limit` history rows of `pk` below `upper`, newest first, without lifecycle
    /// events, and the position to go on from (`None`: the end). Reads on past a run of
    /// lifecycle rows, a bounded number of reads per page.
    async fn history_rows(
        &self,
        pk: &str,
        mut upper: String,
        limit: usize,
    ) -> Result<(Vec<Row>, Option<String>), StoreError> {
        const MAX_READS: usize = 20;
        let mut kept = Vec::with_capacity(limit + 1);
        for _ in 0..MAX_READS {
            let want = limit + 1;
            let range = SkRange {
                after: Some("t#".into()),
                before: Some(upper.clone()),
            };
            let rows = self.table.query(pk, range, Order::Descending, want).await?;
            let exhausted = rows.len() < want;
            if let Some(last) = rows.last() {
                upper = last.sk.clone();
            }
            kept.extend(rows.into_iter().filter(|r| !lifecycle::is_lifecycle_row(r)));
            if kept.len() > limit {
                kept.truncate(limit);
                let next = kept.last().map(|r| r.sk.clone());
                return Ok((kept, next));
            }
            if exhausted {
                return Ok((kept, None));
            }
        }
        // Many lifecycle rows in a row: a short page, going on after what was read.
        Ok((kept, Some(upper)))
    }

    /// Shows each message of `items` (each with its conversation partition) as its
    /// lifecycle left it: one read for the marks of all, then one query per marked message.
    async fn apply_lifecycle(
        &self,
        mut items: Vec<(&str, &mut LoggedEvent)>,
        reactions_since: i64,
    ) -> Result<(), StoreError> {
        items.retain(|(_, item)| item.evt_type == "message");
        let keys: Vec<(String, String)> = items
            .iter()
            .map(|(pk, item)| lifecycle::touched_key(pk, &item.msg_id))
            .collect();
        let touched = if keys.is_empty() {
            Vec::new()
        } else {
            self.table.get_rows(keys).await?
        };
        let reads = items.iter().map(|(pk, item)| {
            let read = lifecycle::was_touched(&touched, pk, &item.msg_id);
            async move {
                if !read {
                    return Ok(Vec::new());
                }
                let (range, order, limit) = lifecycle::rows_query(&item.msg_id);
                self.table.query(pk, range, order, limit).await
            }
        });
        let rows = join_all(reads).await;
        for ((_, item), rows) in items.into_iter().zip(rows) {
            let show_reactions = item.sent_at >= reactions_since;
            lifecycle::apply(item, &rows?, show_reactions);
        }
        Ok(())
    }

    /// The message `msg_id` of conversation `conv` as the call log knows it (for a `Ref` the
    /// lifecycle index no longer holds).
    pub async fn indexed_message(
        &self,
        conv: &str,
        msg_id: &str,
    ) -> Result<Option<crate::lifecycle::IndexedMessage>, StoreError> {
        let rows = self
            .table
            .get_rows(lifecycle::index_keys(conv, msg_id))
            .await?;
        Ok(lifecycle::indexed(&rows, msg_id))
    }

    /// The earlier versions of `user`'s message `msg_id` in the conversation with `with`,
    /// oldest first (the current text is in the history): `not_found` for no such message
    /// or a deleted one.
    pub async fn versions(
        &self,
        user: &UserId,
        with: &str,
        msg_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<MessageVersion>, ChatError> {
        let conv = self.conversation_of(user, with).await?;
        let missing = || ChatError::new(ErrorCode::NotFound, format!("no message {msg_id}"));
        let found = self
            .table
            .get_rows(lifecycle::index_keys(&conv, msg_id))
            .await?;
        let message = lifecycle::indexed(&found, msg_id).ok_or_else(missing)?;
        if message.deleted {
            return Err(missing());
        }
        let pk = format!("c#{conv}");
        let original_sk = found
            .iter()
            .find(|r| r.sk == format!("k#{msg_id}"))
            .map(|r| r.str("s").to_owned())
            .unwrap_or_default();
        let (range, order, max) = lifecycle::rows_query(msg_id);
        let (original, rows) = tokio::try_join!(
            self.table.get_rows(vec![(pk.clone(), original_sk)]),
            self.table.query(&pk, range, order, max)
        )?;
        let original = original.into_iter().next().ok_or_else(missing)?;
        let scope = format!("versions:{conv}:{msg_id}");
        let skip = match cursor {
            Some(c) => decode_cursor(c, &scope)?
                .parse::<usize>()
                .map_err(|_| ChatError::bad_request("bad cursor"))?,
            None => 0,
        };
        let versions = lifecycle::earlier_versions(&original, &rows, msg_id);
        let more = versions.len() > skip.saturating_add(limit);
        let items = versions
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|(msg_id, body, sent_at)| MessageVersion {
                msg_id,
                body,
                sent_at,
            })
            .collect();
        Ok(Page {
            items,
            next: more.then(|| encode_cursor(&scope, &(skip + limit).to_string())),
        })
    }

    /// The admin call log of a user or a group, oldest first, `since` ≤ SentAt < `until`.
    pub async fn admin(
        &self,
        subject: &AdminSubject,
        since: Option<i64>,
        until: Option<i64>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<LoggedEvent>, ChatError> {
        let (pk, scope) = match subject {
            AdminSubject::User(uid) => (format!("u#{uid}"), format!("admin:u:{uid}")),
            AdminSubject::Group(gid) => (format!("c#g:{gid}"), format!("admin:g:{gid}")),
        };
        let lower = match (cursor, since) {
            (Some(c), _) => decode_cursor(c, &scope)?,
            // Just below every key of that millisecond.
            (None, Some(since)) => format!("t#{:013}", since.max(0)),
            (None, None) => "t#".to_owned(),
        };
        let upper = match until {
            Some(until) => format!("t#{:013}", until.max(0)),
            None => "t#\u{7f}".to_owned(),
        };
        let range = SkRange {
            after: Some(lower),
            before: Some(upper),
        };
        self.page_of_events(&pk, range, Order::Ascending, limit, &scope)
            .await
    }

    async fn page_of_events(
        &self,
        pk: &str,
        range: SkRange,
        order: Order,
        limit: usize,
        scope: &str,
    ) -> Result<Page<LoggedEvent>, ChatError> {
        let mut rows = self.table.query(pk, range, order, limit + 1).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let receipts = self.receipts_of(&rows).await?;
        let next = if more {
            rows.last().map(|r| encode_cursor(scope, &r.sk))
        } else {
            None
        };
        let items = rows.iter().map(|r| logged_event(r, &receipts)).collect();
        Ok(Page { items, next })
    }

    /// The receipt rows of the messages among `rows`.
    async fn receipts_of(&self, rows: &[Row]) -> Result<Vec<Row>, StoreError> {
        let keys: Vec<(String, String)> = rows
            .iter()
            .filter(|r| r.str("e") == "message")
            .flat_map(|r| {
                let conv_pk = match r.str("c") {
                    "" => r.pk.clone(),
                    conv => format!("c#{conv}"),
                };
                ["delivery", "display"]
                    .map(|kind| (conv_pk.clone(), receipt_sk(r.str("a"), r.str("m"), kind)))
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.table.get_rows(keys).await
    }
}

/// A stored event row (plus the receipt rows at hand) as the API shows it.
fn logged_event(row: &Row, receipts: &[Row]) -> LoggedEvent {
    let actor = row.str("a");
    let msg_id = row.str("m");
    let group = row.str("g");
    let receipt = |kind: &str| {
        let sk = receipt_sk(actor, msg_id, kind);
        receipts.iter().find(|r| r.sk == sk)
    };
    let delivered = receipt("delivery");
    let displayed = receipt("display");
    let (from, originated) = if group.is_empty() {
        (actor.to_owned(), String::new())
    } else {
        (group.to_owned(), actor.to_owned())
    };
    LoggedEvent {
        msg_id: msg_id.to_owned(),
        evt_type: row.str("e").to_owned(),
        from,
        originated,
        to: row.str("to").to_owned(),
        body: row.str("b").to_owned(),
        sent_at: row.int("at").unwrap_or(0),
        seq: row.int("seq").and_then(|s| u64::try_from(s).ok()),
        delivered_at: delivered.and_then(|r| r.int("at")),
        displayed_at: displayed.and_then(|r| r.int("at")),
        unread: displayed
            .or(delivered)
            .and_then(|r| r.int("unread"))
            .and_then(|u| u32::try_from(u).ok()),
        reference: Some(row.str("ref").to_owned()).filter(|r| !r.is_empty()),
        edited_at: None,
        deleted: false,
        reactions: None,
        attachments: row
            .attrs
            .get("att")
            .and_then(serde_json::Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Cursors are opaque to clients: base64url of `<scope>\n<position>`. The scope ties a
/// cursor to the query that made it, so one cannot be replayed against another.
fn encode_cursor(scope: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\n{position}"))
}

fn decode_cursor(cursor: &str, scope: &str) -> Result<String, ChatError> {
    let bad = || ChatError::bad_request("bad cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (cursor_scope, position) = text.split_once('\n').ok_or_else(bad)?;
    if cursor_scope != scope || position.is_empty() {
        return Err(bad());
    }
    Ok(position.to_owned())
}

/// The summary of a call-log back-end for `/health`.
pub fn backlog_json(backlog: Result<u64, StoreError>) -> Value {
    match backlog {
        Ok(n) => json!({ "ok": true, "backlog": n }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests;
