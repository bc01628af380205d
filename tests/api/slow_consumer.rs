//! A client that stops reading: the server's memory for it is bounded (its queue), it is
//! disconnected as a slow consumer, other users are unaffected, and it gets everything by
//! replay when it comes back.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Opens an Engine.IO 4 websocket with a small receive buffer, joins namespace `/` with
/// `token`, and returns the stream without ever reading it again (its buffers then fill up).
async fn connect_and_stop_reading(
    url: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let authority = url.trim_start_matches("http://").to_owned();
    let addr: std::net::SocketAddr = authority.parse().expect("node address");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = tcp.connect(addr).await.expect("tcp connect");
    let ws_url = format!("ws://{authority}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url, tcp)
        .await
        .expect("websocket");
    let mut connect_sent = false;
    // Engine.IO open, then our CONNECT and its ack; a ping may come in between.
    loop {
        let frame = ws.next().await.expect("a frame").expect("frame");
        let text = frame.to_text().unwrap_or("").to_owned();
        if text == "2" {
            ws.send(Message::text("3")).await.expect("pong");
        } else if text.starts_with("40") {
            return ws;
        } else if text.starts_with('0') && !connect_sent {
            ws.send(Message::text(format!("40{{\"token\":\"{token}\"}}")))
                .await
                .expect("connect");
            connect_sent = true;
        } else {
            panic!("unexpected frame while connecting: {text:?}");
        }
    }
}

/// On a loaded machine the sends below arrive slower than the emit patience (5 s) fills the
/// socket's queue, so the socket is cut off by its delivery task finding no room to emit,
/// not by the router's queue overflowing; both count it as a slow consumer (the first once
/// did not, and this test then failed about one run in three under load).
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
    let messages = (0..N).map(|i| (format!("s{i:05}"), body.clone()));
    cs.send_windowed(&slow.uid, messages, 16).await;
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
