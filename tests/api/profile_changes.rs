//! `POST /api/v1/me/profile-changed` on one node without Redis: the chat server reads the
//! caller's saved profile from the profile service and sends it live to the caller's
//! contacts; it shares only what the profile service answers for the caller.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use crate::helpers::*;

/// A stand-in profile service: `GET /api/v1/profiles/{uid}` answers from `profiles`.
async fn fake_profile_service(profiles: HashMap<String, Value>) -> String {
    async fn one(
        State(profiles): State<Arc<HashMap<String, Value>>>,
        Path(uid): Path<String>,
    ) -> Result<Json<Value>, StatusCode> {
        profiles
            .get(&uid)
            .cloned()
            .map(Json)
            .ok_or(StatusCode::NOT_FOUND)
    }
    let app = Router::new()
        .route("/api/v1/profiles/{uid}", get(one))
        .with_state(Arc::new(profiles));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn profile_changed(node: &str, user: &User) -> reqwest::Response {
    http()
        .post(format!("{node}/api/v1/me/profile-changed"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("profile-changed")
}

/// The next `profile` event (other events skipped).
async fn next_profile(client: &mut TestClient) -> Value {
    loop {
        let e = client.next_chat_any().await;
        if let Some(id) = e.ack_id {
            client.client.ack(id).await.expect("ack");
        }
        if e.data["EvtType"] == "profile" {
            return e.data;
        }
    }
}

#[tokio::test]
async fn a_saved_profile_reaches_contacts_on_one_node_without_redis() {
    // Uids are known before the fake service starts: sign up on a node without a profile
    // service first, then restart the node's settings with it (same data dir).
    let dir = tempfile::tempdir().expect("dir");
    let first = spawn_with(settings(Backend::Embedded, dir.path().to_path_buf())).await;
    let alice = first.signup("alice").await;
    let bob = first.signup("bob").await;
    let carol = first.signup("carol").await;
    let mallory = first.signup("mallory").await;
    first.stop().await;

    let saved = json!({"uid": alice.uid, "name": "Alice L.", "status": "Reading", "avatarUrl": "", "updatedAt": 1_700_000_000_000_i64});
    let profiles = HashMap::from([
        (alice.uid.clone(), saved.clone()),
        // A service answering for someone else is not believed.
        (
            mallory.uid.clone(),
            json!({"uid": alice.uid, "name": "Not Alice"}),
        ),
    ]);
    let profile_url = fake_profile_service(profiles).await;
    let mut with_profiles = settings(Backend::Embedded, dir.path().to_path_buf());
    with_profiles.profile_url = Some(profile_url);
    let node = spawn_with(with_profiles).await;

    // Alice and Bob are mutual contacts; Carol only wrote to Alice (no contact).
    let mut a = node.connect(&alice).await;
    let mut b = node.connect(&bob).await;
    let c = node.connect(&carol).await;
    a.send(&bob.uid, "m1", "hi bob").await;
    b.send(&alice.uid, "m2", "hi alice").await;
    c.send(&alice.uid, "m3", "hi alice, it's carol").await;

    let res = profile_changed(&node.url, &alice).await;
    assert_eq!(res.status(), 204);
    let event = next_profile(&mut b).await;
    assert_eq!(event["From"], alice.uid.as_str());
    let body: Value = serde_json::from_str(event["Body"].as_str().expect("body")).expect("json");
    assert_eq!(body, saved, "the profile service's profile, as stored");
    // The caller's own other sockets hear it too.
    assert_eq!(next_profile(&mut a).await["From"], alice.uid.as_str());

    // No profile saved: not_found; an answer naming another user: unavailable; no token: 401.
    let res = profile_changed(&node.url, &bob).await;
    assert_eq!(res.status(), 404);
    let res = profile_changed(&node.url, &mallory).await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    let res = http()
        .post(format!("{}/api/v1/me/profile-changed", node.url))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(res.status(), 401);

    // Carol is no contact of Alice's: a message to her side proves nothing else came first.
    let mut c = c;
    b.send(&carol.uid, "m4", "marker").await;
    let marker = c.next_chat_acked().await;
    assert_eq!(marker.data["MsgID"], "m4", "carol got no profile event");
    node.stop().await;
}

#[tokio::test]
async fn without_a_profile_service_a_refresh_is_a_no_op() {
    let node = spawn_app(Backend::Embedded).await;
    let alice = node.signup("alice").await;
    assert_eq!(profile_changed(&node.url, &alice).await.status(), 204);
}
