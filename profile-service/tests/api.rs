//! The profile API on its production back-ends: DynamoDB Local as the store, Redis as cache,
//! revocation store and update channel.

mod helpers;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, Config},
    types::Expiration,
};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use webchat_profile::AuthMode;

#[tokio::test]
async fn crud_create_read_update() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let uid = unique("alice");
    assert_error(
        app.get(&format!("/api/v1/profiles/{uid}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // What the chat server sends at signup.
    let before = now_secs() * 1000;
    let created = app.set_profile(&uid, "Alice", "", "").await;
    assert_eq!(created["uid"], uid.as_str());
    assert_eq!(created["name"], "Alice");
    assert_eq!(created["status"], "");
    assert_eq!(created["avatarUrl"], "");
    assert!(created["updatedAt"].as_i64().is_some_and(|t| t >= before));
    let keys: Vec<&String> = created.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 5, "exactly the contract's fields: {created}");

    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, created);

    let updated = app
        .set_profile(&uid, "Alice B.", "at lunch", "https://img.example/a.png")
        .await;
    assert_eq!(updated["status"], "at lunch");
    assert!(updated["updatedAt"].as_i64() >= created["updatedAt"].as_i64());
    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, updated);
    app.stop().await;
}

#[tokio::test]
async fn batch_read_skips_unknown_ids_and_bounds_the_list() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let (a, b) = (unique("a"), unique("b"));
    app.set_profile(&a, "A", "", "").await;
    app.set_profile(&b, "B", "", "").await;
    let unknown = unique("nobody");

    // First read: all misses (store), second: hits for the known ones (cache).
    for _ in 0..2 {
        let resp = app
            .get(&format!("/api/v1/profiles?ids={b},{unknown},{a}"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        let uids: Vec<&str> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|p| p["uid"].as_str())
            .collect();
        assert_eq!(
            uids,
            [b.as_str(), a.as_str()],
            "asked order, unknown absent"
        );
    }
    assert_eq!(app.metric("webchat_profile_cache_hits_total").await, 2);

    let resp = app.get(&format!("/api/v1/profiles?ids={unknown}")).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({ "items": [] }));

    let hundred: Vec<String> = (0..100).map(|i| format!("{a}x{i}")).collect();
    let resp = app
        .get(&format!("/api/v1/profiles?ids={}", hundred.join(",")))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "100 ids are allowed");

    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for query in [
        format!("?ids={}", many.join(",")),
        "?ids=".to_owned(),
        "".to_owned(),
        "?ids=a,,b".to_owned(),
        "?ids=group_x".to_owned(),
        "?ids=bad%20id".to_owned(),
    ] {
        assert_error(
            app.get(&format!("/api/v1/profiles{query}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn only_the_owner_with_a_live_token_may_update() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let (alice, mallory) = (unique("alice"), unique("mallory"));
    app.set_profile(&alice, "Alice", "", "").await;
    let body = json!({ "name": "pwned", "status": "", "avatarUrl": "" });

    let resp = app
        .put_profile(&alice, Some(&token_for(&mallory)), &body)
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;

    let resp = app.put_profile(&alice, None, &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Unauthenticated requests are refused before their body is looked at.
    let resp = app
        .http
        .put(format!("{}/api/v1/profiles/{alice}", app.base))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    for bad in ["garbage", "a.b", "", &token_for(&alice)[1..]] {
        let resp = app.put_profile(&alice, Some(bad), &body).await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    let foreign = webchat_core::tokens::TokenSigner::new(b"other key".to_vec()).sign(
        &webchat_core::tokens::Claims {
            uid: alice.clone(),
            exp: now_secs() + 60,
            jti: unique("j"),
        },
    );
    let resp = app.put_profile(&alice, Some(&foreign), &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let expired = webchat_core::tokens::TokenSigner::new(SECRET.as_bytes().to_vec()).sign(
        &webchat_core::tokens::Claims {
            uid: alice.clone(),
            exp: now_secs() - 1,
            jti: unique("j"),
        },
    );
    let resp = app.put_profile(&alice, Some(&expired), &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Logout on the chat server marks the jti revoked in Redis.
    let (token, jti) = token_with_jti(&alice);
    let resp = app.put_profile(&alice, Some(&token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK, "live token works");
    let redis = redis_pool().await;
    let _: () = redis
        .set(
            format!("wc:{{{jti}}}:revoked"),
            "1",
            Some(Expiration::EX(60)),
            None,
            false,
        )
        .await
        .expect("SET revoked");
    let resp = app.put_profile(&alice, Some(&token), &body).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let read: Value = app
        .get(&format!("/api/v1/profiles/{alice}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["name"], "pwned", "only the owner's own update landed");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_400_with_the_error_shape() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let uid = unique("bob");
    let token = token_for(&uid);
    let long_url = format!("https://e.com/{}", "a".repeat(600));
    for body in [
        json!({ "name": "x".repeat(65), "status": "", "avatarUrl": "" }),
        json!({ "name": "", "status": "", "avatarUrl": "" }),
        json!({ "name": "Bob", "status": "s".repeat(141), "avatarUrl": "" }),
        json!({ "name": "Bob", "status": "", "avatarUrl": "javascript:alert(1)" }),
        json!({ "name": "Bob", "status": "", "avatarUrl": "ftp://e.com/a.png" }),
        json!({ "name": "Bob", "status": "", "avatarUrl": long_url }),
        json!({ "name": 5, "status": "", "avatarUrl": "" }),
        json!({ "status": "" }),
        json!([1, 2]),
    ] {
        let resp = app.put_profile(&uid, Some(&token), &body).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let url = format!("{}/api/v1/profiles/{uid}", app.base);
    // Broken JSON, and a body that is not declared JSON.
    for (content_type, raw) in [
        ("application/json", "{\"name\":"),
        ("application/json", ""),
        ("text/plain", "{\"name\":\"Bob\"}"),
    ] {
        let resp = app
            .http
            .put(&url)
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(raw)
            .send()
            .await
            .expect("request");
        assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    // Nothing was stored by any of them.
    assert_error(
        app.get(&format!("/api/v1/profiles/{uid}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for path in ["/api/v1/profiles/group_x", "/api/v1/profiles/a%20b"] {
        assert_error(app.get(path).await, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_error(app.get("/nope").await, StatusCode::NOT_FOUND, "not_found").await;
    // Legacy routes do not exist in token mode.
    assert_error(
        app.get(&format!("/search/{uid}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(app.get("/getall").await, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn first_read_misses_then_hits_and_an_update_invalidates() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let uid = unique("carol");
    app.set_profile(&uid, "Carol", "", "").await;
    let path = format!("/api/v1/profiles/{uid}");
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 0);

    let first: Value = app.get(&path).await.json().await.expect("json");
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 1);
    assert_eq!(app.metric("webchat_profile_cache_hits_total").await, 0);
    let second: Value = app.get(&path).await.json().await.expect("json");
    assert_eq!(first, second);
    assert_eq!(app.metric("webchat_profile_cache_hits_total").await, 1);
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 1);

    // The cached copy is the GET shape under the documented key.
    let redis = redis_pool().await;
    let cached: Option<String> = redis
        .get(format!("wc:{{{uid}}}:profile"))
        .await
        .expect("GET");
    let cached: Value = serde_json::from_str(&cached.expect("cached")).expect("json");
    assert_eq!(cached, first);

    app.set_profile(&uid, "Carol 2", "new", "").await;
    assert_eq!(app.metric("webchat_profile_updates_total").await, 2);
    let cached: Option<String> = redis
        .get(format!("wc:{{{uid}}}:profile"))
        .await
        .expect("GET");
    assert!(cached.is_none(), "the update deleted the cached copy");
    let after: Value = app.get(&path).await.json().await.expect("json");
    assert_eq!(after["name"], "Carol 2");
    assert_eq!(app.metric("webchat_profile_cache_misses_total").await, 2);
    let again: Value = app.get(&path).await.json().await.expect("json");
    assert_eq!(again["name"], "Carol 2");
    assert_eq!(app.metric("webchat_profile_cache_hits_total").await, 2);

    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["backends"]["store"]["kind"], "dynamodb");
    assert_eq!(health["backends"]["redis"]["ok"], true);
    let requests = app.metric("webchat_profile_requests_total").await;
    assert!(requests >= 10, "{requests}");
    app.stop().await;
}

/// Readers hammer one profile while it is updated; once an update has answered, no read
/// started afterwards may return an older version (the cache fence at work).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_never_see_an_older_version_after_an_update() {
    let app = Arc::new(TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await);
    let uid = unique("dave");
    app.set_profile(&uid, "v0", "", "").await;
    // The newest version whose update has answered.
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, uid, committed, done) =
            (app.clone(), uid.clone(), committed.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let floor = committed.load(Ordering::SeqCst);
                let body: Value = app
                    .get(&format!("/api/v1/profiles/{uid}"))
                    .await
                    .json()
                    .await
                    .expect("json");
                let seen: u64 = body["name"]
                    .as_str()
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse().ok())
                    .expect("name is v<N>");
                assert!(
                    seen >= floor,
                    "stale read: saw v{seen} after v{floor} was acknowledged"
                );
                reads += 1;
            }
            reads
        }));
    }
    let started = Instant::now();
    for i in 1..=40u64 {
        app.set_profile(&uid, &format!("v{i}"), "", "").await;
        committed.store(i, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader did not see a stale version");
    }
    assert!(reads > 40, "readers ran concurrently ({reads} reads)");
    assert!(started.elapsed() < Duration::from_secs(60));
    let hits = app.metric("webchat_profile_cache_hits_total").await;
    assert!(hits > 0, "the cache was exercised");
    let last: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(last["name"], "v40");
    if let Ok(app) = Arc::try_unwrap(app) {
        app.stop().await;
    }
}

#[tokio::test]
async fn each_update_is_published_on_wc_profiles() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let uid = unique("erin");
    let subscriber = Builder::from_config(Config::from_url(&redis_url()).expect("url"))
        .build_subscriber_client()
        .expect("subscriber");
    subscriber.init().await.expect("subscriber connects");
    let mut messages = subscriber.message_rx();
    subscriber
        .subscribe("wc:profiles")
        .await
        .expect("SUBSCRIBE");

    let updated = app
        .set_profile(&uid, "Erin", "hi", "http://img.example/e.png")
        .await;
    // Other tests publish on the same channel: wait for this uid's message.
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let msg = messages.recv().await.expect("message");
            assert_eq!(msg.channel.to_string(), "wc:profiles");
            let text: String = msg.value.convert().expect("text payload");
            let profile: Value = serde_json::from_str(&text).expect("JSON payload");
            if profile["uid"] == uid.as_str() {
                return profile;
            }
        }
    })
    .await
    .expect("the update was published within 5 s");
    assert_eq!(received, updated, "the payload is the GET/PUT shape");
    let read: Value = app
        .get(&format!("/api/v1/profiles/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(received, read);
    let _ = subscriber.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn open_mode_serves_the_legacy_routes() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Open).await;
    let uid = unique("frank");
    let resp = app
        .http
        .post(format!("{}/add", app.base))
        .json(&json!({ "UID": uid, "Name": "Frank" }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let added: Value = resp.json().await.expect("json");
    assert_eq!(added["UID"], uid.as_str());
    assert_eq!(added["Name"], "Frank");

    let found: Value = app
        .get(&format!("/search/{uid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["Name"], "Frank");
    assert_eq!(found["name"], "Frank");
    assert_error(
        app.get(&format!("/search/{}", unique("ghost"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // /add only sets the name: status and avatar survive it.
    let token = token_for(&uid);
    let body = json!({ "name": "Frank", "status": "busy", "avatarUrl": "" });
    let resp = app.put_profile(&uid, Some(&token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .http
        .post(format!("{}/add", app.base))
        .json(&json!({ "UID": uid, "Name": "Franky" }))
        .send()
        .await
        .expect("request");
    let added: Value = resp.json().await.expect("json");
    assert_eq!(added["status"], "busy");
    // Open mode: a PUT without a token is accepted; one with a wrong owner is not.
    let resp = app.put_profile(&uid, None, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .put_profile(&uid, Some(&token_for(&unique("other"))), &body)
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;

    for bad in [
        json!({ "UID": "group_x", "Name": "x" }),
        json!({ "UID": uid, "Name": "" }),
        json!({ "uid": uid }),
    ] {
        let resp = app
            .http
            .post(format!("{}/add", app.base))
            .json(&bad)
            .send()
            .await
            .expect("request");
        assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    }

    // More than one Scan page (pages are 100 items): every profile, each once.
    let mut expected: Vec<String> = vec![uid.clone()];
    for i in 0..230 {
        let u = format!("{uid}_{i}");
        let resp = app
            .http
            .post(format!("{}/add", app.base))
            .json(&json!({ "UID": u, "Name": format!("n{i}") }))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK);
        expected.push(u);
    }
    let all: Value = app.get("/getall").await.json().await.expect("json");
    let mut listed: Vec<String> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["UID"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    app.stop().await;
}

#[tokio::test]
async fn open_mode_add_takes_json_whatever_its_content_type() {
    // The original client posts JSON from a bare synchronous XHR: text/plain;charset=UTF-8.
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Open).await;
    let uid = unique("gina");
    for (content_type, name) in [
        (Some("text/plain;charset=UTF-8"), "Gina"),
        (None, "Gina B"),
        (Some("application/x-www-form-urlencoded"), "Gina C"),
    ] {
        let mut req = app
            .http
            .post(format!("{}/add", app.base))
            .body(json!({ "UID": uid, "Name": name }).to_string());
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "content type {content_type:?}"
        );
        let found: Value = app
            .get(&format!("/search/{uid}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(found["Name"], name);
    }
    let resp = app
        .http
        .post(format!("{}/add", app.base))
        .header("content-type", "text/plain")
        .body("UID=x&Name=y")
        .send()
        .await
        .expect("request");
    assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = TestApp::start(Backends::DynamoAndRedis, AuthMode::Token).await;
    let resp = app.get("/api/v1/openapi.json").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert!(doc["paths"]["/api/v1/profiles/{uid}"]["put"].is_object());
    app.stop().await;
}

/// The race the fence exists for, made deterministic: a reader read v1 before the update,
/// the update invalidated, and only then does the reader try to fill.
#[tokio::test]
async fn a_stale_fill_after_invalidation_is_refused() {
    use webchat_profile::{
        cache::ProfileCache,
        profile::{Profile, Versioned},
    };
    let redis = redis_pool().await;
    let cache = ProfileCache::new(redis.clone(), Duration::from_secs(60));
    let uid = unique("gina");
    let record = |version: u64, name: &str| Versioned {
        profile: Profile {
            uid: uid.clone(),
            name: name.into(),
            status: String::new(),
            avatar_url: String::new(),
            updated_at: 1,
        },
        version,
    };
    let read_at = Instant::now();
    cache
        .invalidate(&record(2, "new"))
        .await
        .expect("invalidate");
    assert!(!cache.fill(&record(1, "old"), read_at).await.expect("fill"));
    assert_eq!(cache.get(&uid).await.expect("get"), None);
    assert!(cache.fill(&record(2, "new"), read_at).await.expect("fill"));
    assert_eq!(
        cache.get(&uid).await.expect("get").map(|p| p.name),
        Some("new".into())
    );
    // A fill whose store read is too old is not trusted either.
    let long_ago = Instant::now() - Duration::from_secs(60);
    assert!(!cache
        .fill(&record(3, "newer"), long_ago)
        .await
        .expect("fill"));
    let _ = redis.quit().await;
}

/// Every answer, errors and 404s included, carries the security headers of a JSON API.
#[tokio::test]
async fn every_answer_has_the_security_headers() {
    let app = TestApp::start(Backends::Embedded, AuthMode::Token).await;
    for path in ["/health", "/api/v1/profiles/nobody", "/no-such-page"] {
        let resp = app.get(path).await;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
    app.stop().await;
}

/// A bidirectional override makes a name display reversed (`"\u{202E}nimda"` shows as
/// "admin"): refused as `bad_request`.
#[tokio::test]
async fn names_with_bidi_controls_are_400_bad_request() {
    let app = TestApp::start(Backends::Embedded, AuthMode::Token).await;
    let uid = unique("bidi");
    let token = token_for(&uid);
    for name in ["\u{202E}nimda", "Ann\u{2066}x", "a\u{200F}b"] {
        let body = json!({ "name": name, "status": "", "avatarUrl": "" });
        let resp = app.put_profile(&uid, Some(&token), &body).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    // Right-to-left letters themselves are a name like any other.
    let body = json!({ "name": "שלום", "status": "", "avatarUrl": "" });
    let resp = app.put_profile(&uid, Some(&token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.stop().await;
}
