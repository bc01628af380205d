//! The call log's rows for message lifecycle (contract §11), and how history reads them.
//!
//! Besides each event's own row (`t#…`, with `ref` naming the message it is about, so the
//! admin call log shows every edit, delete and reaction, and the original text stays in the
//! message's row), a conversation partition `c#<conv>` holds per message:
//! - `k#<MsgID>`: the message's sender, SentAt and event sort key (finds it by MsgID),
//!   versioned so the first (earliest) message with that MsgID keeps it, as in the index;
//! - `j#<MsgID>`: present once any lifecycle event touched it (history looks further only
//!   for those);
//! - `l#<MsgID>\x01e\x01<SentAt:13>\x01<edit MsgID>`: each edit's text, in time order;
//! - `l#<MsgID>\x01d`: the delete;
//! - `l#<MsgID>\x01r\x01<emoji>\x01<uid>`: a user's reaction, `on` true or false, versioned
//!   by time, so the latest react / unreact of that emoji by that user wins.
//!
//! A MsgID never holds a control character, so `\x01` ends it unambiguously in a sort key.
//! Every row is idempotent to write (the call log is written at least once); an edit racing a
//! delete ends deleted whatever the order, as the delete row wins.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{EventFields, LoggedEvent, RowsToWrite};
use crate::{
    lifecycle::IndexedMessage,
    storage::table::{Order, Row, SkRange},
};

/// Most lifecycle rows read for one message (its edits and reactions).
pub const MAX_ROWS_PER_MESSAGE: usize = 10_000;

/// The row that finds message `msg_id` of `conv` by its MsgID.
pub fn message_row(conv: &str, msg_id: &str, sender: &str, sent_at: i64, sk: &str) -> Row {
    Row::new(format!("c#{conv}"), format!("k#{msg_id}"))
        .with("a", sender)
        .with("at", sent_at)
        .with("s", sk)
}

fn touched_sk(msg_id: &str) -> String {
    format!("j#{msg_id}")
}

/// The prefix of every lifecycle row of message `msg_id`.
fn prefix(msg_id: &str) -> String {
    format!("l#{msg_id}\u{1}")
}

fn deleted_sk(msg_id: &str) -> String {
    format!("{}d", prefix(msg_id))
}

/// The rows a lifecycle event adds to conversation `conv` (a reply adds none: it is a
/// message, with its own `k#` row).
pub(crate) fn rows(out: &mut RowsToWrite, conv: &str, fields: &EventFields<'_>) {
    let Some(reference) = fields.reference else {
        return;
    };
    let pk = format!("c#{conv}");
    let at = fields.sent_at;
    let row = match fields.evt_type {
        "edit" => Row::new(
            &pk,
            format!(
                "{}e\u{1}{:013}\u{1}{}",
                prefix(reference),
                at.max(0),
                fields.msg_id
            ),
        )
        .with("b", fields.body)
        .with("m", fields.msg_id),
        "delete" => Row::new(&pk, deleted_sk(reference)),
        "react" | "unreact" => {
            let row = Row::new(
                &pk,
                format!(
                    "{}r\u{1}{}\u{1}{}",
                    prefix(reference),
                    fields.body,
                    fields.actor
                ),
            )
            .with("emoji", fields.body)
            .with("u", fields.actor)
            .with("on", fields.evt_type == "react")
            .with("at", at);
            out.versioned.push((row, "at"));
            out.plain
                .push(Row::new(&pk, touched_sk(reference)).with("at", at));
            return;
        }
        _ => return,
    };
    out.plain.push(row.with("a", fields.actor).with("at", at));
    out.plain
        .push(Row::new(&pk, touched_sk(reference)).with("at", at));
}

/// What `rows` (a `k#` row and perhaps the delete row of one message) say of it.
pub fn indexed(rows: &[Row], msg_id: &str) -> Option<IndexedMessage> {
    let key = rows.iter().find(|r| r.sk == format!("k#{msg_id}"))?;
    Some(IndexedMessage {
        sender: key.str("a").to_owned(),
        sent_at: key.int("at").unwrap_or(0),
        deleted: rows.iter().any(|r| r.sk == deleted_sk(msg_id)),
    })
}

/// The keys [`indexed`] reads for message `msg_id` of `conv`.
pub fn index_keys(conv: &str, msg_id: &str) -> Vec<(String, String)> {
    let pk = format!("c#{conv}");
    vec![
        (pk.clone(), format!("k#{msg_id}")),
        (pk, deleted_sk(msg_id)),
    ]
}

