//! The support desk (§10): roles, tickets opened by users and guests, one claim winner across
//! nodes, the queue for staff who were offline, the conversation in history, close, and every
//! bad input refused with nothing changed.
//!
//! Staff are process-wide on a shared Redis (every staff member gets every ticket event), so
//! each test makes its own staff users and only looks at its own tickets.

use serde_json::{json, Value};
use webchat_loadgen::client::{ClientError, ClientOptions, SioClient};

use crate::helpers::{
    eventually, http, settings, spawn_with, Backend, TestApp, TestClient, User, PATIENCE,
};

const ADMIN: &str = "support-admin-token";

/// A node with the admin token and guests on; its data dir lives as long as the guard.
async fn node(backend: Backend) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(backend, dir.path().to_path_buf());
    settings.admin_token = Some(ADMIN.into());
    settings.guests = true;
    (spawn_with(settings).await, dir)
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("<none>")
}

/// Signs up a user and makes them staff.
async fn staff(app: &TestApp, prefix: &str) -> User {
    let user = app.signup(prefix).await;
    let res = http()
        .put(format!("{}/api/v1/admin/users/{}/roles", app.url, user.uid))
        .bearer_auth(ADMIN)
        .json(&json!({ "roles": ["staff"] }))
        .send()
        .await
        .expect("put roles");
    assert_eq!(res.status(), 200);
    user
}

/// Takes the staff role back: every staff member in the shared Redis gets every ticket event,
/// so a test's staff must not outlive it.
async fn unstaff(app: &TestApp, users: &[&User]) {
    for user in users {
        let res = http()
            .put(format!("{}/api/v1/admin/users/{}/roles", app.url, user.uid))
            .bearer_auth(ADMIN)
            .json(&json!({ "roles": [] }))
            .send()
            .await
            .expect("put roles");
        assert_eq!(res.status(), 200);
    }
}

/// Opens a ticket; the ack.
async fn open(client: &TestClient, msg_id: &str, body: &str, topic: &str) -> Value {
    client
        .chat(json!({"EvtType": "support", "MsgID": msg_id, "Body": body, "Topic": topic}))
        .await
}

fn ticket_of(ack: &Value) -> String {
    ack["Ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket in {ack}"))
        .to_owned()
}

async fn claim(client: &TestClient, gid: &str) -> Value {
    client.chat(json!({"EvtType": "claim", "To": gid})).await
}

async fn close(client: &TestClient, gid: &str) -> Value {
    client.chat(json!({"EvtType": "close", "To": gid})).await
}

/// Waits (acking everything) for the first `chat` event `matches` accepts.
async fn wait_for(client: &mut TestClient, matches: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = client.next_chat_acked().await;
        if matches(&event.data) {
            return event.data;
        }
    }
}

/// The `ticket` event about `gid` in `state`.
async fn ticket_event(client: &mut TestClient, gid: &str, state: &str) -> Value {
    let event = wait_for(client, |e| {
        e["EvtType"] == "ticket"
            && e["From"] == gid
            && serde_json::from_str::<Value>(e["Body"].as_str().unwrap_or(""))
                .is_ok_and(|b| b["state"] == state)
    })
    .await;
    serde_json::from_str(event["Body"].as_str().expect("body")).expect("ticket json")
}

/// A guest socket, its uid and its guest token (from the `session` event).
async fn guest(url: &str, token: Option<&str>) -> (TestClient, String, String) {
    let mut auth = json!({ "guest": true });
    if let Some(token) = token {
        auth["token"] = json!(token);
    }
    let (client, mut events) = SioClient::connect(url, Some(auth), ClientOptions::default())
        .await
        .expect("guest connect");
    let session = events
        .recv_named("session", PATIENCE)
        .await
        .expect("session event")
        .data;
    let uid = session["uid"].as_str().expect("uid").to_owned();
    let token = session["token"].as_str().expect("guest token").to_owned();
    (
        TestClient {
            client,
            events,
            uid: uid.clone(),
        },
        uid,
        token,
    )
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let res = http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn gids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["ticket"].as_str().expect("ticket").to_owned())
        .collect()
}

