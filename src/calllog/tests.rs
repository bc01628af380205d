//! The call log's logic over the embedded table (the back-ends keep the same contract).

use std::sync::Arc;

use super::*;
use crate::storage::table::{last_of_each_key, EmbeddedTable};
use crate::{groups::EmbeddedGroupStore, storage::embedded::EmbeddedDb};

struct Fixture {
    log: CallLog,
    table: Arc<dyn SortedTable>,
    groups: Arc<dyn GroupStore>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("open");
    let table: Arc<dyn SortedTable> = Arc::new(EmbeddedTable::new(db.clone()));
    let groups: Arc<dyn GroupStore> = Arc::new(EmbeddedGroupStore::new(db));
    Fixture {
        log: CallLog::new(None, table.clone(), groups.clone()),
        table,
        groups,
        _dir: dir,
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).expect("uid")
}

fn message(from: &str, to: &str, msg_id: &str, at: i64) -> LogRecord {
    LogRecord::Event {
        evt_type: "message".into(),
        actor: from.into(),
        conversation: Conversation::Direct { peer: to.into() },
        msg_id: msg_id.into(),
        body: format!("body of {msg_id}"),
        sent_at: at,
        seq: Some(1),
    }
}

fn receipt(kind: &str, reader: &str, sender: &str, msg_id: &str, at: i64) -> LogRecord {
    LogRecord::Receipt {
        receipt: kind.into(),
        reader: reader.into(),
        sender: sender.into(),
        group: None,
        msg_id: msg_id.into(),
        at,
        unread: Some(u32::from(kind != "display")),
    }
}

#[tokio::test]
async fn history_is_newest_first_with_receipt_states_and_pages_without_gaps() {
    let f = fixture();
    let mut records: Vec<LogRecord> = (0..25)
        .map(|i| {
            message(
                if i % 2 == 0 { "ann" } else { "bob" },
                if i % 2 == 0 { "bob" } else { "ann" },
                &format!("m{i}"),
                1_000 + i,
            )
        })
        .collect();
    records.push(receipt("delivery", "bob", "ann", "m0", 2_000));
    records.push(receipt("delivery", "bob", "ann", "m0", 1_500));
    records.push(receipt("display", "bob", "ann", "m0", 2_100));
    // Written twice: at-least-once delivery of the queue must not duplicate anything.
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write");
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write again");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = f
            .log
            .messages(&uid("ann"), "bob", None, cursor.as_deref(), 10, 0)
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|e| e.msg_id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected, "every message once, newest first");

    let oldest = f
        .log
        .messages(&uid("bob"), "ann", Some(1_001), None, 10, 0)
        .await
        .expect("before");
    assert_eq!(oldest.items.len(), 1);
    let m0 = &oldest.items[0];
    assert_eq!((m0.from.as_str(), m0.to.as_str()), ("ann", "bob"));
    assert_eq!(m0.delivered_at, Some(1_500), "the first delivery is kept");
    assert_eq!(m0.displayed_at, Some(2_100));
    assert_eq!(m0.unread, Some(0));
    assert_eq!(oldest.next, None);
}

#[tokio::test]
async fn conversations_are_newest_first_with_unread_counts_from_the_last_display() {
    let f = fixture();
    let records = vec![
        message("ann", "bob", "a1", 1_000),
        message("bob", "ann", "b1", 1_100),
        message("bob", "ann", "b2", 1_200),
        message("cid", "ann", "c1", 1_300),
        receipt("display", "ann", "bob", "b1", 1_150),
    ];
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write");
    let gid = GroupId::parse("group_g1").expect("gid");
    f.groups
        .create(&gid, &[uid("ann"), uid("dan")])
        .await
        .expect("group");
    let group_msg = LogRecord::Event {
        evt_type: "message".into(),
        actor: "dan".into(),
        conversation: Conversation::Group {
            gid: "group_g1".into(),
        },
        msg_id: "g1".into(),
        body: "hi all".into(),
        sent_at: 1_250,
        seq: None,
    };
    let create = LogRecord::Event {
        evt_type: "create".into(),
        actor: "dan".into(),
        conversation: Conversation::Group {
            gid: "group_g1".into(),
        },
        msg_id: "c".into(),
        body: r#"["ann","dan"]"#.into(),
        sent_at: 1_240,
        seq: None,
    };
    drain::write(f.table.as_ref(), &[create, group_msg])
        .await
        .expect("write group");

    let page = f
        .log
        .conversations(&uid("ann"), None, 2)
        .await
        .expect("page");
    let ids: Vec<(&str, u32)> = page
        .items
        .iter()
        .map(|c| (c.id.as_str(), c.unread))
        .collect();
    assert_eq!(ids, [("cid", 1), ("group_g1", 1)]);
    let rest = f
        .log
        .conversations(&uid("ann"), page.next.as_deref(), 2)
        .await
        .expect("next page");
    let ids: Vec<(&str, u32)> = rest
        .items
        .iter()
        .map(|c| (c.id.as_str(), c.unread))
        .collect();
    assert_eq!(ids, [("bob", 1)], "b2 came after ann's display of b1");
    assert_eq!(rest.next, None);
    let last = rest.items[0].last.as_ref().expect("last");
    assert_eq!(last.msg_id, "b2");
    // The last message carries its receipt state (ann displayed b1, not b2).
    assert_eq!(last.displayed_at, None);
    let bobs = f
        .log
        .conversations(&uid("bob"), None, 10)
        .await
        .expect("bob's list");
    let with_ann = bobs.items.iter().find(|c| c.id == "ann").expect("ann");
    assert_eq!(
        with_ann.last.as_ref().map(|l| l.msg_id.as_str()),
        Some("b2")
    );
}