/// Whether a history row is a lifecycle event (shown through the message it is about, not
/// as a row of its own).
pub fn is_lifecycle_row(row: &Row) -> bool {
    matches!(row.str("e"), "edit" | "delete" | "react" | "unreact")
}

/// The key of the mark telling whether message `msg_id` of partition `pk` was touched.
pub fn touched_key(pk: &str, msg_id: &str) -> (String, String) {
    (pk.to_owned(), touched_sk(msg_id))
}

/// Whether `touched` (rows read with [`touched_key`]) holds the mark of `msg_id` in `pk`.
pub fn was_touched(touched: &[Row], pk: &str, msg_id: &str) -> bool {
    let sk = touched_sk(msg_id);
    touched.iter().any(|r| r.pk == pk && r.sk == sk)
}

/// The query of every lifecycle row of message `msg_id` in partition `pk`.
pub fn rows_query(msg_id: &str) -> (SkRange, Order, usize) {
    (
        SkRange::prefix(&prefix(msg_id)),
        Order::Ascending,
        MAX_ROWS_PER_MESSAGE,
    )
}

/// Applies a message's lifecycle `rows` (ascending) to its history `item`: the latest text and
/// `EditedAt`, or `Deleted` with an empty Body; reactions when `show_reactions`.
pub fn apply(item: &mut LoggedEvent, rows: &[Row], show_reactions: bool) {
    let base = prefix(&item.msg_id);
    if rows.iter().any(|r| r.sk == format!("{base}d")) {
        item.deleted = true;
        item.body = String::new();
        item.edited_at = None;
        item.reactions = Some(BTreeMap::new());
        return;
    }
    let edit = format!("{base}e\u{1}");
    if let Some(latest) = rows.iter().rev().find(|r| r.sk.starts_with(&edit)) {
        item.body = latest.str("b").to_owned();
        item.edited_at = latest.int("at");
    }
    let mut reactions: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    if show_reactions {
        let reaction = format!("{base}r\u{1}");
        for row in rows.iter().filter(|r| r.sk.starts_with(&reaction)) {
            if row.attrs.get("on").and_then(Value::as_bool) == Some(true) {
                reactions
                    .entry(row.str("emoji").to_owned())
                    .or_default()
                    .push((row.int("at").unwrap_or(0), row.str("u").to_owned()));
            }
        }
    }
    // Who reacted, in the order they did.
    item.reactions = Some(
        reactions
            .into_iter()
            .map(|(emoji, mut by)| {
                by.sort();
                (emoji, by.into_iter().map(|(_, uid)| uid).collect())
            })
            .collect(),
    );
}