#[tokio::test]
async fn two_staff_claiming_at_the_same_instant_on_two_nodes_always_get_exactly_one_winner() {
    let (a, _da) = node(Backend::Redis).await;
    let (b, _db) = node(Backend::Redis).await;
    let customer = a.signup("shopper").await;
    let (ann, bob) = (staff(&a, "ann").await, staff(&b, "bob").await);
    let shopper = a.connect(&customer).await;
    let ann_socket = a.connect(&ann).await;
    let bob_socket = b.connect(&bob).await;
    for round in 0..50 {
        let gid = ticket_of(&open(&shopper, &format!("q{round}"), "in stock soon?", "sku-1").await);
        let (one, two) = tokio::join!(claim(&ann_socket, &gid), claim(&bob_socket, &gid));
        let wins = [&one, &two].iter().filter(|a| a["ok"] == true).count();
        let conflicts = [&one, &two]
            .iter()
            .filter(|a| code(a) == "conflict")
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {one} / {two}");
        // The store agrees with the acks: the winner holds it.
        let winner = if one["ok"] == true { &ann } else { &bob };
        let (_, page) = get(
            &format!("{}/api/v1/support/tickets?state=claimed&limit=200", b.url),
            &ann.token,
        )
        .await;
        let held = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|t| t["ticket"] == gid.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("round {round}: {gid} not claimed"));
        assert_eq!(held["staff"], winner.uid.as_str(), "round {round}");
    }
    unstaff(&a, &[&ann, &bob]).await;
}

#[tokio::test]
async fn claims_on_redis_cluster_have_one_winner_too() {
    let (a, _da) = node(Backend::RedisCluster).await;
    let (b, _db) = node(Backend::RedisCluster).await;
    let customer = a.signup("shopper").await;
    let (ann, bob) = (staff(&a, "ann").await, staff(&b, "bob").await);
    let shopper = a.connect(&customer).await;
    let (ann_socket, bob_socket) = (a.connect(&ann).await, b.connect(&bob).await);
    for round in 0..10 {
        let gid = ticket_of(&open(&shopper, &format!("c{round}"), "hello", "").await);
        let (one, two) = tokio::join!(claim(&ann_socket, &gid), claim(&bob_socket, &gid));
        let wins = [&one, &two].iter().filter(|a| a["ok"] == true).count();
        assert_eq!(wins, 1, "round {round}: {one} / {two}");
        assert!(code(&one) == "conflict" || code(&two) == "conflict");
    }
    unstaff(&a, &[&ann, &bob]).await;
}

#[tokio::test]
async fn a_staff_member_offline_while_a_ticket_opens_sees_it_on_connect() {
    let (a, _da) = node(Backend::Redis).await;
    let (b, _db) = node(Backend::Redis).await;
    let sam = staff(&a, "sam").await;
    let customer = a.signup("shopper").await;
    let shopper = a.connect(&customer).await;
    let ack = open(
        &shopper,
        "q1",
        "Is the red kettle coming back?",
        "kettle-red",
    )
    .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let gid = ticket_of(&ack);
    assert!(gid.starts_with("group_"));
    // Sam connects afterwards, on the other node: the queue comes by replay...
    let mut sam_socket = b.connect(&sam).await;
    let body = ticket_event(&mut sam_socket, &gid, "open").await;
    assert_eq!(body["customer"], customer.uid.as_str());
    assert_eq!(body["topic"], "kettle-red");
    assert!(body["openedAt"].as_i64().is_some());
    assert!(body.get("staff").is_none());
    // ...and by REST.
    let (status, page) = get(
        &format!("{}/api/v1/support/tickets?state=open&limit=200", b.url),
        &sam.token,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(gids(&page).contains(&gid));
    unstaff(&a, &[&sam]).await;
}

#[tokio::test]
async fn the_customers_question_and_the_staff_answer_are_in_the_ticket_history() {
    let (a, _da) = node(Backend::Redis).await;
    let (b, _db) = node(Backend::Redis).await;
    let sam = staff(&b, "sam").await;
    let customer = a.signup("shopper").await;
    let mut shopper = a.connect(&customer).await;
    let gid = ticket_of(&open(&shopper, "q1", "When is the kettle back?", "kettle").await);
    let mut sam_socket = b.connect(&sam).await;
    ticket_event(&mut sam_socket, &gid, "open").await;
    assert_eq!(claim(&sam_socket, &gid).await["ok"], true);
    // The customer hears that staff joined; the staff member gets the member list.
    let join = wait_for(&mut shopper, |e| {
        e["EvtType"] == "join" && e["From"] == gid.as_str()
    })
    .await;
    assert_eq!(join["Originated"], sam.uid.as_str());
    wait_for(&mut sam_socket, |e| {
        e["EvtType"] == "notify" && e["From"] == gid.as_str()
    })
    .await;
    // The winner sees the history from before they joined.
    let history_url = format!("{}/api/v1/conversations/{gid}/messages", b.url);
    eventually("the question in the staff member's history", || async {
        let (_, page) = get(&history_url, &sam.token).await;
        page["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|m| m["Body"] == "When is the kettle back?")
        })
    })
    .await;
    let answer = sam_socket
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "a1", "Body": "Next Tuesday."}))
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    let got = wait_for(&mut shopper, |e| e["EvtType"] == "message").await;
    assert_eq!(got["Body"], "Next Tuesday.");
    assert_eq!(got["Originated"], sam.uid.as_str());
    assert_eq!(got["From"], gid.as_str());
    let customer_history = format!("{}/api/v1/conversations/{gid}/messages", a.url);
    eventually("question and answer in the customer's history", || async {
        let (_, page) = get(&customer_history, &customer.token).await;
        let bodies: Vec<&str> = page["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|m| m["Body"].as_str()).collect())
            .unwrap_or_default();
        bodies.contains(&"Next Tuesday.") && bodies.contains(&"When is the kettle back?")
    })
    .await;
    unstaff(&a, &[&sam]).await;
}

