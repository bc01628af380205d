//! Bad input: every refusal has the right code and the socket stays usable.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn malformed_chat_events_get_error_acks_and_the_socket_keeps_working() {
    let app = spawn_app(Backend::Embedded).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let sender = app.connect(&alice).await;
    let mut receiver = app.connect(&bob).await;

    let cases: Vec<(Value, &str)> = vec![
        (json!("{not json"), "bad_request"),
        (json!(17), "bad_request"),
        (
            json!({"EvtType": "shout", "To": bob.uid, "MsgID": "x1"}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "MsgID": "x2", "Body": "hi"}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "To": bob.uid, "Body": "hi"}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "To": "no such!", "MsgID": "x3", "Body": "hi"}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "To": bob.uid, "MsgID": "x".repeat(65), "Body": "hi"}),
            "bad_request",
        ),
        (
            json!({"EvtType": "message", "To": bob.uid, "MsgID": "x4", "Body": "b".repeat(16 * 1024 + 1)}),
            "too_large",
        ),
        (
            json!({"EvtType": "message", "To": unique("ghost"), "MsgID": "x5", "Body": "hi"}),
            "not_found",
        ),
        (
            json!({"EvtType": "message", "To": bob.uid, "MsgID": "x6", "Body": {"nested": [1, 2]}}),
            "bad_request",
        ),
    ];
    for (event, code) in cases {
        let ack = sender.chat(event.clone()).await;
        assert_eq!(ack["error"]["code"], code, "event {event} got {ack}");
        assert!(ack["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // Without an ack callback the error comes back as an `error` chat event naming the MsgID.
    let mut sender = sender;
    sender
        .client
        .emit("chat", &json!({"EvtType": "bogus", "MsgID": "noack-1"}))
        .await
        .expect("emit");
    let error = sender.next_chat().await;
    assert_eq!(error.data["EvtType"], "error");
    assert_eq!(error.data["MsgID"], "noack-1");
    let body: Value =
        serde_json::from_str(error.data["Body"].as_str().expect("body")).expect("json body");
    assert_eq!(body["code"], "bad_request");
    assert!(error.ack_id.is_none(), "error events are live-only");

    // Raw garbage frames on another socket of the same user harm nobody else.
    let vandal = app.connect(&alice).await;
    for raw in [
        "42",
        "42[",
        "42[\"chat\"]",
        "42[\"chat\",null]",
        "4299999999999999999999[\"chat\",{}]",
        "4x",
        "451-[\"chat\",{\"_placeholder\":true,\"num\":0}]",
    ] {
        let _ = vandal.client.send_raw(raw).await;
    }
    vandal.close().await;

    // A JSON-string payload (as the original client sends) works, and nothing refused was stored.
    let ok = sender
        .chat(json!(
            json!({"EvtType": "message", "To": bob.uid, "MsgID": "good", "Body": "still here"})
                .to_string()
        ))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let delivered = receiver.next_chat_acked().await;
    assert_eq!(delivered.data["MsgID"], "good");
    assert_eq!(
        delivered.data["Seq"], 1,
        "refused events must not consume Seqs"
    );
}