/// The earlier versions of a message (oldest first): its original text, then every edit but
/// the latest, each as `(MsgID, Body, SentAt)`.
pub fn earlier_versions(original: &Row, rows: &[Row], msg_id: &str) -> Vec<(String, String, i64)> {
    let edit = format!("{}e\u{1}", prefix(msg_id));
    let mut versions = vec![(
        msg_id.to_owned(),
        original.str("b").to_owned(),
        original.int("at").unwrap_or(0),
    )];
    versions.extend(rows.iter().filter(|r| r.sk.starts_with(&edit)).map(|r| {
        (
            r.str("m").to_owned(),
            r.str("b").to_owned(),
            r.int("at").unwrap_or(0),
        )
    }));
    versions.pop();
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calllog::{rows_for, Conversation, LogRecord};

    fn lifecycle(evt_type: &str, actor: &str, id: &str, body: &str, at: i64) -> LogRecord {
        LogRecord::Lifecycle {
            evt_type: evt_type.into(),
            actor: actor.into(),
            conversation: Conversation::Direct { peer: "bob".into() },
            msg_id: id.into(),
            reference: "m1".into(),
            body: body.into(),
            sent_at: at,
            seq: None,
        }
    }

    fn item() -> LoggedEvent {
        LoggedEvent {
            msg_id: "m1".into(),
            evt_type: "message".into(),
            from: "ann".into(),
            originated: String::new(),
            to: "bob".into(),
            body: "helo".into(),
            sent_at: 1,
            seq: None,
            delivered_at: None,
            displayed_at: None,
            unread: None,
            reference: None,
            edited_at: None,
            deleted: false,
            reactions: None,
            attachments: Vec::new(),
        }
    }

    /// The lifecycle rows the records make, as a table would hold them (ascending; for a
    /// versioned row the newest write).
    fn table(records: &[LogRecord]) -> Vec<Row> {
        let written = rows_for(records);
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        for row in written.plain {
            rows.insert(row.sk.clone(), row);
        }
        for (row, version) in written.versioned {
            let newer = rows
                .get(&row.sk)
                .is_none_or(|old| old.int(version) <= row.int(version));
            if newer {
                rows.insert(row.sk.clone(), row);
            }
        }
        rows.into_values()
            .filter(|r| r.sk.starts_with("l#m1\u{1}"))
            .collect()
    }

    #[test]
    fn history_shows_the_latest_edit_and_who_reacts_now() {
        let rows = table(&[
            lifecycle("edit", "ann", "e2", "hello!", 30),
            lifecycle("edit", "ann", "e1", "hello", 20),
            lifecycle("react", "bob", "r1", "👍", 40),
            lifecycle("react", "ann", "r2", "👍", 41),
            lifecycle("react", "bob", "r3", "❤️", 42),
            lifecycle("unreact", "bob", "r4", "❤️", 43),
        ]);
        let mut shown = item();
        apply(&mut shown, &rows, true);
        assert_eq!(shown.body, "hello!");
        assert_eq!(shown.edited_at, Some(30));
        assert!(!shown.deleted);
        let reactions = shown.reactions.expect("reactions");
        assert_eq!(reactions.len(), 1, "{reactions:?}");
        assert_eq!(reactions["👍"], ["bob", "ann"]);

        let mut hidden = item();
        apply(&mut hidden, &rows, false);
        assert_eq!(hidden.reactions, Some(BTreeMap::new()));

        let original = Row::new("c#p:ann:bob", "t#x")
            .with("b", "helo")
            .with("at", 1);
        let versions = earlier_versions(&original, &rows, "m1");
        assert_eq!(
            versions,
            [
                ("m1".into(), "helo".into(), 1),
                ("e1".into(), "hello".into(), 20)
            ]
        );
    }

    #[test]
    fn an_edit_racing_a_delete_ends_deleted_in_either_order() {
        for records in [
            [
                lifecycle("edit", "ann", "e1", "new", 20),
                lifecycle("delete", "ann", "d1", "", 20),
            ],
            [
                lifecycle("delete", "ann", "d1", "", 20),
                lifecycle("edit", "ann", "e1", "new", 21),
            ],
        ] {
            let mut shown = item();
            apply(&mut shown, &table(&records), true);
            assert!(shown.deleted);
            assert_eq!(shown.body, "");
            assert_eq!(shown.edited_at, None);
        }
    }

    /// The `k#` rows `records` leave in a table, written in this order, one drain batch each.
    fn key_rows(records: &[LogRecord]) -> Vec<Row> {
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        for record in records {
            let written = rows_for(std::slice::from_ref(record));
            for row in written.plain {
                rows.insert(row.sk.clone(), row);
            }
            for (row, version) in written.versioned {
                let newer = rows
                    .get(&row.sk)
                    .is_none_or(|old| old.int(version) <= row.int(version));
                if newer {
                    rows.insert(row.sk.clone(), row);
                }
            }
        }
        rows.into_values()
            .filter(|r| r.sk.starts_with("k#"))
            .collect()
    }

    #[test]
    fn a_msg_id_reused_by_another_sender_stays_the_first_senders() {
        let message = |actor: &str, peer: &str, at: i64| LogRecord::Event {
            evt_type: "message".into(),
            actor: actor.into(),
            conversation: Conversation::Direct { peer: peer.into() },
            msg_id: "m-123".into(),
            body: "hi".into(),
            sent_at: at,
            seq: None,
            attachments: Vec::new(),
        };
        let alice = message("alice", "bob", 10);
        let bob = message("bob", "alice", 20);
        // Written in order, and out of order (the call log is written at least once).
        for records in [[alice.clone(), bob.clone()], [bob, alice]] {
            let rows = key_rows(&records);
            let found = indexed(&rows, "m-123").expect("indexed");
            assert_eq!(found.sender, "alice", "{rows:?}");
            assert_eq!(found.sent_at, 10);
        }
    }

    #[test]
    fn a_msg_id_that_extends_another_is_not_taken_for_it() {
        let mut record = lifecycle("delete", "ann", "d1", "", 20);
        if let LogRecord::Lifecycle { reference, .. } = &mut record {
            *reference = "m1#x".into();
        }
        assert!(table(&[record]).is_empty());
    }
}
