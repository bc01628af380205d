//! A client that stops reading: the server's memory for it is bounded (its queue), it is
//! disconnected as a slow consumer, other users are unaffected, and it gets everything by
//! replay when it comes back.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Opens an Engine.IO 4 websocket, joins namespace `/` with `token`, and returns the stream
/// without ever reading it again (its TCP receive buffer then fills up).
async fn connect_and_stop_reading(
    url: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let open = ws.next().await.expect("open packet").expect("frame");
    assert!(open.to_text().is_ok_and(|t| t.starts_with('0')), "{open:?}");
    ws.send(Message::text(format!("40{{\"token\":\"{token}\"}}")))
        .await
        .expect("connect");
    let connected = ws.next().await.expect("connect ack").expect("frame");
    assert!(
        connected.to_text().is_ok_and(|t| t.starts_with("40")),
        "{connected:?}"
    );
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_catches_up_by_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(Backend::Embedded, dir.path().to_path_buf());
    s.socket_queue = 256;
    let app = spawn_with(s).await;
    let sender = app.signup("sender").await;
    let slow = app.signup("slow").await;
    let (ann, bob) = (app.signup("ann").await, app.signup("bob").await);

    let stalled = connect_and_stop_reading(&app.url, &slow.token).await;
    app.wait_for_connections(1).await;
    let cs = app.connect(&sender).await;
    let body = "x".repeat(8 * 1024);
    const N: usize = 1_500;
    // Far more than the socket's queue, its socket.io buffer and the TCP buffers hold.
    for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|i| {
            let (cs, to, body) = (&cs, slow.uid.clone(), body.clone());
            async move { cs.send(&to, &format!("s{i:05}"), &body).await }
        });
        for ack in futures_util::future::join_all(sends).await {
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }
    eventually(
        "the stalled socket to be cut off as a slow consumer",
        || async { app.metric("webchat_slow_consumers_total").await >= 1 },
    )
    .await;
    // Others are unaffected.
    let ca = app.connect(&ann).await;
    let mut cb = app.connect(&bob).await;
    ca.send(&bob.uid, "still-here", "hello").await;
    assert_eq!(cb.next_chat_acked().await.data["MsgID"], "still-here");
    drop(stalled);

    // Back with a client that reads: everything, in order, once.
    let mut back = app.connect(&slow).await;
    let mut seen = Vec::with_capacity(N);
    while seen.len() < N {
        let e = back.next_chat_acked().await;
        seen.push(e.data["MsgID"].as_str().expect("MsgID").to_owned());
    }
    let expected: Vec<String> = (0..N).map(|i| format!("s{i:05}")).collect();
    assert_eq!(seen, expected);
}
