//! The ticket and role stores' contract, checked on the embedded store (the Redis one runs
//! the same scenarios in `tests/api/support.rs` against real Redis and Redis Cluster).

use std::sync::Arc;

use super::*;
use crate::{domain::support::ticket_gid, storage::embedded::EmbeddedDb};

fn uid(raw: &str) -> UserId {
    UserId::parse(raw).expect("uid")
}

fn ticket(customer: &str, msg: &str, opened_at: i64) -> Ticket {
    let customer = uid(customer);
    Ticket {
        ticket: ticket_gid(&customer, &MsgId::parse(msg).expect("msg id")),
        state: TicketState::Open,
        customer,
        topic: Topic::parse("sku-1").expect("topic"),
        staff: None,
        opened_at,
        claimed_at: None,
        closed_at: None,
    }
}

fn store() -> (EmbeddedSupportStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("db");
    (EmbeddedSupportStore::new(db), dir)
}

#[tokio::test]
async fn opening_twice_keeps_the_first_ticket() {
    let (store, _dir) = store();
    let first = ticket("alice", "m1", 10);
    assert_eq!(store.open(&first).await.expect("open"), first);
    let again = Ticket {
        opened_at: 99,
        ..first.clone()
    };
    assert_eq!(store.open(&again).await.expect("reopen"), first);
    assert_eq!(store.get(&first.ticket).await.expect("get"), Some(first));
}

#[tokio::test]
async fn of_many_simultaneous_claims_exactly_one_wins() {
    let (store, _dir) = store();
    let store = Arc::new(store);
    let t = ticket("alice", "m1", 10);
    store.open(&t).await.expect("open");
    let claims = (0..20).map(|i| {
        let store = store.clone();
        let gid = t.ticket.clone();
        tokio::spawn(async move { store.claim(&gid, &uid(&format!("staff{i}")), 20).await })
    });
    let mut won = 0;
    for claim in futures_util::future::join_all(claims).await {
        match claim.expect("task").expect("claim") {
            ClaimOutcome::Won(_) => won += 1,
            ClaimOutcome::Taken(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let held = store.get(&t.ticket).await.expect("get").expect("ticket");
    let holder = held.staff.clone().expect("holder");
    assert!(matches!(
        store.claim(&t.ticket, &holder, 30).await.expect("re-claim"),
        ClaimOutcome::Held(_)
    ));
}

#[tokio::test]
async fn a_closed_ticket_cannot_be_claimed_and_closing_again_changes_nothing() {
    let (store, _dir) = store();
    let t = ticket("alice", "m1", 10);
    store.open(&t).await.expect("open");
    let CloseOutcome::Closed(closed) = store.close(&t.ticket, 40).await.expect("close") else {
        panic!("not closed");
    };
    assert_eq!(closed.closed_at, Some(40));
    assert!(matches!(
        store.close(&t.ticket, 50).await.expect("close"),
        CloseOutcome::AlreadyClosed(c) if c.closed_at == Some(40)
    ));
    assert!(matches!(
        store
            .claim(&t.ticket, &uid("sam"), 60)
            .await
            .expect("claim"),
        ClaimOutcome::Closed(_)
    ));
    let unknown = ticket("bob", "zz", 1);
    assert_eq!(
        store
            .claim(&unknown.ticket, &uid("sam"), 60)
            .await
            .expect("claim"),
        ClaimOutcome::Unknown
    );
}

#[tokio::test]
async fn lists_page_through_each_state_in_queue_order() {
    let (store, _dir) = store();
    let tickets: Vec<Ticket> = (0..5)
        .map(|i| ticket("alice", &format!("m{i}"), 100 + i))
        .collect();
    for t in &tickets {
        store.open(t).await.expect("open");
    }
    store
        .claim(&tickets[1].ticket, &uid("sam"), 200)
        .await
        .expect("claim");
    store
        .claim(&tickets[3].ticket, &uid("sam"), 201)
        .await
        .expect("claim");
    let open = store.list(TicketState::Open, None, 2).await.expect("list");
    assert_eq!(
        open.iter().map(|t| t.opened_at).collect::<Vec<_>>(),
        [100, 102],
        "oldest first"
    );
    let rest = store
        .list(TicketState::Open, Some(&open[1].index_member()), 10)
        .await
        .expect("list");
    assert_eq!(rest.iter().map(|t| t.opened_at).collect::<Vec<_>>(), [104]);
    let claimed = store
        .list(TicketState::Claimed, None, 10)
        .await
        .expect("list");
    assert_eq!(
        claimed.iter().map(|t| t.opened_at).collect::<Vec<_>>(),
        [103, 101],
        "newest first"
    );
    let after = store
        .list(TicketState::Claimed, Some(&claimed[0].index_member()), 10)
        .await
        .expect("list");
    assert_eq!(after.iter().map(|t| t.opened_at).collect::<Vec<_>>(), [101]);
    assert!(store
        .list(TicketState::Closed, None, 10)
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn roles_are_replaced_and_staff_are_listed() {
    let (store, _dir) = store();
    assert!(store.roles(&uid("sam")).await.expect("roles").is_empty());
    store
        .set_roles(&uid("sam"), &[Role::Staff])
        .await
        .expect("set");
    store
        .set_roles(&uid("ann"), &[Role::Staff])
        .await
        .expect("set");
    assert_eq!(
        store.roles(&uid("sam")).await.expect("roles"),
        [Role::Staff]
    );
    assert_eq!(
        store.holders(Role::Staff).await.expect("holders"),
        ["ann", "sam"]
    );
    store.set_roles(&uid("ann"), &[]).await.expect("set");
    assert_eq!(store.holders(Role::Staff).await.expect("holders"), ["sam"]);
}