#[tokio::test]
async fn a_ticket_is_closed_by_its_holder_or_its_customer_and_then_refuses_messages() {
    let (a, _da) = node(Backend::Redis).await;
    let (b, _db) = node(Backend::Redis).await;
    let (sam, tim) = (staff(&a, "sam").await, staff(&b, "tim").await);
    let customer = a.signup("shopper").await;
    let mut shopper = a.connect(&customer).await;
    let sam_socket = a.connect(&sam).await;
    let mut tim_socket = b.connect(&tim).await;
    let gid = ticket_of(&open(&shopper, "q1", "hello?", "").await);
    assert_eq!(claim(&sam_socket, &gid).await["ok"], true);
    // Only the holder (or the customer) closes it: other staff are refused, nothing changes.
    assert_eq!(code(&close(&tim_socket, &gid).await), "forbidden");
    let stranger = a.signup("stranger").await;
    let stranger_socket = a.connect(&stranger).await;
    assert_eq!(code(&close(&stranger_socket, &gid).await), "forbidden");
    let (_, page) = get(
        &format!("{}/api/v1/support/tickets?state=claimed&limit=200", b.url),
        &tim.token,
    )
    .await;
    assert!(gids(&page).contains(&gid));
    let closed = close(&sam_socket, &gid).await;
    assert_eq!(closed["ok"], true, "{closed}");
    assert_eq!(closed["Ticket"], gid.as_str());
    // Every staff member hears it, and so does the customer.
    let body = ticket_event(&mut tim_socket, &gid, "closed").await;
    assert_eq!(body["staff"], sam.uid.as_str());
    assert!(body["closedAt"].as_i64().is_some());
    ticket_event(&mut shopper, &gid, "closed").await;
    // Closed: no more messages from anyone, no claims, closing again is acked.
    let late = shopper
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "late", "Body": "one more"}))
        .await;
    assert_eq!(code(&late), "forbidden");
    let late = sam_socket
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "late", "Body": "bye"}))
        .await;
    assert_eq!(code(&late), "forbidden");
    assert_eq!(code(&claim(&tim_socket, &gid).await), "conflict");
    assert_eq!(close(&shopper, &gid).await["ok"], true);
    let (_, page) = get(
        &format!("{}/api/v1/support/tickets?state=closed&limit=200", a.url),
        &tim.token,
    )
    .await;
    assert!(gids(&page).contains(&gid));
    // A customer may close their own ticket before anyone claims it.
    let other = ticket_of(&open(&shopper, "q2", "never mind", "").await);
    assert_eq!(close(&shopper, &other).await["ok"], true);
    assert_eq!(code(&claim(&tim_socket, &other).await), "conflict");
    unstaff(&a, &[&sam, &tim]).await;
}

