//! Abuse limits: failed-login throttling shared by the nodes, a socket's event rate, sockets
//! per user, and new sockets per address.

use serde_json::json;
use webchat_loadgen::client::ClientError;

use crate::helpers::*;

async fn login(url: &str, uid: &str, password: &str) -> (u16, serde_json::Value) {
    let res = http()
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"uid": uid, "password": password}))
        .send()
        .await
        .expect("login");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn failed_logins_are_throttled_per_uid_on_every_node_and_success_clears_the_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Redis, dir.path().to_path_buf());
    s.login_max_failures = 3;
    let a = spawn_with(s.clone()).await;
    let dir_b = tempfile::tempdir().expect("tempdir");
    s.data_dir = dir_b.path().to_path_buf();
    let b = spawn_with(s).await;
    let victim = a.signup("victim").await;
    let other = a.signup("other").await;

    // A successful login clears earlier failures.
    for _ in 0..2 {
        assert_eq!(login(&a.url, &victim.uid, "wrong password").await.0, 401);
    }
    assert_eq!(login(&b.url, &victim.uid, "correct horse").await.0, 200);
    for _ in 0..3 {
        assert_eq!(login(&a.url, &victim.uid, "wrong password").await.0, 401);
    }
    // Now refused on the other node too, even with the right password.
    let (status, body) = login(&b.url, &victim.uid, "correct horse").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other users are unaffected.
    assert_eq!(login(&b.url, &other.uid, "correct horse").await.0, 200);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.login_max_failures_per_address = 4;
    let app = spawn_with(s).await;
    let user = app.signup("user").await;
    // Guessing over many uids (and unparseable ones) from one address.
    for uid in ["nobody1", "nobody2", "not a uid!", "nobody3"] {
        assert_eq!(login(&app.url, uid, "guess").await.0, 401);
    }
    let (status, body) = login(&app.url, &user.uid, "correct horse").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

async fn login_via(url: &str, forwarded_for: &str, uid: &str, password: &str) -> u16 {
    http()
        .post(format!("{url}/api/v1/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"uid": uid, "password": password}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_failed_logins_count_per_forwarded_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.login_max_failures_per_address = 3;
    s.trusted_proxies = Some("127.0.0.0/8".into());
    let app = spawn_with(s).await;
    let user = app.signup("user").await;
    // An attacker behind the balancer exhausts its own address's allowance...
    for uid in ["nobody1", "nobody2", "nobody3"] {
        assert_eq!(login_via(&app.url, "203.0.113.66", uid, "guess").await, 401);
    }
    assert_eq!(
        login_via(&app.url, "203.0.113.66", &user.uid, "correct horse").await,
        429
    );
    // ...and a left-most address it writes itself does not buy it a fresh one...
    assert_eq!(
        login_via(
            &app.url,
            "198.51.100.9, 203.0.113.66",
            &user.uid,
            "correct horse"
        )
        .await,
        429
    );
    // ...while everybody else behind the same balancer still logs in.
    assert_eq!(
        login_via(&app.url, "203.0.113.7", &user.uid, "correct horse").await,
        200
    );
}

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_for_header_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.login_max_failures_per_address = 3;
    let app = spawn_with(s).await;
    let user = app.signup("user").await;
    for (i, uid) in ["nobody1", "nobody2", "nobody3"].into_iter().enumerate() {
        let spoofed = format!("203.0.113.{i}");
        assert_eq!(login_via(&app.url, &spoofed, uid, "guess").await, 401);
    }
    assert_eq!(
        login_via(&app.url, "203.0.113.99", &user.uid, "correct horse").await,
        429,
        "a client cannot escape its address's limit by naming another"
    );
}

#[tokio::test]
async fn a_socket_over_its_event_rate_gets_rate_limited_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.socket_rate = 1.0;
    s.socket_burst = 5.0;
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let sends = (0..20).map(|i| {
        let ca = &ca;
        let to = bob.uid.clone();
        async move { ca.send(&to, &format!("m{i}"), "spam").await }
    });
    let acks = futures_util::future::join_all(sends).await;
    let ok = acks.iter().filter(|a| a["ok"] == true).count();
    let limited = acks
        .iter()
        .filter(|a| a["error"]["code"] == "rate_limited")
        .count();
    assert_eq!(ok + limited, 20, "every send answered: {acks:?}");
    assert!(
        (5..=7).contains(&ok),
        "the burst (plus refill) went through: {ok}"
    );
    // The bucket refills: the socket can send again (bounded wait, no fixed sleep).
    let mut i = 0;
    eventually("a send to succeed after the refill", || {
        i += 1;
        let ca = &ca;
        let to = bob.uid.clone();
        async move { ca.send(&to, &format!("later{i}"), "hi").await["ok"] == true }
    })
    .await;
}

