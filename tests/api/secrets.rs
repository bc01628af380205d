//! No secrets in logs: a node logging at debug or trace level (`RUST_LOG`, for every crate)
//! never writes a password, a token, the token key, the admin token, a session id (on
//! long-polling, the engine.io sid alone lets its holder act as the user), or a message body.

use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "pw-Zebra-Quartz-9931";
const WRONG_PASSWORD: &str = "pw-Wrong-Walrus-4417";
const TOKEN_SECRET: &str = "key-Saffron-Marmot-5520";
const ADMIN_TOKEN: &str = "adm-Cobalt-Heron-7710";

async fn post(url: &str, body: Value) -> reqwest::Response {
    http().post(url).json(&body).send().await.expect("request")
}

const BODY: &str = "body-Umber-Falcon-3307";
const REPLY_BODY: &str = "body-Teal-Osprey-6642";
const POLLING_BODY: &str = "body-Ochre-Lynx-2198";

#[tokio::test]
async fn debug_logs_carry_no_password_token_key_sid_or_body() {
    logs_carry_no_secrets("debug").await;
}

#[tokio::test]
async fn trace_logs_carry_no_password_token_key_sid_or_body() {
    logs_carry_no_secrets("trace").await;
}

/// A socket.io session over long-polling, as a browser falls back to: connects with `token`,
/// sends `body` to `to`, waits for the ack, and closes. Returns the engine.io sid (the
/// polling session's credential) and the socket.io socket id.
async fn polling_session(url: &str, token: &str, to: &str, body: &str) -> (String, String) {
    let (session, socket_sid) = PollingSession::connect(url, token).await;
    let chat = json!(["chat", {"EvtType": "message", "To": to, "MsgID": "poll-1", "Body": body}]);
    session.send(&format!("421{chat}")).await;
    let ack = session.until("431").await;
    assert!(ack.contains(r#""ok":true"#), "{ack}");
    session.send("1").await;
    (session.engine_sid, socket_sid)
}

async fn logs_carry_no_secrets(level: &str) {
    let node = NodeProcess::start_captured(
        &["--token-secret", TOKEN_SECRET, "--admin-token", ADMIN_TOKEN],
        level,
    )
    .await;
    let api = format!("{}/api/v1", node.url);
    let uid = unique("secret");
    let peer = signup_at(&node.url, "peer").await;

    let res = post(
        &format!("{api}/signup"),
        json!({"uid": uid, "password": PASSWORD, "name": "S"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let signup_token = res.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let res = post(
        &format!("{api}/login"),
        json!({"uid": uid, "password": WRONG_PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 401);
    let res = post(
        &format!("{api}/login"),
        json!({"uid": uid, "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let login_token = res.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let user = User {
        uid: uid.clone(),
        token: login_token.clone(),
    };

    // Socket: connect with the token, join, chat, and a refused join.
    let mut client = TestClient::connect(&node.url, &user).await;
    let ack = client
        .client
        .emit_with_ack("join", &json!(uid), PATIENCE)
        .await
        .expect("join ack");
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(client.send(&peer.uid, "s1", BODY).await["ok"], true);
    let mut peer_client = TestClient::connect(&node.url, &peer).await;
    assert_eq!(peer_client.next_chat_acked().await.data["MsgID"], "s1");
    assert_eq!(peer_client.send(&uid, "p1", REPLY_BODY).await["ok"], true);
    assert_eq!(client.next_chat_acked().await.data["MsgID"], "p1");
    let mut sids = vec![
        client.client.sid().to_owned(),
        peer_client.client.sid().to_owned(),
    ];
    peer_client.close().await;
    // The same user on long-polling, where the engine.io sid is the credential.
    let (engine_sid, socket_sid) =
        polling_session(&node.url, &login_token, &peer.uid, POLLING_BODY).await;
    sids.extend([engine_sid, socket_sid]);

    // REST with the tokens, the admin API, then logout of both tokens.
    for token in [&signup_token, &login_token] {
        let res = http()
            .get(format!("{api}/conversations"))
            .bearer_auth(token)
            .send()
            .await
            .expect("conversations");
        assert_eq!(res.status(), 200);
    }
    let res = http()
        .get(format!("{api}/admin/calllogs?uid={uid}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin");
    assert_eq!(res.status(), 200);
    client.close().await;
    for token in [&signup_token, &login_token] {
        let res = http()
            .post(format!("{api}/logout"))
            .bearer_auth(token)
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 204);
    }
    // A revoked token presented again (refusals are logged at debug).
    assert!(TestClient::try_connect(&node.url, &user, false)
        .await
        .is_err());

    let output = node.terminate_captured().await;
    assert!(
        output.contains("DEBUG"),
        "the node did not log at {level} level, so this test proves nothing:\n{output}"
    );
    let mut leaks = Vec::new();
    let signature = |t: &str| {
        t.split_once('.')
            .map(|(_, s)| s.to_owned())
            .unwrap_or_default()
    };
    for (what, secret) in [
        ("the password", PASSWORD.to_owned()),
        ("a wrong password", WRONG_PASSWORD.to_owned()),
        ("the token key", TOKEN_SECRET.to_owned()),
        ("the admin token", ADMIN_TOKEN.to_owned()),
        ("the signup token's signature", signature(&signup_token)),
        ("the login token's signature", signature(&login_token)),
        ("the peer's token's signature", signature(&peer.token)),
        ("a message body", BODY.to_owned()),
        ("a reply's body", REPLY_BODY.to_owned()),
        ("a body sent over long-polling", POLLING_BODY.to_owned()),
    ]
    .into_iter()
    .chain(sids.into_iter().map(|sid| ("a session id", sid)))
    {
        assert!(!secret.is_empty());
        leaks.extend(
            output
                .lines()
                .filter(|l| l.contains(&secret))
                .map(|l| format!("{what}: {l}")),
        );
    }
    assert!(
        leaks.is_empty(),
        "secrets in the node's output:\n{}",
        leaks.join("\n")
    );
}
