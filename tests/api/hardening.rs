//! Security hardening (issue 27, items 3–9), each against the real binary: connection
//! timeouts and caps, no session ids or payloads in logs, expired tokens' sockets closed,
//! login timing, file modes, security headers, and names that display reversed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

async fn post_json(url: &str, body: Value) -> reqwest::Response {
    http().post(url).json(&body).send().await.expect("request")
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A login for a uid that does not exist costs the argon2 work a wrong password costs: its
/// answer time does not tell which uids exist (it was ~0.7 ms against ~11 ms).
#[tokio::test]
async fn login_takes_as_long_for_an_unknown_uid_as_for_a_wrong_password() {
    let node = NodeProcess::start_with(&[
        "--login-max-failures",
        "0",
        "--login-max-failures-per-address",
        "0",
    ])
    .await;
    let api = format!("{}/api/v1", node.url);
    let known = signup_at(&node.url, "timing").await;
    let time_login = |uid: String| {
        let url = format!("{api}/login");
        async move {
            let started = Instant::now();
            let res = post_json(&url, json!({"uid": uid, "password": "wrong-password-1"})).await;
            let took = started.elapsed();
            assert_eq!(res.status(), 401);
            took
        }
    };
    let (mut wrong_password, mut unknown_uid) = (Vec::new(), Vec::new());
    // Interleaved, so a burst of load on the machine hits both alike.
    for _ in 0..15 {
        wrong_password.push(time_login(known.uid.clone()).await);
        unknown_uid.push(time_login(unique("nobody")).await);
    }
    let (wrong_password, unknown_uid) = (median(&mut wrong_password), median(&mut unknown_uid));
    assert!(
        unknown_uid * 3 >= wrong_password,
        "an unknown uid answers in {unknown_uid:?}, a wrong password in {wrong_password:?}: the time tells which uids exist"
    );
    assert!(node.terminate().await);
}

/// The data dir holds password hashes, messages and the token key: owner-only.
#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_0700_and_its_files_0600() {
    use std::os::unix::fs::PermissionsExt;

    let node = NodeProcess::start_with(&[]).await;
    signup_at(&node.url, "modes").await;
    let dir = node.data_dir();
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read data dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    for name in ["webchat.redb", "token_secret"] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "{name} in {files:?}"
        );
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert!(node.terminate().await);
}

/// A bidirectional override in a display name makes it show reversed: refused at signup.
#[tokio::test]
async fn signup_refuses_names_with_bidi_controls() {
    let node = NodeProcess::start_with(&[]).await;
    let api = format!("{}/api/v1", node.url);
    for name in ["\u{202E}nimda", "Ann\u{2067}x", "a\u{200E}b"] {
        let res = post_json(
            &format!("{api}/signup"),
            json!({"uid": unique("bidi"), "password": "correct horse", "name": name}),
        )
        .await;
        assert_eq!(res.status(), 400, "{name:?}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }
    let res = post_json(
        &format!("{api}/signup"),
        json!({"uid": unique("rtl"), "password": "correct horse", "name": "שלום"}),
    )
    .await;
    assert_eq!(
        res.status(),
        201,
        "right-to-left letters are a name like any other"
    );
    assert!(node.terminate().await);
}

/// The web client's files, as `--webclient-dir` would be given them: the repository's own
/// `webclient/` (with its README, npm and build files beside the client).
fn webclient_dir() -> String {
    format!("{}/webclient", env!("CARGO_MANIFEST_DIR"))
}

/// Every answer (page, asset, REST, error, socket.io) carries the CSP header with
/// `frame-ancestors 'none'`, `nosniff` and `no-referrer`; only the client's own files are
/// served, from the built-in copy and from a directory; no redirect leaves the origin.
#[tokio::test]
async fn every_response_has_the_security_headers_and_only_client_files_are_served() {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let dir = webclient_dir();
    for args in [vec![], vec!["--webclient-dir", dir.as_str()]] {
        let node = NodeProcess::start_with(&args).await;
        for (path, status) in [
            ("/", 200),
            ("/index.html", 200),
            ("/js/main.js", 200),
            ("/health", 200),
            ("/api/v1/conversations", 401),
            ("/api/v1/nothing-here", 404),
            ("/socket.io/?EIO=4&transport=polling", 200),
            ("/README.md", 404),
            ("/package.json", 404),
            ("/package-lock.json", 404),
            ("/.npmrc", 404),
            ("/scripts/vendor.sh", 404),
            ("//js", 404),
            ("//js/", 404),
            ("//evil.example/js", 404),
        ] {
            let res = client
                .get(format!("{}{path}", node.url))
                .send()
                .await
                .expect("request");
            let what = format!("GET {path} ({args:?})");
            assert_eq!(res.status(), status, "{what}");
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let csp = header("content-security-policy");
            for directive in [
                "frame-ancestors 'none'",
                "default-src 'self'",
                "script-src 'self'",
                "object-src 'none'",
            ] {
                assert!(csp.contains(directive), "{what}: CSP {csp:?}");
            }
            assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
            assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
        }
        // A directory without its slash is redirected within the origin, never to `//…`.
        let res = client
            .get(format!("{}/js", node.url))
            .send()
            .await
            .expect("request");
        if res.status().is_redirection() {
            let location = res.headers()["location"].to_str().expect("text").to_owned();
            assert!(
                location.starts_with('/') && !location.starts_with("//"),
                "{location} ({args:?})"
            );
        }
        assert!(node.terminate().await);
    }
}

/// A socket opened with a token that then expires is closed at its expiry, as a logout closes
/// it, and the token cannot open another.
#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    const TTL: Duration = Duration::from_secs(3);
    let node = NodeProcess::start_with(&["--token-ttl-secs", "3"]).await;
    let peer = signup_at(&node.url, "peer").await;
    let signed_up = Instant::now();
    let user = signup_at(&node.url, "expiring").await;
    let mut client = TestClient::connect(&node.url, &user).await;
    assert_eq!(
        client.send(&peer.uid, "e1", "before expiry").await["ok"],
        true
    );
    tokio::time::timeout(TTL + PATIENCE, async {
        while client.events.recv().await.is_some() {}
    })
    .await
    .expect("the socket closed when its token expired");
    // Expiry is in whole seconds: the token lived at least TTL - 1 s.
    assert!(
        signed_up.elapsed() >= TTL - Duration::from_secs(1),
        "closed after {:?}, before the token expired",
        signed_up.elapsed()
    );
    assert!(!client.client.is_connected());
    match TestClient::try_connect(&node.url, &user, false).await {
        Err(webchat_loadgen::client::ClientError::ConnectError { message, .. }) => {
            assert_eq!(message, "unauthorized")
        }
        other => panic!(
            "an expired token opened a socket: {:?}",
            other.map(|c| c.uid)
        ),
    }
    assert!(node.terminate().await);
}
