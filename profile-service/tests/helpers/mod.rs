//! Test harness: starts the profile service in-process on 127.0.0.1:0 against the real
//! back-ends named by WEBCHAT_TEST_REDIS_URL and WEBCHAT_TEST_DYNAMODB_URL.
//!
//! A missing variable fails the test (never skips it): a silently skipped back-end test
//! would look like a passing one.

#![allow(dead_code)] // Each test file uses a different subset.

use std::time::Duration;

use fred::{clients::Pool, interfaces::ClientLike, prelude::Config};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use webchat_core::tokens::{Claims, TokenSigner};
use webchat_profile::{Application, AuthMode, Settings};

/// The key tests sign tokens with.
pub const SECRET: &str = "test-secret-for-profile-service";

/// The test Redis URL, or a failure saying how to provide one.
pub fn redis_url() -> String {
    std::env::var("WEBCHAT_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "WEBCHAT_TEST_REDIS_URL is not set: start redis-server and set it, e.g. \
             WEBCHAT_TEST_REDIS_URL=redis://127.0.0.1:6379"
        )
    })
}

/// The test DynamoDB Local URL, or a failure saying how to provide one.
pub fn dynamodb_url() -> String {
    std::env::var("WEBCHAT_TEST_DYNAMODB_URL").unwrap_or_else(|_| {
        panic!(
            "WEBCHAT_TEST_DYNAMODB_URL is not set: start DynamoDB Local and set it, e.g. \
             WEBCHAT_TEST_DYNAMODB_URL=http://127.0.0.1:8000"
        )
    })
}

/// Which back-ends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// DynamoDB store, Redis cache/revocations/publish (production).
    DynamoAndRedis,
    /// Redis as the system of record.
    RedisOnly,
    /// redb in a temp dir, nothing else.
    Embedded,
}

/// A fresh id, unique across tests sharing one Redis and one DynamoDB.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Settings for `backends` in `auth` mode, with a unique table prefix.
pub fn settings(backends: Backends, auth: AuthMode, data_dir: &std::path::Path) -> Settings {
    let mut s = Settings::for_tests(data_dir.to_path_buf());
    s.auth = auth;
    s.token_secret = Some(SECRET.into());
    s.table_prefix = unique("t_") + "_";
    match backends {
        Backends::DynamoAndRedis => {
            s.redis_url = Some(redis_url());
            s.dynamodb_endpoint = Some(dynamodb_url());
        }
        Backends::RedisOnly => s.redis_url = Some(redis_url()),
        Backends::Embedded => {}
    }
    s
}

/// A running service.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Keeps the data dir alive as long as the service.
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the service on `backends`.
    pub async fn start(backends: Backends, auth: AuthMode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(backends, auth, dir.path());
        Self::start_with(s, dir).await
    }

    /// Starts the service with explicit settings.
    pub async fn start_with(settings: Settings, dir: tempfile::TempDir) -> Self {
        let app = Application::build(settings).await.expect("service starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("service runs");
        });
        Self {
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops the service and waits until it has (releases the redb file).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    /// `PUT /api/v1/profiles/{uid}` with an optional token and a JSON body.
    pub async fn put_profile(&self, uid: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self
            .http
            .put(format!("{}/api/v1/profiles/{uid}", self.base))
            .json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    /// `PUT` that must succeed; returns the profile.
    pub async fn set_profile(&self, uid: &str, name: &str, status: &str, avatar: &str) -> Value {
        let body = serde_json::json!({ "name": name, "status": status, "avatarUrl": avatar });
        let resp = self.put_profile(uid, Some(&token_for(uid)), &body).await;
        assert_eq!(resp.status(), StatusCode::OK, "PUT {uid}");
        resp.json().await.expect("profile JSON")
    }

    /// The value of one counter in `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }
}

/// A valid token for `uid` (jti returned beside it for revocation tests).
pub fn token_with_jti(uid: &str) -> (String, String) {
    let jti = unique("jti");
    let claims = Claims {
        uid: uid.into(),
        exp: now_secs() + 3600,
        jti: jti.clone(),
    };
    (
        TokenSigner::new(SECRET.as_bytes().to_vec()).sign(&claims),
        jti,
    )
}

/// A valid token for `uid`.
pub fn token_for(uid: &str) -> String {
    token_with_jti(uid).0
}

/// Now, unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Asserts `resp` is `status` with the API's error shape and `code`.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A direct Redis connection for checks and set-up.
pub async fn redis_pool() -> Pool {
    let config = Config::from_url(&redis_url()).expect("redis url");
    let pool = fred::prelude::Builder::from_config(config)
        .build_pool(1)
        .expect("pool");
    pool.init().await.expect("redis connects");
    pool
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
