//! Open auth mode: `join` with a bare uid logs in, as the original web client does.

use futures_util::future::join_all;
use serde_json::json;
use webchat::config::AuthMode;
use webchat_loadgen::client::{ClientOptions, SioClient};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sent_right_after_connecting_is_never_lost() {
    // A separate process, so server and client really run in parallel.
    let app = NodeProcess::start_with(&["--auth", "open"]).await;
    // The original client emits `join` the moment it is connected; socketioxide answers
    // CONNECT before it runs the connect handler, so handlers must already be installed.
    for batch in 0..20 {
        let joins = (0..100).map(|i| {
            let url = app.url.clone();
            async move {
                let (client, _events) = SioClient::connect(&url, None, ClientOptions::default())
                    .await
                    .expect("connect");
                let ack = client
                    .emit_with_ack("join", &json!(format!("u{batch}_{i}")), PATIENCE)
                    .await
                    .expect("join acked");
                client.close().await;
                ack
            }
        });
        for ack in join_all(joins).await {
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }
}

#[tokio::test]
async fn open_mode_chat_works_after_join_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.auth = AuthMode::Open;
    let app = spawn_with(s).await;
    let (alice, _a) = SioClient::connect(&app.url, None, ClientOptions::default())
        .await
        .expect("connect");
    let early = alice
        .emit_with_ack(
            "chat",
            &json!({"EvtType":"message","To":"bob","MsgID":"m0","Body":"x"}),
            PATIENCE,
        )
        .await
        .expect("ack");
    assert_eq!(early["error"]["code"], "unauthorized");
    alice
        .emit_with_ack("join", &json!("alice"), PATIENCE)
        .await
        .expect("join");

    let (bob, mut bob_events) = SioClient::connect(&app.url, None, ClientOptions::default())
        .await
        .expect("connect");
    bob.emit_with_ack("join", &json!("bob"), PATIENCE)
        .await
        .expect("join");
    let ack = alice
        .emit_with_ack(
            "chat",
            &json!({"EvtType":"message","To":"bob","MsgID":"m1","Body":"hi"}),
            PATIENCE,
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
    let got = bob_events
        .recv_named("chat", PATIENCE)
        .await
        .expect("delivered");
    assert_eq!(got.data["From"], "alice");
    assert_eq!(got.data["Seq"], 1);
}
