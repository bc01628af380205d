//! Webhooks and Web Push (§13): signed calls retried with the same delivery id, a queue that
//! survives restarts and is shared by nodes without double delivery, `message.offline` only
//! for users who are offline and have not confirmed, Web Push payloads a real receiver
//! decrypts and VAPID tokens it verifies, 410 dropping a subscription, and the target guard.
//!
//! Every receiver here is a local HTTP server on 127.0.0.1 that checks what a real one
//! would (the HMAC signature; the RFC 8291 payload decrypted with the subscription's keys;
//! the VAPID JWT's signature, audience and expiry), so the nodes run with private targets
//! allowed, except in the guard's own test.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use aes_gcm::{aead::Aead, Aes128Gcm, KeyInit, Nonce};
use axum::{extract::Request, http::HeaderMap, http::StatusCode};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::{
    ecdsa::{signature::Verifier, Signature, VerifyingKey},
    elliptic_curve::sec1::ToEncodedPoint,
    PublicKey, SecretKey,
};
use serde_json::{json, Value};
use sha2::Sha256;
use webchat::{
    webhooks::{EventKind, TicketData, WebhookEvent, WebhookService, ENDPOINTS_REFRESH},
    Application, Settings,
};
use webchat_loadgen::client::{ClientOptions, SioClient};

use crate::helpers::{
    eventually, eventually_within, http, redis_cli, run_built, settings, spawn_with, unique,
    Backend, TestApp, PATIENCE,
};

const ADMIN: &str = "webhooks-admin-token";
const SECRET: &str = "whsec-test-secret";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    /// Requests still to be failed (500) before `status` is answered.
    fail_first: AtomicUsize,
    status: AtomicU16,
}

/// A local HTTP receiver that records every request, fails the first `fail_first` with 500
/// and then answers `status`.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(fail_first: usize, status: u16) -> Self {
        let state = Arc::new(ReceiverState {
            hits: Mutex::default(),
            fail_first: AtomicUsize::new(fail_first),
            status: AtomicU16::new(status),
        });
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let state = shared.clone();
            async move {
                let path = req.uri().path().to_owned();
                let headers = req.headers().clone();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                state.hits.lock().expect("hits").push(Hit {
                    path,
                    headers,
                    body,
                });
                let failing = state
                    .fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::from_u16(state.status.load(Ordering::SeqCst))
                        .unwrap_or(StatusCode::OK)
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("hits").clone()
    }

    /// Webhook calls of `event` type.
    fn calls(&self, event: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.header("webchat-event") == event)
            .collect()
    }
}

/// Settings of a node for these tests: admin API on, private targets allowed, fast retries,
/// a one-second offline delay; on Redis, keys under `prefix` so other tests' nodes never
/// share this test's endpoints or queue.
fn hook_settings(backend: Backend, dir: PathBuf, prefix: &str) -> Settings {
    let mut s = settings(backend, dir);
    s.admin_token = Some(ADMIN.into());
    s.table_prefix = prefix.to_owned();
    s.webhooks.webhook_allow_private = true;
    s.webhooks.webhook_retry_base_ms = 50;
    s.webhooks.webhook_retry_max_ms = 200;
    s.webhooks.offline_notify_secs = 1;
    s
}

async fn node(backend: Backend, prefix: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_with(hook_settings(backend, dir.path().to_path_buf(), prefix)).await;
    (app, dir)
}

/// [`node`], with a handle on its webhook service.
async fn node_with_hooks(
    backend: Backend,
    prefix: &str,
) -> (TestApp, WebhookService, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let built = Application::build(hook_settings(backend, data_dir.clone(), prefix))
        .await
        .expect("build");
    let hooks = built.webhooks();
    (run_built(built, data_dir), hooks, dir)
}

