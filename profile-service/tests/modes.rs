//! The other back-end choices: embedded redb (no Redis, no DynamoDB) and Redis as the system
//! of record.

mod helpers;

use helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use webchat_profile::AuthMode;

#[tokio::test]
async fn embedded_mode_crud() {
    let app = TestApp::start(Backends::Embedded, AuthMode::Token).await;
    let uid = unique("hank");
    assert_error(
        app.get(&format!("/api/v1/profiles/{uid}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let created = app.set_profile(&uid, "Hank", "", "").await;
    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, created);
    let updated = app
        .set_profile(&uid, "Hank H.", "away", "https://e.com/h.png")
        .await;
    let body: Value = app
        .get(&format!("/api/v1/profiles?ids={uid},nobody"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!({ "items": [updated] }));
    let resp = app
        .put_profile(&uid, Some(&token_for("someone")), &json!({ "name": "x" }))
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backends"]["store"]["kind"], "embedded");
    assert!(health["backends"].get("redis").is_none());
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 0);
    assert!(app.dir.path().join("profiles.redb").exists());

    app.stop().await;
}

#[tokio::test]
async fn embedded_data_survives_a_restart_and_uses_the_data_dir_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    // The chat server's key file, as it writes it.
    std::fs::write(data.join("token_secret"), "feedface\n").expect("write key");
    let mut settings = webchat_profile::Settings::for_tests(data.clone());
    settings.token_secret = None;
    let app = TestApp::start_with(settings.clone(), tempfile::tempdir().expect("tempdir")).await;
    let uid = unique("ivy");
    let signer = webchat_core::tokens::TokenSigner::new(b"feedface".to_vec());
    let token = signer.sign(&webchat_core::tokens::Claims {
        uid: uid.clone(),
        exp: now_secs() + 60,
        jti: "j".into(),
    });
    let body = json!({ "name": "Ivy", "status": "", "avatarUrl": "" });
    let resp = app.put_profile(&uid, Some(&token), &body).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "token signed with the file's key"
    );
    // A token signed with another key is refused.
    let resp = app.put_profile(&uid, Some(&token_for(&uid)), &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;

    let app = TestApp::start_with(settings, tempfile::tempdir().expect("tempdir")).await;
    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["name"], "Ivy");
    app.stop().await;
}

#[tokio::test]
async fn redis_as_the_system_of_record() {
    let app = TestApp::start(Backends::RedisOnly, AuthMode::Open).await;
    let uid = unique("jack");
    let created = app.set_profile(&uid, "Jack", "", "").await;
    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, created);
    let resp = app
        .http
        .post(format!("{}/add", app.base))
        .json(&json!({ "UID": uid, "Name": "Jackie" }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let other = unique("kim");
    app.set_profile(&other, "Kim", "here", "").await;
    let body: Value = app
        .get(&format!("/api/v1/profiles?ids={uid},{other},nobody"))
        .await
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Jackie", "Kim"]);
    // The record is a hash under the documented key.
    let redis = redis_pool().await;
    let name: Option<String> = fred::interfaces::HashesInterface::hget(
        &redis,
        format!("wc:{{{uid}}}:profile_rec"),
        "name",
    )
    .await
    .expect("HGET");
    assert_eq!(name.as_deref(), Some("Jackie"));
    // The shared Redis holds other tests' profiles too: ours must be listed, once each.
    let all: Value = app.get("/getall").await.json().await.expect("json");
    let listed: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["UID"].as_str())
        .filter(|u| *u == uid || *u == other)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["backends"]["store"]["kind"], "redis");
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_key_the_key_shared_through_redis_is_used() {
    use fred::interfaces::KeysInterface;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = helpers::settings(Backends::RedisOnly, AuthMode::Token, dir.path());
    settings.token_secret = None;
    let app = TestApp::start_with(settings, dir).await;
    // The service created it (SET NX) if the chat server had not; either way it is there.
    let redis = redis_pool().await;
    let key: Option<String> = redis.get("wc:token_secret").await.expect("GET");
    let key = key.expect("wc:token_secret exists");
    let uid = unique("lou");
    let token = webchat_core::tokens::TokenSigner::new(key.into_bytes()).sign(
        &webchat_core::tokens::Claims {
            uid: uid.clone(),
            exp: now_secs() + 60,
            jti: unique("j"),
        },
    );
    let body = json!({ "name": "Lou", "status": "", "avatarUrl": "" });
    let resp = app.put_profile(&uid, Some(&token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app.put_profile(&uid, Some(&token_for(&uid)), &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn cors_is_same_origin_unless_configured() {
    let app = TestApp::start(Backends::Embedded, AuthMode::Token).await;
    let resp = app
        .http
        .get(format!("{}/api/v1/profiles?ids=a", app.base))
        .header("origin", "https://chat.example")
        .send()
        .await
        .expect("request");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    app.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = helpers::settings(Backends::Embedded, AuthMode::Token, dir.path());
    settings.cors_origins = Some("https://chat.example, https://other.example".into());
    let app = TestApp::start_with(settings, dir).await;
    let resp = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/profiles/a", app.base),
        )
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://chat.example")
    );
    app.stop().await;
}
