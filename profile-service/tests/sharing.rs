//! The profile service beside two chat-server nodes on one Redis: signup on the chat server
//! creates the profile, and an update reaches a group member connected to the other node as a
//! `profile` event.

mod helpers;

use std::time::Duration;

use serde_json::{json, Value};
use webchat_loadgen::client::{ClientOptions, EventStream, SioClient};

use helpers::{redis_url, unique, Backends, TestApp};
use webchat_profile::AuthMode;

/// A chat-server node in this process.
struct ChatNode {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn chat_node(profile_url: &str, secret: &str) -> ChatNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = webchat::Settings::for_tests(dir.path().to_path_buf());
    settings.redis_url = Some(redis_url());
    settings.profile_url = Some(profile_url.to_owned());
    settings.token_secret = Some(secret.to_owned());
    let app = webchat::Application::build(settings)
        .await
        .expect("chat node");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    ChatNode {
        url,
        _stop: stop,
        _dir: dir,
    }
}

async fn signup(node: &ChatNode, name: &str) -> (String, String) {
    let uid = unique(name);
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/signup", node.url))
        .json(&json!({"uid": uid, "password": "correct horse", "name": name}))
        .send()
        .await
        .expect("signup");
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    (uid, body["token"].as_str().expect("token").to_owned())
}

async fn connect(node: &ChatNode, token: &str) -> (SioClient, EventStream) {
    let opts = ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    };
    SioClient::connect(&node.url, Some(json!({ "token": token })), opts)
        .await
        .expect("connect")
}

/// The next `chat` event of type `kind`, skipping others (presence, notify, ...).
async fn next_of_kind(events: &mut EventStream, kind: &str) -> Value {
    let wait = async {
        loop {
            let event = events.recv().await.expect("socket open");
            if event.name == "chat" && event.data["EvtType"] == kind {
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
    let mut settings = helpers::settings(Backends::DynamoAndRedis, AuthMode::Token, dir.path());
    settings.token_secret = Some(secret.into());
    let profiles = TestApp::start_with(settings, dir).await;
    let a = chat_node(&profiles.base, secret).await;
    let b = chat_node(&profiles.base, secret).await;

    let (alice, alice_token) = signup(&a, "alice").await;
    let (bob, bob_token) = signup(&b, "bob").await;
    let created: Value = profiles
        .get(&format!("/api/v1/profiles/{alice}"))
        .await
        .json()
        .await
        .expect("profile json");
    assert_eq!(
        created["name"], "alice",
        "signup created the profile: {created}"
    );

    let (ca, mut alice_events) = connect(&a, &alice_token).await;
    let (_cb, mut bob_events) = connect(&b, &bob_token).await;
    let ack = ca
        .emit_with_ack(
            "chat",
            &json!({"EvtType":"create","To":"","Body": json!([bob]).to_string()}),
            Duration::from_secs(5),
        )
        .await
        .expect("create ack");
    assert_eq!(ack["ok"], true, "{ack}");
    next_of_kind(&mut bob_events, "notify").await;
    next_of_kind(&mut alice_events, "notify").await;

    let sent = std::time::Instant::now();
    let res = profiles
        .put_profile(
            &alice,
            Some(&alice_token),
            &json!({"name": "Alice A.", "status": "on a train", "avatarUrl": ""}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let event = next_of_kind(&mut bob_events, "profile").await;
    let took = sent.elapsed();
    assert_eq!(event["From"], alice.as_str());
    let body: Value = serde_json::from_str(event["Body"].as_str().expect("Body")).expect("JSON");
    assert_eq!(body["name"], "Alice A.");
    assert_eq!(body["status"], "on a train");
    assert!(took < Duration::from_secs(1), "profile event took {took:?}");
}