/// `DELETE /admin/webhooks/{id}`: the status.
async fn unregister(url: &str, id: &str) -> u16 {
    http()
        .delete(format!("{url}/api/v1/admin/webhooks/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

/// `POST /admin/webhooks`: (status, body).
async fn register(url: &str, body: Value) -> (u16, Value) {
    let res = http()
        .post(format!("{url}/api/v1/admin/webhooks"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn register_ok(url: &str, target: &str, events: &[&str]) -> String {
    let (status, body) = register(
        url,
        json!({"url": target, "events": events, "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

async fn list_webhooks(url: &str) -> Vec<Value> {
    let body: Value = http()
        .get(format!("{url}/api/v1/admin/webhooks"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    body["items"].as_array().expect("items").clone()
}

/// Checks `Webchat-Signature` as a receiver would: HMAC-SHA256(secret, "<t>.<body>").
fn assert_signed(hit: &Hit) {
    let header = hit.header("webchat-signature");
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let t: i64 = t.parse().expect("t");
    assert!((chrono_now() - t).abs() < 300, "t is the send time");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "valid signature");
    assert_eq!(
        hit.json()["id"],
        hit.header("webchat-delivery"),
        "the body's id is the delivery id"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Creates a group of `members` as `creator` (a socket that connects and goes).
async fn create_group(app: &TestApp, creator: &crate::helpers::User, members: &[&str]) -> String {
    let client = app.connect(creator).await;
    let ack = client
        .chat(json!({"EvtType": "create", "To": "", "Body": json!(members).to_string()}))
        .await;
    client.close().await;
    ack["To"]
        .as_str()
        .or_else(|| ack["Group"].as_str())
        .or_else(|| ack["gid"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| ack.to_string())
}

#[tokio::test]
async fn a_failed_call_is_retried_with_the_same_delivery_id_and_a_valid_signature() {
    let receiver = Receiver::start(1, 200).await;
    let (app, _dir) = node(Backend::Embedded, "webchat_").await;
    register_ok(
        &app.url,
        &format!("{}/hook", receiver.url),
        &["group.created"],
    )
    .await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    create_group(&app, &alice, &[&bob.uid]).await;

    eventually("a failed call and its retry", || async {
        receiver.calls("group.created").len() >= 2
    })
    .await;
    let calls = receiver.calls("group.created");
    assert_eq!(
        calls[0].header("webchat-delivery"),
        calls[1].header("webchat-delivery")
    );
    assert_eq!(calls[0].body, calls[1].body, "the same event again");
    for call in &calls {
        assert_signed(call);
        assert_eq!(call.path, "/hook");
    }
    let event = calls[1].json();
    assert_eq!(event["type"], "group.created");
    assert_eq!(event["data"]["creator"], alice.uid);
    let members: BTreeSet<String> = event["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        members,
        BTreeSet::from([alice.uid.clone(), bob.uid.clone()])
    );
    eventually("the retry counted as delivered", || async {
        app.metric("webchat_webhook_delivered_total").await == 1
    })
    .await;
    assert!(app.metric("webchat_webhook_retried_total").await >= 1);
    assert_eq!(app.metric("webchat_webhook_queued_total").await, 1);
}

#[tokio::test]
async fn presence_and_ticket_events_reach_the_endpoints_that_take_them() {
    let receiver = Receiver::start(0, 204).await;
    let other = Receiver::start(0, 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let built = Application::build(hook_settings(
        Backend::Embedded,
        data_dir.clone(),
        "webchat_",
    ))
    .await
    .expect("build");
    let hooks = built.webhooks();
    let app = run_built(built, data_dir);
    register_ok(
        &app.url,
        &receiver.url,
        &["presence", "ticket.opened", "ticket.claimed"],
    )
    .await;
    register_ok(&app.url, &other.url, &["group.created"]).await;

    let carol = app.signup("carol").await;
    let client = app.connect(&carol).await;
    eventually("carol's presence", || async {
        receiver
            .calls("presence")
            .iter()
            .any(|c| c.json()["data"] == json!({"uid": carol.uid, "state": "online"}))
    })
    .await;
    client.close().await;

    // The support desk emits these when a ticket opens and when it is claimed (§10's body).
    let make_staff = |user: crate::helpers::User| {
        let url = app.url.clone();
        async move {
            let res = reqwest::Client::new()
                .put(format!("{url}/api/v1/admin/users/{}/roles", user.uid))
                .bearer_auth(ADMIN)
                .json(&json!({ "roles": ["staff"] }))
                .send()
                .await
                .expect("put roles");
            assert_eq!(res.status(), 200);
            user
        }
    };
    let dana = make_staff(app.signup("dana").await).await;
    let erik = make_staff(app.signup("erik").await).await;
    let customer = app.connect(&carol).await;
    let open = |msg_id: &'static str, topic: &'static str| {
        let customer = &customer;
        async move {
            let opened = customer
                .chat(json!({"EvtType": "support", "MsgID": msg_id, "Body": "is it back?", "Topic": topic}))
                .await;
            opened["Ticket"].as_str().expect("a ticket").to_owned()
        }
    };
    let gid = open("t1", "sku-42").await;
    let other_gid = open("t2", "sku-43").await;
    let (dana_socket, erik_socket) = (app.connect(&dana).await, app.connect(&erik).await);
    let claim = |gid: &str| json!({"EvtType": "claim", "To": gid});
    // Two won claims, one per ticket...
    assert_eq!(dana_socket.chat(claim(&gid)).await["ok"], true);
    assert_eq!(erik_socket.chat(claim(&other_gid)).await["ok"], true);
    // ...a re-sent claim of a holder, and two losing claims: none of these tells anyone.
    assert_eq!(dana_socket.chat(claim(&gid)).await["ok"], true);
    let lost = erik_socket.chat(claim(&gid)).await;
    assert_eq!(lost["error"]["code"], "conflict", "{lost}");
    let lost = dana_socket.chat(claim(&other_gid)).await;
    assert_eq!(lost["error"]["code"], "conflict", "{lost}");
    // The desk queues its calls before it acks, so every call of those claims is queued now:
    // once the queue has made every queued call, the receiver has them all.
    eventually("every queued call made", || async {
        app.metric("webchat_webhook_delivered_total").await
            == app.metric("webchat_webhook_queued_total").await
    })
    .await;
    let claimed_calls = receiver.calls("ticket.claimed");
    let claims: BTreeSet<(String, String)> = claimed_calls
        .iter()
        .map(|c| {
            let data = &c.json()["data"];
            (
                data["gid"].as_str().unwrap_or_default().to_owned(),
                data["staff"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        claims,
        BTreeSet::from([
            (gid.clone(), dana.uid.clone()),
            (other_gid.clone(), erik.uid.clone())
        ]),
        "one ticket.claimed per won claim, naming the winner"
    );
    assert_eq!(
        claimed_calls.len(),
        2,
        "none for the re-sent or the losing claims: {claimed_calls:?}"
    );
    let opened_calls = receiver.calls("ticket.opened");
    assert_eq!(opened_calls.len(), 2, "one per ticket");
    let opened = opened_calls
        .iter()
        .map(Hit::json)
        .find(|o| o["data"]["gid"] == gid.as_str())
        .expect("the first ticket's ticket.opened");
    assert_eq!(opened["data"]["customer"], carol.uid.as_str());
    assert_eq!(opened["data"]["topic"], "sku-42");
    assert!(opened["data"]["openedAt"].as_i64().is_some_and(|t| t > 0));
    let first_claim = claimed_calls
        .iter()
        .find(|c| c.json()["data"]["gid"] == gid.as_str())
        .expect("the first ticket's ticket.claimed");
    let claimed = first_claim.json();
    assert!(claimed["data"]["claimedAt"].as_i64().is_some_and(|t| t > 0));

    // The same claim emitted again (through `emit`, the service's own entry point) is the
    // same delivery: its id comes from the endpoint, the type and the event, so a receiver
    // that saw the first drops it.
    let data = &claimed["data"];
    let again = TicketData {
        gid: gid.clone(),
        customer: carol.uid.clone(),
        topic: "sku-42".into(),
        staff: Some(dana.uid.clone()),
        opened_at: data["openedAt"].as_i64().expect("openedAt"),
        claimed_at: data["claimedAt"].as_i64(),
    };
    assert_eq!(
        hooks
            .emit(WebhookEvent::TicketClaimed(again))
            .await
            .expect("emit"),
        1
    );
    eventually("the claim emitted again", || async {
        receiver.calls("ticket.claimed").len() == 3
    })
    .await;
    let resent = receiver
        .calls("ticket.claimed")
        .into_iter()
        .nth(2)
        .expect("third call");
    assert_eq!(
        resent.header("webchat-delivery"),
        first_claim.header("webchat-delivery"),
        "a re-emitted event keeps its delivery id"
    );
    let other_claim = claimed_calls
        .iter()
        .find(|c| c.json()["data"]["gid"] == other_gid.as_str())
        .expect("the second ticket's ticket.claimed");
    assert_ne!(
        other_claim.header("webchat-delivery"),
        first_claim.header("webchat-delivery"),
        "another event, another delivery id"
    );
    // A new event through `emit`: delivered like the desk's.
    let hooks_data = TicketData {
        gid: "group_ticket1".into(),
        customer: carol.uid.clone(),
        topic: "sku-7".into(),
        staff: None,
        opened_at: 1_000,
        claimed_at: None,
    };
    assert_eq!(
        hooks
            .emit(WebhookEvent::TicketOpened(hooks_data))
            .await
            .expect("emit"),
        1
    );
    eventually("the emitted ticket.opened", || async {
        receiver.calls("ticket.opened").len() == 3
    })
    .await;
    for hit in receiver.hits() {
        assert_signed(&hit);
    }
    assert!(
        other
            .hits()
            .iter()
            .all(|h| h.header("webchat-event") == "group.created"),
        "an endpoint gets only the types it takes"
    );
}

#[tokio::test]
async fn guests_cause_no_presence_calls_and_users_do() {
    let receiver = Receiver::start(0, 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = hook_settings(Backend::Embedded, dir.path().to_path_buf(), "webchat_");
    settings.guests = true;
    settings.presence_offline_grace_ms = 0;
    let app = spawn_with(settings).await;
    register_ok(&app.url, &receiver.url, &["presence"]).await;

    // A guest comes and goes first...
    let (guest, mut guest_events) = SioClient::connect(
        &app.url,
        Some(json!({ "guest": true })),
        ClientOptions::default(),
    )
    .await
    .expect("guest connect");
    let session = guest_events
        .recv_named("session", PATIENCE)
        .await
        .expect("session event")
        .data;
    let guest_uid = session["uid"].as_str().expect("guest uid").to_owned();
    guest.close().await;
    // ...then a user, whose calls show that presence calls are made (and come after any the
    // guest would have caused: changes are announced in order).
    let uma = app.signup("uma").await;
    app.connect(&uma).await.close().await;
    let states_of = |uid: &str| -> Vec<Value> {
        receiver
            .calls("presence")
            .iter()
            .map(Hit::json)
            .filter(|c| c["data"]["uid"] == uid)
            .map(|c| c["data"]["state"].clone())
            .collect()
    };
    eventually("the user's online and offline calls", || async {
        let states = states_of(&uma.uid);
        states.contains(&json!("online")) && states.contains(&json!("offline"))
    })
    .await;
    eventually("every queued call made", || async {
        app.metric("webchat_webhook_delivered_total").await
            == app.metric("webchat_webhook_queued_total").await
    })
    .await;
    assert_eq!(
        states_of(&guest_uid),
        Vec::<Value>::new(),
        "none for the guest"
    );
    assert_eq!(app.metric("webchat_webhook_queued_total").await, 2);
}

/// A call pending (failing) when the node stops arrives once a new node runs on `backend`.
async fn pending_calls_survive_a_restart(backend: Backend) {
    let prefix = format!("{}_", unique("wh"));
    let receiver = Receiver::start(usize::MAX, 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let app = spawn_with(hook_settings(backend, data_dir.clone(), &prefix)).await;
    register_ok(&app.url, &receiver.url, &["group.created"]).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    create_group(&app, &alice, &[&bob.uid]).await;
    eventually("a failing attempt", || async {
        !receiver.calls("group.created").is_empty()
    })
    .await;
    let delivery = receiver.calls("group.created")[0].header("webchat-delivery");
    app.stop().await;

    // The receiver recovers while no node runs; the call is still queued.
    receiver.state.fail_first.store(0, Ordering::SeqCst);
    let failed = receiver.hits().len();
    let app = spawn_with(hook_settings(backend, data_dir, &prefix)).await;
    eventually("the pending call after the restart", || async {
        receiver.hits().len() > failed
    })
    .await;
    let after = &receiver.hits()[failed..];
    assert!(after
        .iter()
        .all(|h| h.header("webchat-delivery") == delivery));
    assert_signed(&after[0]);
    eventually("delivered counted by the new node", || async {
        app.metric("webchat_webhook_delivered_total").await == 1
    })
    .await;
}

#[tokio::test]
async fn pending_calls_survive_a_restart_of_an_embedded_node() {
    pending_calls_survive_a_restart(Backend::Embedded).await;
}

#[tokio::test]
async fn pending_calls_survive_a_restart_of_a_redis_node() {
    pending_calls_survive_a_restart(Backend::Redis).await;
}

/// Two nodes share the queue: every call arrives, none twice.
async fn two_nodes_deliver_each_call_once(backend: Backend) {
    let prefix = format!("{}_", unique("wh"));
    let receiver = Receiver::start(0, 200).await;
    let (a, _da) = node(backend, &prefix).await;
    let (b, b_hooks, _db) = node_with_hooks(backend, &prefix).await;
    register_ok(&a.url, &receiver.url, &["group.created"]).await;
    // Registered on a; b learns of it within its registry refresh.
    eventually_within(
        "b to know the endpoint",
        ENDPOINTS_REFRESH + PATIENCE,
        || async { b_hooks.has_endpoints_for(EventKind::GroupCreated) },
    )
    .await;
    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    const GROUPS: usize = 12;
    let mut made = Vec::new();
    for i in 0..GROUPS {
        let at = if i % 2 == 0 { &a } else { &b };
        made.push(create_group(at, &alice, &[&bob.uid]).await);
    }
    eventually("every call", || async {
        receiver.calls("group.created").len() >= GROUPS
    })
    .await;
    let due_key = format!("wc:{{{prefix}wh}}:due");
    let queued = || async {
        let answer = redis_cli(backend, &["ZCARD", &due_key]).await;
        answer.trim().parse::<i64>().unwrap_or(-1)
    };
    eventually("an empty queue", || async { queued().await == 0 }).await;
    let delivered = a.metric("webchat_webhook_delivered_total").await
        + b.metric("webchat_webhook_delivered_total").await;
    assert_eq!(delivered, GROUPS as i64);
    let calls = receiver.calls("group.created");
    let ids: BTreeSet<String> = calls.iter().map(|c| c.header("webchat-delivery")).collect();
    assert_eq!(calls.len(), GROUPS, "no call twice");
    assert_eq!(ids.len(), GROUPS);
}

#[tokio::test]
async fn two_redis_nodes_sharing_the_queue_deliver_each_call_once() {
    for _ in 0..3 {
        two_nodes_deliver_each_call_once(Backend::Redis).await;
    }
}

#[tokio::test]
async fn two_redis_cluster_nodes_sharing_the_queue_deliver_each_call_once() {
    two_nodes_deliver_each_call_once(Backend::RedisCluster).await;
}

/// Events of a type no endpoint takes are dropped where they happen (no task, no store
/// read), so each node keeps which types some endpoint takes: at once on the node that
/// registers or deletes one, within [`ENDPOINTS_REFRESH`] on the others.
#[tokio::test]
async fn an_endpoint_registered_on_one_node_is_used_by_another_within_the_refresh() {
    let prefix = format!("{}_", unique("wh"));
    let receiver = Receiver::start(0, 200).await;
    let (a, a_hooks, _da) = node_with_hooks(Backend::Redis, &prefix).await;
    let (b, b_hooks, _db) = node_with_hooks(Backend::Redis, &prefix).await;
    assert!(!a_hooks.has_endpoints_for(EventKind::Presence));
    assert!(!b_hooks.has_endpoints_for(EventKind::Presence));

    let id = register_ok(&a.url, &receiver.url, &["presence"]).await;
    assert!(
        a_hooks.has_endpoints_for(EventKind::Presence),
        "at once on the node that registered it"
    );
    // The documented bound, plus a moment for the registry read itself.
    let bound = ENDPOINTS_REFRESH + std::time::Duration::from_secs(2);
    eventually_within("b to know the endpoint", bound, || async {
        b_hooks.has_endpoints_for(EventKind::Presence)
    })
    .await;
    let bea = b.signup("bea").await;
    let socket = b.connect(&bea).await;
    eventually("bea's presence call, sent by b", || async {
        receiver
            .calls("presence")
            .iter()
            .any(|c| c.json()["data"] == json!({"uid": bea.uid, "state": "online"}))
    })
    .await;
    socket.close().await;

    assert_eq!(unregister(&a.url, &id).await, 204);
    assert!(
        !a_hooks.has_endpoints_for(EventKind::Presence),
        "at once on the node that deleted it"
    );
    eventually_within("b to know it is gone", bound, || async {
        !b_hooks.has_endpoints_for(EventKind::Presence)
    })
    .await;
}

#[tokio::test]
async fn no_offline_notice_for_a_user_who_is_online_and_confirms() {
    let receiver = Receiver::start(0, 200).await;
    let (app, _dir) = node(Backend::Embedded, "webchat_").await;
    register_ok(&app.url, &receiver.url, &["message.offline"]).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let carol = app.signup("carol").await;
    let sender = app.connect(&alice).await;
    let mut online = app.connect(&bob).await;

    sender.send(&bob.uid, "m-bob", "hello bob").await;
    let got = online.next_chat_acked().await;
    assert_eq!(got.data["Body"], "hello bob");
    // Carol has never connected: her message is the control, sent after bob's.
    sender
        .send(&carol.uid, "m-carol", "hello carol, this is alice")
        .await;
    eventually("carol's notice", || async {
        !receiver.calls("message.offline").is_empty()
    })
    .await;
    eventually("every queued call made", || async {
        app.metric("webchat_webhook_delivered_total").await
            == app.metric("webchat_webhook_queued_total").await
    })
    .await;
    let notices = receiver.calls("message.offline");
    assert_eq!(notices.len(), 1, "none for bob: {notices:?}");
    let data = &notices[0].json()["data"];
    assert_eq!(data["uid"], carol.uid);
    assert_eq!(data["from"], alice.uid);
    assert_eq!(data["fromName"], "alice");
    assert_eq!(data["MsgID"], "m-carol");
    assert_eq!(data["preview"], "hello carol, this is alice");
    assert_signed(&notices[0]);
}

/// A browser's subscription keys, held by the test's push service to decrypt with.
struct Browser {
    secret: SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        Self {
            secret: SecretKey::random(&mut rand::rngs::OsRng),
            auth: rand::random(),
        }
    }

    fn public(&self) -> Vec<u8> {
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    fn subscription(&self, endpoint: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.public()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// Decrypts an RFC 8291 `aes128gcm` body as a browser does.
    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().expect("rs"));
        assert!(rs >= 18, "record size");
        let id_len = usize::from(body[20]);
        let key_id = &body[21..21 + id_len];
        let sealed = &body[21 + id_len..];
        let sender = PublicKey::from_sec1_bytes(key_id).expect("sender key");
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&self.public());
        info.extend_from_slice(key_id);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes().as_slice())
            .expand(&info, &mut ikm)
            .expect("ikm");
        let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        content
            .expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .expect("cek");
        content
            .expand(b"Content-Encoding: nonce\0", &mut nonce)
            .expect("nonce");
        let mut plain = Aes128Gcm::new_from_slice(&cek)
            .expect("cipher")
            .decrypt(Nonce::from_slice(&nonce), sealed)
            .expect("the payload decrypts with the subscription's keys");
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last-record delimiter");
        plain
    }
}

/// Verifies the VAPID `Authorization` header as a push service does; returns its claims.
fn verify_vapid(hit: &Hit, public_key: &str) -> Value {
    let header = hit.header("authorization");
    let rest = header.strip_prefix("vapid t=").expect("vapid scheme");
    let (jwt, k) = rest.split_once(", k=").expect("k");
    assert_eq!(k, public_key, "k is the server's VAPID key");
    let (input, signature) = jwt.rsplit_once('.').expect("signed JWT");
    let mut parts = input.split('.');
    let head: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts.next().expect("header"))
            .expect("b64"),
    )
    .expect("header JSON");
    assert_eq!(head["alg"], "ES256");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts.next().expect("claims"))
            .expect("b64"),
    )
    .expect("claims JSON");
    let key =
        VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).expect("b64")).expect("P-256 key");
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).expect("b64"))
        .expect("64-byte signature");
    key.verify(input.as_bytes(), &signature)
        .expect("the JWT verifies with the VAPID public key");
    claims
}

async fn vapid_key(url: &str) -> String {
    let body: Value = http()
        .get(format!("{url}/api/v1/push/vapid"))
        .send()
        .await
        .expect("vapid")
        .json()
        .await
        .expect("json");
    body["publicKey"].as_str().expect("publicKey").to_owned()
}

async fn subscribe(url: &str, token: &str, subscription: &Value) -> u16 {
    http()
        .post(format!("{url}/api/v1/push/subscriptions"))
        .bearer_auth(token)
        .json(subscription)
        .send()
        .await
        .expect("subscribe")
        .status()
        .as_u16()
}

async fn subscriptions(url: &str, token: &str) -> Vec<Value> {
    let body: Value = http()
        .get(format!("{url}/api/v1/push/subscriptions"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    body["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn web_push_reaches_the_push_endpoint_encrypted_with_a_valid_vapid_jwt() {
    let push = Receiver::start(0, 201).await;
    let (app, _dir) = node(Backend::Embedded, "webchat_").await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let browser = Browser::new();
    let endpoint = format!("{}/push/device-1", push.url);
    assert_eq!(
        subscribe(&app.url, &bob.token, &browser.subscription(&endpoint)).await,
        201
    );
    let public_key = vapid_key(&app.url).await;

    let sender = app.connect(&alice).await;
    sender
        .send(&bob.uid, "m1", "Are we still on for lunch tomorrow?")
        .await;
    eventually("the push message", || async { !push.hits().is_empty() }).await;
    let hit = &push.hits()[0];
    assert_eq!(hit.path, "/push/device-1");
    assert_eq!(hit.header("content-encoding"), "aes128gcm");
    assert!(hit.header("ttl").parse::<u64>().expect("TTL") > 0);
    let claims = verify_vapid(hit, &public_key);
    assert_eq!(claims["aud"], push.url, "audience is the endpoint's origin");
    let exp = claims["exp"].as_i64().expect("exp");
    let now = chrono_now();
    assert!(
        exp > now && exp <= now + 24 * 3600,
        "exp within 24 h: {exp}"
    );
    assert!(claims["sub"]
        .as_str()
        .is_some_and(|s| s.starts_with("mailto:")));

    let payload: Value = serde_json::from_slice(&browser.decrypt(&hit.body)).expect("JSON");
    assert_eq!(
        payload,
        json!({
            "type": "message.offline",
            "fromName": "alice",
            "preview": "Are we still on for lunch tomorrow?",
            "conversation": alice.uid,
        }),
        "the sender's name and a preview, nothing more"
    );
    eventually("counted", || async {
        app.metric("webchat_push_delivered_total").await == 1
    })
    .await;
}

#[tokio::test]
async fn a_subscription_made_through_one_redis_node_is_pushed_from_another() {
    let push = Receiver::start(0, 201).await;
    let prefix = format!("{}_", unique("wh"));
    let (a, _da) = node(Backend::Redis, &prefix).await;
    let (b, b_hooks, _db) = node_with_hooks(Backend::Redis, &prefix).await;
    // Nobody uses push yet: b plans no offline checks at all.
    b_hooks
        .refresh_endpoint_kinds()
        .await
        .expect("registry read");
    assert!(!b_hooks.tells_offline(), "no endpoint, no push in use");

    let alice = a.signup("alice").await;
    let bob = a.signup("bob").await;
    let browser = Browser::new();
    let endpoint = format!("{}/push/device-1", push.url);
    assert_eq!(
        subscribe(&a.url, &bob.token, &browser.subscription(&endpoint)).await,
        201
    );
    // What every node re-reads with the registry (every ENDPOINTS_REFRESH): the mark the
    // subscription left in Redis.
    b_hooks
        .refresh_endpoint_kinds()
        .await
        .expect("registry read");
    assert!(b_hooks.tells_offline(), "b learns that push is in use");

    let sender = b.connect(&alice).await;
    sender.send(&bob.uid, "m1", "sent through b").await;
    eventually("the push message from b", || async {
        !push.hits().is_empty()
    })
    .await;
    let payload: Value =
        serde_json::from_slice(&browser.decrypt(&push.hits()[0].body)).expect("JSON");
    assert_eq!(payload["preview"], "sent through b");
}

#[tokio::test]
async fn a_410_from_the_push_service_drops_the_subscription() {
    let gone = Receiver::start(0, 410).await;
    let live = Receiver::start(1, 201).await;
    let (app, _dir) = node(Backend::Embedded, "webchat_").await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let (old, new) = (Browser::new(), Browser::new());
    let gone_endpoint = format!("{}/push/old", gone.url);
    let live_endpoint = format!("{}/push/new", live.url);
    assert_eq!(
        subscribe(&app.url, &bob.token, &old.subscription(&gone_endpoint)).await,
        201
    );
    assert_eq!(
        subscribe(&app.url, &bob.token, &new.subscription(&live_endpoint)).await,
        201
    );
    assert_eq!(subscriptions(&app.url, &bob.token).await.len(), 2);

    let sender = app.connect(&alice).await;
    sender.send(&bob.uid, "m1", "ping").await;
    eventually("the dead subscription removed", || async {
        subscriptions(&app.url, &bob.token).await.len() == 1
    })
    .await;
    let left = subscriptions(&app.url, &bob.token).await;
    assert_eq!(left[0]["endpoint"], live_endpoint);
    assert_eq!(gone.hits().len(), 1, "a 410 is not retried");
    // The live device's push service failed once: retried, then delivered.
    eventually("the live device's push after a retry", || async {
        live.hits().len() == 2
    })
    .await;
    let payload: Value = serde_json::from_slice(&new.decrypt(&live.hits()[1].body)).expect("JSON");
    assert_eq!(payload["preview"], "ping");
    assert_eq!(
        app.metric("webchat_push_subscriptions_removed_total").await,
        1
    );
    eventually("retry counted", || async {
        app.metric("webchat_push_retried_total").await >= 1
            && app.metric("webchat_push_delivered_total").await == 1
    })
    .await;
}

#[tokio::test]
async fn the_target_guard_refuses_loopback_unless_private_targets_are_allowed() {
    let receiver = Receiver::start(0, 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut strict = hook_settings(Backend::Embedded, dir.path().to_path_buf(), "webchat_");
    strict.webhooks.webhook_allow_private = false;
    let app = spawn_with(strict).await;
    let https_loopback = receiver.url.replace("http://", "https://");
    for target in [
        receiver.url.clone(),
        format!("{https_loopback}/hook"),
        "https://localhost/hook".to_owned(),
        "https://10.0.0.1/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/hook".to_owned(),
        "https://[::ffff:127.0.0.1]/hook".to_owned(),
        "https://0.0.0.0/hook".to_owned(),
    ] {
        let (status, body) = register(
            &app.url,
            json!({"url": target, "events": ["presence"], "secret": SECRET}),
        )
        .await;
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let bob = app.signup("bob").await;
    let browser = Browser::new();
    assert_eq!(
        subscribe(
            &app.url,
            &bob.token,
            &browser.subscription(&format!("{}/push", receiver.url))
        )
        .await,
        400
    );
    assert!(list_webhooks(&app.url).await.is_empty(), "nothing stored");
    assert!(subscriptions(&app.url, &bob.token).await.is_empty());
    app.stop().await;

    // The same targets with private ones allowed (development and tests).
    let (open, _dir) = node(Backend::Embedded, "webchat_").await;
    register_ok(&open.url, &receiver.url, &["presence"]).await;
    let carol = open.signup("carol").await;
    assert_eq!(
        subscribe(
            &open.url,
            &carol.token,
            &browser.subscription(&format!("{}/push", receiver.url))
        )
        .await,
        201
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_400_and_nothing_stored() {
    let (app, _dir) = node(Backend::Embedded, "webchat_").await;
    for body in [
        json!({"url": "not a url", "events": ["presence"], "secret": SECRET}),
        json!({"url": "ftp://127.0.0.1/x", "events": ["presence"], "secret": SECRET}),
        json!({"url": "http://127.0.0.1:9/x", "events": ["message.sent"], "secret": SECRET}),
        json!({"url": "http://127.0.0.1:9/x", "events": [], "secret": SECRET}),
        json!({"url": "http://127.0.0.1:9/x", "events": ["presence"], "secret": ""}),
        json!({"url": "http://127.0.0.1:9/x", "events": ["presence"]}),
        json!({"url": "http://127.0.0.1:9/x", "events": "presence", "secret": SECRET}),
    ] {
        let (status, answer) = register(&app.url, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    assert!(list_webhooks(&app.url).await.is_empty());
    let no_admin = http()
        .post(format!("{}/api/v1/admin/webhooks", app.url))
        .json(&json!({"url": "http://127.0.0.1:9/x", "events": ["presence"], "secret": SECRET}))
        .send()
        .await
        .expect("request");
    assert_eq!(no_admin.status(), 401);

    let bob = app.signup("bob").await;
    let good = Browser::new().subscription("http://127.0.0.1:9/push");
    let mut bad_key = good.clone();
    bad_key["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65]));
    let mut bad_auth = good.clone();
    bad_auth["keys"]["auth"] = json!("c2hvcnQ");
    let mut no_keys = good.clone();
    no_keys.as_object_mut().expect("object").remove("keys");
    let mut bad_url = good.clone();
    bad_url["endpoint"] = json!("javascript:alert(1)");
    for body in [bad_key, bad_auth, no_keys, bad_url] {
        assert_eq!(subscribe(&app.url, &bob.token, &body).await, 400, "{body}");
    }
    assert!(subscriptions(&app.url, &bob.token).await.is_empty());

    // Registered, listed without its secret, deleted.
    let id = register_ok(&app.url, "http://127.0.0.1:9/x", &["presence", "presence"]).await;
    let listed = list_webhooks(&app.url).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["events"], json!(["presence"]));
    assert!(
        listed[0].get("secret").is_none(),
        "secrets are never listed"
    );
    let delete = |id: String| {
        let url = app.url.clone();
        async move {
            http()
                .delete(format!("{url}/api/v1/admin/webhooks/{id}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("delete")
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(id.clone()).await, 204);
    assert_eq!(delete(id).await, 404);
    assert!(list_webhooks(&app.url).await.is_empty());
}