#[tokio::test]
async fn guests_open_tickets_get_later_answers_and_are_confined_to_their_own_tickets() {
    let (a, _da) = node(Backend::Redis).await;
    let (b, _db) = node(Backend::Redis).await;
    let sam = staff(&b, "sam").await;
    let (visitor, visitor_uid, visitor_token) = guest(&a.url, None).await;
    let ack = open(&visitor, "q1", "Do you ship to Norway?", "sku-9").await;
    assert_eq!(ack["ok"], true, "{ack}");
    let gid = ticket_of(&ack);
    // Another guest cannot write into it, close it, or claim it.
    let (intruder, _, _) = guest(&b.url, None).await;
    let write = intruder
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "x", "Body": "hi"}))
        .await;
    assert_eq!(code(&write), "forbidden");
    assert_eq!(code(&close(&intruder, &gid).await), "forbidden");
    assert_eq!(code(&claim(&intruder, &gid).await), "forbidden");
    // Guests do nothing else: no 1:1 messages, no groups, no user REST.
    let dm = visitor
        .chat(json!({"EvtType": "message", "To": sam.uid, "MsgID": "d", "Body": "psst"}))
        .await;
    assert_eq!(code(&dm), "forbidden");
    let create = visitor
        .chat(json!({"EvtType": "create", "To": "", "Body": [sam.uid]}))
        .await;
    assert_eq!(code(&create), "forbidden");
    let (status, _) = get(&format!("{}/api/v1/conversations", a.url), &visitor_token).await;
    assert_eq!(status, 403);
    // The guest leaves before the answer comes...
    visitor.close().await;
    let sam_socket = b.connect(&sam).await;
    assert_eq!(claim(&sam_socket, &gid).await["ok"], true);
    let answer = sam_socket
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "a1", "Body": "Yes, we do."}))
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    // ...and comes back as the same guest with its token: the answer is waiting.
    let (mut back, back_uid, _) = guest(&b.url, Some(&visitor_token)).await;
    assert_eq!(back_uid, visitor_uid);
    let got = wait_for(&mut back, |e| e["EvtType"] == "message").await;
    assert_eq!(got["Body"], "Yes, we do.");
    // Its ticket's history is readable with the guest token; others' are not.
    let (status, page) = get(
        &format!("{}/api/v1/conversations/{gid}/messages", a.url),
        &visitor_token,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (_, _, intruder_token) = guest(&a.url, None).await;
    let (status, _) = get(
        &format!("{}/api/v1/conversations/{gid}/messages", a.url),
        &intruder_token,
    )
    .await;
    assert_eq!(status, 403);
    unstaff(&a, &[&sam]).await;
}

/// A user's token wins over `guest: true` (docs/protocol.md, Guests): the socket is that
/// user's whether guests are on or off; with guests off only a connect asking for a new guest
/// is refused.
#[tokio::test]
async fn a_users_token_with_guest_true_is_that_user_whether_guests_are_on_or_off() {
    for guests in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(Backend::Embedded, dir.path().to_path_buf());
        settings.guests = guests;
        let app = spawn_with(settings).await;
        let (ann, ben) = (app.signup("ann").await, app.signup("ben").await);
        let (client, events) = SioClient::connect(
            &app.url,
            Some(json!({ "guest": true, "token": ann.token })),
            ClientOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("guests on: {guests}: the user's token is refused: {e:?}"));
        let ann_socket = TestClient {
            client,
            events,
            uid: ann.uid.clone(),
        };
        // A guest may not message a user; the user may.
        let ack = ann_socket.send(&ben.uid, "m1", "hello").await;
        assert_eq!(ack["ok"], true, "guests on: {guests}: {ack}");
        let mut ben_socket = app.connect(&ben).await;
        let got = ben_socket.next_chat_acked().await;
        assert_eq!(got.data["From"], ann.uid.as_str(), "from ann, not a guest");
        // Without a token, `guest: true` asks for a new guest: only while guests are on.
        let bare = SioClient::connect(
            &app.url,
            Some(json!({ "guest": true })),
            ClientOptions::default(),
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            ClientError::ConnectError { message, .. } => message,
            other => format!("{other:?}"),
        });
        let expected = if guests {
            Ok(())
        } else {
            Err("unauthorized".to_owned())
        };
        assert_eq!(bare, expected, "guests on: {guests}");
    }
}

