//! Signup, login, logout and socket authentication.

use serde_json::{json, Value};
use webchat_loadgen::client::ClientError;

use crate::helpers::*;

#[tokio::test]
async fn signup_login_logout_and_revocation_is_seen_by_every_node() {
    let nodes = spawn_cluster(2).await;
    let user = nodes[0].signup("acct").await;

    let login = http()
        .post(format!("{}/api/v1/login", nodes[1].url))
        .json(&json!({"uid": user.uid, "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.expect("json");
    assert_eq!(body["uid"], user.uid.as_str());
    assert!(body["expiresAt"].as_i64().expect("expiresAt") > chrono_now());

    // A token issued by node 0 works on node 1.
    let client = TestClient::try_connect(&nodes[1].url, &user, false)
        .await
        .expect("connect");
    client.close().await;

    let logout = http()
        .post(format!("{}/api/v1/logout", nodes[0].url))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);

    for node in &nodes {
        let refused = TestClient::try_connect(&node.url, &user, false).await;
        match refused {
            Err(ClientError::ConnectError { message, .. }) => assert_eq!(message, "unauthorized"),
            other => panic!(
                "revoked token accepted on {}: {:?}",
                node.url,
                other.map(|c| c.uid)
            ),
        }
        let again = http()
            .post(format!("{}/api/v1/logout", node.url))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("logout again");
        assert_eq!(again.status(), 401);
    }
}

#[tokio::test]
async fn bad_signups_get_the_error_shape_and_the_right_status() {
    let app = spawn_app(Backend::Embedded).await;
    let taken = app.signup("dup").await;
    let cases = [
        (json!({"uid": taken.uid, "password": "password1"}), 409),
        (json!({"uid": "group_x", "password": "password1"}), 400),
        (json!({"uid": "has space", "password": "password1"}), 400),
        (json!({"uid": "x".repeat(65), "password": "password1"}), 400),
        (json!({"uid": unique("short"), "password": "1234567"}), 400),
        (
            json!({"uid": unique("long"), "password": "x".repeat(257)}),
            400,
        ),
        (json!({"password": "password1"}), 400),
    ];
    for (body, status) in cases {
        let res = http()
            .post(format!("{}/api/v1/signup", app.url))
            .json(&body)
            .send()
            .await
            .expect("signup");
        assert_eq!(res.status(), status, "{body}");
        let err: Value = res.json().await.expect("json");
        assert!(err["error"]["code"].is_string(), "{err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }
    let wrong = http()
        .post(format!("{}/api/v1/login", app.url))
        .json(&json!({"uid": taken.uid, "password": "wrong password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn a_socket_without_a_valid_token_is_refused() {
    let app = spawn_app(Backend::Embedded).await;
    for token in ["", "garbage", "a.b"] {
        let nobody = User {
            uid: "nobody".into(),
            token: token.into(),
        };
        match TestClient::try_connect(&app.url, &nobody, false).await {
            Err(ClientError::ConnectError { message, .. }) => assert_eq!(message, "unauthorized"),
            other => panic!("token {token:?} accepted: {:?}", other.map(|c| c.uid)),
        }
    }
}

#[tokio::test]
async fn join_as_someone_else_is_forbidden_and_disconnects() {
    let app = spawn_app(Backend::Embedded).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let mut client = app.connect(&alice).await;
    let own = client
        .client
        .emit_with_ack("join", &json!(alice.uid), PATIENCE)
        .await
        .expect("join ack");
    assert_eq!(own["ok"], true);
    let other = client
        .client
        .emit_with_ack("join", &json!(bob.uid), PATIENCE)
        .await
        .expect("join ack");
    assert_eq!(other["error"]["code"], "forbidden");
    // The server then closes the socket.
    while client.events.recv().await.is_some() {}
    assert!(!client.client.is_connected());
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test]
async fn cors_is_same_origin_by_default_and_opens_for_configured_origins() {
    let strict = spawn_app(Backend::Embedded).await;
    let preflight = |url: String| async move {
        http()
            .request(reqwest::Method::OPTIONS, format!("{url}/api/v1/login"))
            .header("Origin", "https://chat.example")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .expect("preflight")
    };
    let res = preflight(strict.url.clone()).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.cors_origins = Some("https://chat.example".into());
    let open = spawn_with(s).await;
    let res = preflight(open.url.clone()).await;
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://chat.example")
    );

    // socket.io's long-polling handshake, Engine.IO 3 (1.x/2.x clients) and 4, follows the
    // same policy, with credentials (socket.io-client 1.x/2.x polls withCredentials).
    let handshake = |url: String, eio: u8, origin: &'static str| async move {
        http()
            .get(format!("{url}/socket.io/?EIO={eio}&transport=polling"))
            .header("Origin", origin)
            .send()
            .await
            .expect("polling handshake")
    };
    let header = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for eio in [3, 4] {
        let res = handshake(strict.url.clone(), eio, "https://chat.example").await;
        assert_eq!(res.status(), 200, "EIO={eio}");
        assert_eq!(header(&res, "access-control-allow-origin"), None);

        let res = handshake(open.url.clone(), eio, "https://chat.example").await;
        assert_eq!(res.status(), 200, "EIO={eio}");
        assert_eq!(
            header(&res, "access-control-allow-origin").as_deref(),
            Some("https://chat.example"),
            "EIO={eio}"
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        let res = handshake(open.url.clone(), eio, "https://evil.example").await;
        assert_eq!(header(&res, "access-control-allow-origin"), None);
    }
    let res = http()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/socket.io/?EIO=4&transport=polling", open.url),
        )
        .header("Origin", "https://chat.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .expect("socket.io preflight");
    assert!(res.status().is_success());
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("https://chat.example")
    );
}

#[tokio::test]
async fn logout_closes_the_tokens_open_sockets_on_every_node() {
    let nodes = spawn_cluster(2).await;
    let alice = nodes[0].signup("alice").await;
    let bob = nodes[0].signup("bob").await;
    // A second token of alice's (another device).
    let res = http()
        .post(format!("{}/api/v1/login", nodes[0].url))
        .json(&json!({"uid": alice.uid, "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    let body: serde_json::Value = res.json().await.expect("json");
    let other_device = User {
        uid: alice.uid.clone(),
        token: body["token"].as_str().expect("token").to_owned(),
    };
    let mut logged_out = nodes[1].connect(&alice).await;
    let still_in = nodes[1].connect(&other_device).await;
    let mut cb = nodes[0].connect(&bob).await;

    let res = http()
        .post(format!("{}/api/v1/logout", nodes[0].url))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), 204);
    // The socket on the other node opened with that token is closed by the server.
    let closed = tokio::time::timeout(PATIENCE, async {
        while logged_out.events.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the logged-out socket stayed open");
    // The other device's socket keeps working.
    let ack = still_in.send(&bob.uid, "after-logout", "still here").await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(cb.next_chat_acked().await.data["MsgID"], "after-logout");
}
