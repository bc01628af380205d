//! The profile service beside two chat-server nodes on one Redis: signup on the chat server
//! creates the profile, and an update reaches a group member connected to the other node as a
//! `profile` event. (Here, not in the profile service's tests: the profile service does not
//! depend on the chat server, the chat server's tests may start both.)

use std::time::Duration;

use serde_json::{json, Value};
use webchat_profile::{Application as ProfileService, AuthMode, Settings as ProfileSettings};

use crate::helpers::*;

/// A profile service on DynamoDB and Redis, with `secret` as token key; its URL.
async fn profile_service(secret: &str, dir: &tempfile::TempDir) -> String {
    let mut settings = ProfileSettings::for_tests(dir.path().to_path_buf());
    settings.auth = AuthMode::Token;
    settings.token_secret = Some(secret.into());
    settings.table_prefix = unique("t") + "_";
    settings.redis_url = Some(redis_url());
    settings.dynamodb_endpoint = Some(dynamodb_url());
    let app = ProfileService::build(settings)
        .await
        .expect("profile service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    url
}

/// A chat-server node on the shared Redis that tells contacts of profile changes.
async fn chat_node(profile_url: &str, secret: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(Backend::Redis, dir.keep());
    settings.profile_url = Some(profile_url.to_owned());
    settings.token_secret = Some(secret.to_owned());
    spawn_with(settings).await
}

/// The next `chat` event of type `kind`, skipping others (presence, notify, ...).
async fn next_of_kind(client: &mut TestClient, kind: &str) -> Value {
    let wait = async {
        loop {
            let event = client.next_chat_any().await;
            if event.data["EvtType"] == kind {
                return event.data;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind} event in time"))
}

#[tokio::test]
async fn signup_creates_the_profile_and_updates_reach_a_group_member_on_another_node() {
    // Both services sign and verify with one key, as in production.
    let secret = "shared-secret-for-sharing-test";
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = profile_service(secret, &dir).await;
    let a = chat_node(&profiles, secret).await;
    let b = chat_node(&profiles, secret).await;

    let alice = signup_at(&a.url, "alice").await;
    let bob = signup_at(&b.url, "bob").await;
    let created: Value = http()
        .get(format!("{profiles}/api/v1/profiles/{}", alice.uid))
        .send()
        .await
        .expect("profile request")
        .json()
        .await
        .expect("profile json");
    assert_eq!(
        created["name"], "alice",
        "signup created the profile: {created}"
    );

    let mut alice_socket = TestClient::try_connect(&a.url, &alice, true)
        .await
        .expect("alice connects");
    let mut bob_socket = TestClient::try_connect(&b.url, &bob, true)
        .await
        .expect("bob connects");
    let ack = alice_socket
        .chat(json!({"EvtType":"create","To":"","Body": json!([bob.uid]).to_string()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    next_of_kind(&mut bob_socket, "notify").await;
    next_of_kind(&mut alice_socket, "notify").await;

    let sent = std::time::Instant::now();
    let res = http()
        .put(format!("{profiles}/api/v1/profiles/{}", alice.uid))
        .bearer_auth(&alice.token)
        .json(&json!({"name": "Alice A.", "status": "on a train", "avatarUrl": ""}))
        .send()
        .await
        .expect("profile update");
    assert_eq!(res.status(), 200);
    let event = next_of_kind(&mut bob_socket, "profile").await;
    let took = sent.elapsed();
    assert_eq!(event["From"], alice.uid.as_str());
    let body: Value = serde_json::from_str(event["Body"].as_str().expect("Body")).expect("JSON");
    assert_eq!(body["name"], "Alice A.");
    assert_eq!(body["status"], "on a train");
    assert!(took < Duration::from_secs(1), "profile event took {took:?}");
}