#[tokio::test]
async fn bad_support_input_is_refused_with_the_contract_code_and_changes_nothing() {
    let (app, _dir) = node(Backend::Redis).await;
    let sam = staff(&app, "sam").await;
    let customer = app.signup("shopper").await;
    let other = app.signup("other").await;
    let shopper = app.connect(&customer).await;
    let other_socket = app.connect(&other).await;
    let sam_socket = app.connect(&sam).await;
    // An over-long topic: too_large, and no ticket.
    let long = open(&shopper, "long", "hi", &"x".repeat(129)).await;
    assert_eq!(code(&long), "too_large", "{long}");
    let empty = open(&shopper, "empty", "  ", "").await;
    assert_eq!(code(&empty), "bad_request", "{empty}");
    let (_, before) = get(
        &format!("{}/api/v1/support/tickets?state=open&limit=200", app.url),
        &sam.token,
    )
    .await;
    let gid = ticket_of(&open(&shopper, "q1", "hello", "sku").await);
    // A re-sent support opens nothing new.
    assert_eq!(ticket_of(&open(&shopper, "q1", "hello", "sku").await), gid);
    let (_, after) = get(
        &format!("{}/api/v1/support/tickets?state=open&limit=200", app.url),
        &sam.token,
    )
    .await;
    assert_eq!(gids(&after).len(), gids(&before).len() + 1);
    // Claiming an unknown ticket; a non-staff claim; a customer writing into another's ticket.
    let unknown = "group_ticket-00000000000000000000000000000000";
    assert_eq!(code(&claim(&sam_socket, unknown).await), "not_found");
    assert_eq!(
        code(&claim(&sam_socket, "group_notaticket").await),
        "not_found"
    );
    assert_eq!(code(&claim(&other_socket, &gid).await), "forbidden");
    let write = other_socket
        .chat(json!({"EvtType": "message", "To": gid, "MsgID": "x", "Body": "hi"}))
        .await;
    assert_eq!(code(&write), "forbidden");
    // Ticket membership changes only by claim.
    let refer = shopper
        .chat(json!({"EvtType": "refer", "To": gid, "Body": [other.uid]}))
        .await;
    assert_eq!(code(&refer), "forbidden");
    let create = other_socket
        .chat(json!({"EvtType": "create", "To": "group_ticket-abc", "Body": [customer.uid]}))
        .await;
    assert_eq!(code(&create), "forbidden");
    // The ticket is still open and unclaimed.
    let (_, page) = get(
        &format!("{}/api/v1/support/tickets?state=open&limit=200", app.url),
        &sam.token,
    )
    .await;
    assert!(gids(&page).contains(&gid));
    // Only staff list tickets; roles must be known ones.
    let (status, _) = get(&format!("{}/api/v1/support/tickets", app.url), &other.token).await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &format!("{}/api/v1/support/tickets?state=waiting", app.url),
        &sam.token,
    )
    .await;
    assert_eq!(status, 400);
    let res = http()
        .put(format!(
            "{}/api/v1/admin/users/{}/roles",
            app.url, other.uid
        ))
        .bearer_auth(ADMIN)
        .json(&json!({ "roles": ["root"] }))
        .send()
        .await
        .expect("put roles");
    assert_eq!(res.status(), 400);
    let (status, roles) = get(
        &format!("{}/api/v1/admin/users/{}/roles", app.url, other.uid),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(roles["roles"], json!([]));
    let (_, roles) = get(
        &format!("{}/api/v1/admin/users/{}/roles", app.url, sam.uid),
        ADMIN,
    )
    .await;
    assert_eq!(roles["roles"], json!(["staff"]));
    unstaff(&app, &[&sam]).await;
}