#[tokio::test]
async fn a_user_holds_at_most_the_configured_sockets_per_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.max_sockets_per_user = 2;
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    let first = app.connect(&alice).await;
    let _second = app.connect(&alice).await;
    app.wait_for_connections(2).await;
    match TestClient::try_connect(&app.url, &alice, false).await {
        Err(ClientError::ConnectError { message, .. }) => assert_eq!(message, "rate_limited"),
        other => panic!("third socket accepted: {:?}", other.map(|c| c.uid)),
    }
    // Closing one frees a place.
    first.close().await;
    app.wait_for_connections(1).await;
    TestClient::try_connect(&app.url, &alice, false)
        .await
        .expect("a place is free again");
}

/// Opens an Engine.IO 4 websocket, asks to join namespace `/` with `token` and hangs up at
/// once: the server may still be in its connect middleware when the connection goes.
async fn connect_and_hang_up(url: &str, token: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let authority = url.trim_start_matches("http://");
    let ws_url = format!("ws://{authority}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let open = ws.next().await.expect("a frame").expect("frame");
    assert!(open.to_text().unwrap_or("").starts_with('0'), "{open:?}");
    ws.send(Message::text(format!("40{{\"token\":\"{token}\"}}")))
        .await
        .expect("connect");
    drop(ws); // no close handshake: the TCP connection just goes
}

#[tokio::test]
async fn sockets_that_hang_up_while_connecting_give_their_places_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.max_sockets_per_user = 2;
    s.connect_rate = 0.0;
    let app = spawn_with(s).await;
    let alice = app.signup("alice").await;
    for _ in 0..40 {
        connect_and_hang_up(&app.url, &alice.token).await;
    }
    // Some of the 40 were subscribed by the middleware and then never added to the
    // namespace, so no socket handler ever runs for them; they must still be released.
    let url = app.url.clone();
    // They are released a few seconds after they hung up (the sweep's grace).
    let patience = std::time::Duration::from_secs(30);
    eventually_within("both of alice's places to be free again", patience, || {
        let (url, alice) = (&url, &alice);
        async move {
            let Ok(first) = TestClient::try_connect(url, alice, false).await else {
                return false;
            };
            let second = TestClient::try_connect(url, alice, false).await;
            first.close().await;
            match second {
                Ok(second) => {
                    second.close().await;
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn new_sockets_from_one_address_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.connect_rate = 0.1;
    s.connect_burst = 3.0;
    let app = spawn_with(s).await;
    let users = [
        app.signup("u1").await,
        app.signup("u2").await,
        app.signup("u3").await,
        app.signup("u4").await,
    ];
    let mut open = Vec::new();
    for user in &users[..3] {
        open.push(app.connect(user).await);
    }
    match TestClient::try_connect(&app.url, &users[3], false).await {
        Err(ClientError::ConnectError { message, .. }) => assert_eq!(message, "rate_limited"),
        other => panic!("fourth connect accepted: {:?}", other.map(|c| c.uid)),
    }
}