#[tokio::test]
async fn group_history_is_for_members_only_and_admin_reads_by_user_and_group() {
    let f = fixture();
    let gid = GroupId::parse("group_g2").expect("gid");
    f.groups
        .create(&gid, &[uid("ann"), uid("bob")])
        .await
        .expect("group");
    let records = vec![
        LogRecord::Event {
            evt_type: "create".into(),
            actor: "ann".into(),
            conversation: Conversation::Group {
                gid: "group_g2".into(),
            },
            msg_id: "c".into(),
            body: r#"["ann","bob"]"#.into(),
            sent_at: 10,
            seq: None,
        },
        LogRecord::Event {
            evt_type: "message".into(),
            actor: "bob".into(),
            conversation: Conversation::Group {
                gid: "group_g2".into(),
            },
            msg_id: "m".into(),
            body: "yo".into(),
            sent_at: 20,
            seq: None,
        },
        message("bob", "eve", "private", 30),
    ];
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write");

    let err = f
        .log
        .messages(&uid("eve"), "group_g2", None, None, 10, 0)
        .await
        .expect_err("eve is no member");
    assert_eq!(err.code, ErrorCode::Forbidden);
    let err = f
        .log
        .messages(&uid("ann"), "group_nope", None, None, 10, 0)
        .await
        .expect_err("no such group");
    assert_eq!(err.code, ErrorCode::NotFound);
    let history = f
        .log
        .messages(&uid("ann"), "group_g2", None, None, 10, 0)
        .await
        .expect("history");
    let kinds: Vec<(&str, &str, &str)> = history
        .items
        .iter()
        .map(|e| (e.evt_type.as_str(), e.from.as_str(), e.originated.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("message", "group_g2", "bob"),
            ("create", "group_g2", "ann")
        ]
    );

    let by_bob = f
        .log
        .admin(&AdminSubject::User(uid("bob")), Some(20), Some(31), None, 1)
        .await
        .expect("admin by user");
    assert_eq!(by_bob.items[0].msg_id, "m", "oldest first, since inclusive");
    let more = f
        .log
        .admin(
            &AdminSubject::User(uid("bob")),
            Some(20),
            Some(31),
            by_bob.next.as_deref(),
            10,
        )
        .await
        .expect("next");
    assert_eq!(more.items.len(), 1);
    assert_eq!(more.items[0].msg_id, "private");
    let until = f
        .log
        .admin(&AdminSubject::User(uid("bob")), None, Some(30), None, 10)
        .await
        .expect("until is exclusive");
    assert_eq!(until.items.len(), 1);
    let group = f
        .log
        .admin(&AdminSubject::Group(gid), None, None, None, 10)
        .await
        .expect("admin by group");
    assert_eq!(group.items.len(), 2);
}

#[tokio::test]
async fn cursors_are_tied_to_their_query() {
    let f = fixture();
    let records: Vec<LogRecord> = (0..3)
        .map(|i| message("ann", "bob", &format!("m{i}"), i))
        .collect();
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write");
    let page = f
        .log
        .messages(&uid("ann"), "bob", None, None, 1, 0)
        .await
        .expect("page");
    let cursor = page.next.expect("more");
    let err = f
        .log
        .messages(&uid("ann"), "cid", None, Some(&cursor), 1, 0)
        .await
        .expect_err("another conversation");
    assert_eq!(err.code, ErrorCode::BadRequest);
    for junk in ["", "!!!", "bm90IGEgY3Vyc29y"] {
        let err = f
            .log
            .messages(&uid("ann"), "bob", None, Some(junk), 1, 0)
            .await
            .expect_err("junk cursor");
        assert_eq!(err.code, ErrorCode::BadRequest, "{junk}");
    }
}

#[test]
fn the_last_row_of_a_key_wins() {
    let rows = vec![
        Row::new("p", "a").with("n", 1),
        Row::new("p", "b").with("n", 2),
        Row::new("p", "a").with("n", 3),
        Row::new("q", "a").with("n", 4),
    ];
    let kept: Vec<i64> = last_of_each_key(rows)
        .iter()
        .filter_map(|r| r.int("n"))
        .collect();
    assert_eq!(kept, [2, 3, 4]);
}

#[tokio::test]
async fn the_conversation_list_shows_the_receipt_state_of_the_last_message() {
    let f = fixture();
    let records = vec![
        message("ann", "bob", "m1", 1_000),
        receipt("delivery", "bob", "ann", "m1", 1_100),
        receipt("display", "bob", "ann", "m1", 1_200),
    ];
    drain::write(f.table.as_ref(), &records)
        .await
        .expect("write");
    let page = f
        .log
        .conversations(&uid("ann"), None, 10)
        .await
        .expect("list");
    let last = page.items[0].last.as_ref().expect("last");
    assert_eq!(
        (
            last.msg_id.as_str(),
            last.delivered_at,
            last.displayed_at,
            last.unread
        ),
        ("m1", Some(1_100), Some(1_200), Some(0))
    );
}