#[tokio::test]
async fn tickets_appear_in_the_call_log_and_the_admin_api_on_every_backend() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let (app, _dir) = node(backend).await;
        let sam = staff(&app, "sam").await;
        let customer = app.signup("shopper").await;
        let shopper = app.connect(&customer).await;
        let sam_socket = app.connect(&sam).await;
        let gid = ticket_of(&open(&shopper, "q1", "Where is my order?", "order-7").await);
        assert_eq!(claim(&sam_socket, &gid).await["ok"], true);
        assert_eq!(close(&sam_socket, &gid).await["ok"], true);
        let log_url = format!("{}/api/v1/admin/calllogs?gid={gid}&limit=50", app.url);
        eventually(
            "support, message, claim and close in the call log",
            || async {
                let (_, page) = get(&log_url, ADMIN).await;
                let kinds: Vec<&str> = page["items"]
                    .as_array()
                    .map(|items| items.iter().filter_map(|e| e["EvtType"].as_str()).collect())
                    .unwrap_or_default();
                ["support", "message", "claim", "close"]
                    .iter()
                    .all(|k| kinds.contains(k))
            },
        )
        .await;
        let (status, page) = get(
            &format!(
                "{}/api/v1/admin/support/tickets?state=closed&limit=200",
                app.url
            ),
            ADMIN,
        )
        .await;
        assert_eq!(status, 200);
        let ticket = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|t| t["ticket"] == gid.as_str())
            .cloned()
            .expect("closed ticket listed");
        assert_eq!(ticket["topic"], "order-7");
        assert_eq!(ticket["customer"], customer.uid.as_str());
        assert_eq!(ticket["staff"], sam.uid.as_str());
        unstaff(&app, &[&sam]).await;
    }
}

#[tokio::test]
async fn staff_are_paged_through_the_queue_oldest_first() {
    let (app, _dir) = node(Backend::Embedded).await;
    let sam = staff(&app, "sam").await;
    let customer = app.signup("shopper").await;
    let shopper = app.connect(&customer).await;
    let mut opened = Vec::new();
    for i in 0..3 {
        opened.push(ticket_of(&open(&shopper, &format!("q{i}"), "hi", "").await));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/support/tickets?state=open&limit=2", app.url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let (status, page) = get(&url, &sam.token).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(gids(&page));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Every ticket once; oldest first (two opened in one millisecond go by gid).
    assert_eq!(seen.len(), opened.len(), "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    let mut expected = opened.clone();
    expected.sort();
    assert_eq!(sorted, expected);
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn with_dynamodb_roles_live_there_and_every_node_sees_them() {
    let ddb = std::env::var("WEBCHAT_TEST_DYNAMODB_URL").expect(
        "WEBCHAT_TEST_DYNAMODB_URL is not set: run scripts/test-all.sh, which starts DynamoDB Local",
    );
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(Backend::Redis, dir.path().to_path_buf());
        s.admin_token = Some(ADMIN.into());
        s.dynamodb_endpoint = Some(ddb.clone());
        s.table_prefix = prefix.clone();
        nodes.push(spawn_with(s).await);
        dirs.push(dir);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let sam = staff(a, "sam").await;
    let (status, roles) = get(
        &format!("{}/api/v1/admin/users/{}/roles", b.url, sam.uid),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(roles["roles"], json!(["staff"]));
    // Not in Redis: DynamoDB is the record.
    let redis_key = format!("wc:{{support}}:r:{}", sam.uid);
    assert_eq!(
        crate::helpers::redis_integer(&["EXISTS", &redis_key]).await,
        0
    );
    // Staff on the other node act on it at once.
    let customer = a.signup("shopper").await;
    let shopper = a.connect(&customer).await;
    let gid = ticket_of(&open(&shopper, "q1", "hello", "").await);
    let sam_socket = b.connect(&sam).await;
    assert_eq!(claim(&sam_socket, &gid).await["ok"], true);
    unstaff(a, &[&sam]).await;
    let (_, roles) = get(
        &format!("{}/api/v1/admin/users/{}/roles", b.url, sam.uid),
        ADMIN,
    )
    .await;
    assert_eq!(roles["roles"], json!([]));
}

#[tokio::test]
async fn the_shop_demo_and_the_staff_console_are_served_from_the_binary() {
    let app = crate::helpers::spawn_app(Backend::Embedded).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = no_redirects
        .get(format!("{}/demo/shop", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/demo/shop/");
    for (path, needle) in [
        ("/demo/shop/", "Corner Shop"),
        ("/demo/shop/shop.js", "Talk to staff"),
        ("/support.html", "Staff console"),
        ("/js/ticket.js", "TicketDesk"),
    ] {
        let res = http()
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.text().await.expect("body").contains(needle), "{path}");
    }
    let res = http()
        .get(format!("{}/demo/shop/nothing.js", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
}
