//! Exercises `SioClient` against a scripted in-process websocket server that
//! plays the server side of Engine.IO 4 / socket.io v5 frame by frame.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webchat_loadgen::client::{ClientError, ClientOptions, DisconnectReason, SioClient};

type Ws = WebSocketStream<TcpStream>;
const T: Duration = Duration::from_secs(5);

/// Starts a one-connection server running `script`; returns its base URL.
async fn fake_server<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        script(ws).await;
    });
    (format!("http://{addr}"), handle)
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

async fn recv(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Close(_))) | None => return "<closed>".into(),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("server read: {e}"),
        }
    }
}

async fn open(ws: &mut Ws, ping_ms: u64) {
    send(
        ws,
        &format!(r#"0{{"sid":"e1","upgrades":[],"pingInterval":{ping_ms},"pingTimeout":{ping_ms},"maxPayload":1000000}}"#),
    )
    .await;
}

#[tokio::test]
async fn full_session() {
    let (url, server) = fake_server(|mut ws| async move {
        open(&mut ws, 20_000).await;
        assert_eq!(recv(&mut ws).await, r#"40{"token":"t"}"#);
        send(&mut ws, r#"40{"sid":"s1"}"#).await;
        // Heartbeat.
        send(&mut ws, "2").await;
        assert_eq!(recv(&mut ws).await, "3");
        // Event with an ack request: auto_ack answers it.
        send(&mut ws, r#"427["chat",{"x":1}]"#).await;
        assert_eq!(recv(&mut ws).await, "437[]");
        // Client emit with ack.
        let frame = recv(&mut ws).await;
        let rest = frame.strip_prefix("42").unwrap();
        let (id, payload) = rest.split_at(rest.find('[').unwrap());
        assert_eq!(payload, r#"["join","{\"raw\":1}"]"#);
        send(&mut ws, &format!(r#"43{id}[{{"ok":true}}]"#)).await;
        // Plain emit, raw frame, manual ack.
        assert_eq!(recv(&mut ws).await, r#"42["note",null]"#);
        assert_eq!(recv(&mut ws).await, "42garbage");
        assert_eq!(recv(&mut ws).await, "4399[]");
        // Event without ack request, then goodbye.
        send(&mut ws, r#"42["bye","x",2]"#).await;
        send(&mut ws, "41").await;
        let _ = recv(&mut ws).await;
    })
    .await;

    let opts = ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    };
    let (client, mut events) = SioClient::connect(&url, Some(json!({"token":"t"})), opts)
        .await
        .unwrap();
    assert_eq!(client.sid(), "s1");
    let ev = events.recv_named("chat", T).await.unwrap();
    assert_eq!(ev.data, json!({"x":1}));
    assert_eq!(ev.ack_id, Some(7));
    let reply = client
        .emit_with_ack("join", &json!("{\"raw\":1}"), T)
        .await
        .unwrap();
    assert_eq!(reply, json!({"ok":true}));
    client.emit("note", &json!(null)).await.unwrap();
    client.send_raw("42garbage").await.unwrap();
    client.ack(99).await.unwrap();
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.name.as_str(), &ev.data, &ev.extra[..]),
        ("bye", &json!("x"), &[json!(2)][..])
    );
    assert!(events.recv().await.is_none());
    assert_eq!(
        events.disconnect_reason(),
        Some(DisconnectReason::ServerDisconnect)
    );
    assert!(!client.is_connected());
    assert!(matches!(
        client.emit("late", &json!(1)).await,
        Err(ClientError::Closed)
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn connect_error_is_typed() {
    let (url, _server) = fake_server(|mut ws| async move {
        open(&mut ws, 20_000).await;
        assert_eq!(recv(&mut ws).await, "40");
        send(&mut ws, r#"44{"message":"unauthorized"}"#).await;
        let _ = recv(&mut ws).await;
    })
    .await;
    let err = SioClient::connect(&url, None, ClientOptions::default())
        .await
        .unwrap_err();
    match &err {
        ClientError::ConnectError { message, .. } => assert_eq!(message, "unauthorized"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("unauthorized"));
}

#[tokio::test]
async fn pending_ack_fails_when_connection_drops() {
    let (url, _server) = fake_server(|mut ws| async move {
        open(&mut ws, 20_000).await;
        assert_eq!(recv(&mut ws).await, "40");
        send(&mut ws, r#"40{"sid":"s1"}"#).await;
        assert!(recv(&mut ws).await.starts_with("421["));
        drop(ws); // no ack, just gone
    })
    .await;
    let (client, mut events) = SioClient::connect(&url, None, ClientOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let res = client
        .emit_with_ack("chat", &json!({}), Duration::from_secs(30))
        .await;
    assert!(matches!(res, Err(ClientError::Closed)), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(events.recv().await.is_none());
    assert!(matches!(
        client.emit_with_ack("chat", &json!({}), T).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn silent_server_hits_ping_timeout() {
    let (url, _server) = fake_server(|mut ws| async move {
        open(&mut ws, 100).await;
        assert_eq!(recv(&mut ws).await, "40");
        send(&mut ws, r#"40{"sid":"s1"}"#).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    let (_client, mut events) = SioClient::connect(&url, None, ClientOptions::default())
        .await
        .unwrap();
    assert!(tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        events.disconnect_reason(),
        Some(DisconnectReason::PingTimeout)
    );
}

#[tokio::test]
async fn close_sends_disconnect() {
    let (url, server) = fake_server(|mut ws| async move {
        open(&mut ws, 20_000).await;
        assert_eq!(recv(&mut ws).await, "40");
        send(&mut ws, r#"40{"sid":"s1"}"#).await;
        assert_eq!(recv(&mut ws).await, "41");
        assert_eq!(recv(&mut ws).await, "<closed>");
    })
    .await;
    let (client, mut events) = SioClient::connect(&url, None, ClientOptions::default())
        .await
        .unwrap();
    client.close().await;
    assert!(events.recv().await.is_none());
    assert_eq!(
        events.disconnect_reason(),
        Some(DisconnectReason::ClientClosed)
    );
    server.await.unwrap();
}

#[tokio::test]
async fn connect_times_out_without_open_packet() {
    let (url, _server) = fake_server(|ws| async move {
        let _ws = ws; // keep the connection open, say nothing
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    let opts = ClientOptions {
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let err = SioClient::connect(&url, None, opts).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}
