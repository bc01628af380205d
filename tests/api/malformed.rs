//! Robustness: a storm of malformed payloads from one user while two others chat on the
//! same node (a `webchat` process, so a panic anywhere shows in its output).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use webchat_loadgen::client::{ClientError, SioClient};

use crate::helpers::*;

/// Payloads in the storm: 8,000 one at a time, then a burst of 2,000 without waiting.
const SEQUENTIAL: usize = 8_000;
const BURST: usize = 2_000;
/// A uid nobody has: anything that slipped through validation would reach no one.
const GHOST: &str = "ghost-nobody-here";

/// How one malformed payload is sent.
enum Send {
    /// `42<id><args>`: an event with an ack request.
    Ack(String),
    /// `45<n>-<id><args>` and its binary attachments.
    BinaryAck(String, Vec<Vec<u8>>),
    /// A text frame as is, followed by a probe.
    Frame(String),
    /// A binary frame as is, followed by a probe.
    Binary(Vec<u8>),
}

struct Plan {
    name: &'static str,
    send: Send,
    /// The outcomes allowed (`ack:<code>`, `event:<code>`, `ignored`, `disconnected`).
    expect: &'static [&'static str],
    /// Sent once every `every` rounds (large frames are sent less often).
    every: usize,
}

fn plan(name: &'static str, send: Send, expect: &'static [&'static str]) -> Plan {
    Plan {
        name,
        send,
        expect,
        every: 1,
    }
}

const BAD: &[&str] = &["ack:bad_request"];

fn plans(gid: &str) -> Vec<Plan> {
    let env = |fields: &str| format!(r#"["chat",{{{fields}}}]"#);
    let deep_open = "[".repeat(10_000);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let big_body = "b".repeat(16 * 1024 + 1);
    let oversized = |n: usize| {
        format!(
            r#"42["chat",{{"EvtType":"message","To":"{GHOST}","MsgID":"big","Body":"{}"}}]"#,
            "b".repeat(n)
        )
    };
    vec![
        plan("EvtType is a number", Send::Ack(env(r#""EvtType":7"#)), BAD),
        plan(
            "To is an array",
            Send::Ack(env(
                r#""EvtType":"message","To":["x"],"MsgID":"m","Body":"x""#,
            )),
            BAD,
        ),
        plan(
            "Body is an object",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":{{"a":[1]}}"#
            ))),
            BAD,
        ),
        plan(
            "Seq is a string",
            Send::Ack(env(&format!(
                r#""EvtType":"delivery","To":"{GHOST}","MsgID":"m","Seq":"12""#
            ))),
            BAD,
        ),
        plan(
            "Seq is negative",
            Send::Ack(env(&format!(
                r#""EvtType":"delivery","To":"{GHOST}","MsgID":"m","Seq":-5"#
            ))),
            BAD,
        ),
        plan(
            "Seq beyond u64",
            Send::Ack(env(&format!(
                r#""EvtType":"display","To":"{GHOST}","MsgID":"m","Seq":123456789012345678901234567890"#
            ))),
            BAD,
        ),
        plan(
            "Seq 1e400",
            Send::Ack(env(&format!(
                r#""EvtType":"display","To":"{GHOST}","MsgID":"m","Seq":1e400"#
            ))),
            BAD,
        ),
        plan(
            "Body 1e308",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":1e308"#
            ))),
            BAD,
        ),
        plan("a number", Send::Ack(r#"["chat",17]"#.into()), BAD),
        plan(
            "plain text",
            Send::Ack(r#"["chat","just text"]"#.into()),
            BAD,
        ),
        plan("null", Send::Ack(r#"["chat",null]"#.into()), BAD),
        plan("an array", Send::Ack(r#"["chat",[1,2,3]]"#.into()), BAD),
        plan("no argument", Send::Ack(r#"["chat"]"#.into()), BAD),
        plan("true", Send::Ack(r#"["chat",true]"#.into()), BAD),
        plan(
            "unknown EvtType",
            Send::Ack(env(&format!(
                r#""EvtType":"rm -rf /","To":"{GHOST}","MsgID":"m""#
            ))),
            BAD,
        ),
        plan(
            "server-only EvtType notify",
            Send::Ack(env(&format!(
                r#""EvtType":"notify","To":"{GHOST}","MsgID":"m","Body":"[]""#
            ))),
            BAD,
        ),
        plan(
            "spoofed presence",
            Send::Ack(env(&format!(
                r#""EvtType":"presence","To":"{GHOST}","Body":"offline""#
            ))),
            BAD,
        ),
        plan(
            "Body over the limit",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":"{big_body}""#
            ))),
            &["ack:too_large"],
        ),
        plan(
            "MsgID of 65 bytes",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"{}","Body":"x""#,
                "m".repeat(65)
            ))),
            BAD,
        ),
        plan(
            "MsgID with a control character",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"a\u0007b","Body":"x""#
            ))),
            BAD,
        ),
        plan(
            "member list nested 100 deep",
            Send::Ack(env(&format!(
                r#""EvtType":"create","To":"","Body":{}{}"#,
                "[".repeat(100),
                "]".repeat(100)
            ))),
            BAD,
        ),
        plan(
            "10,000 [ unclosed",
            Send::Ack(format!(r#"["chat",{deep_open}"#)),
            &["ack:bad_request", "disconnected"],
        ),
        plan(
            "10,000 [ balanced",
            Send::Ack(format!(r#"["chat",{deep}]"#)),
            BAD,
        ),
        plan(
            "10,000 [ in a JSON-string envelope",
            Send::Ack(format!(r#"["chat","{deep_open}"]"#)),
            BAD,
        ),
        plan(
            "lone high surrogate",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":"\ud800""#
            ))),
            BAD,
        ),
        plan(
            "lone low surrogate",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"\udc00","Body":"x""#
            ))),
            BAD,
        ),
        plan(
            "lone surrogate in a JSON-string envelope",
            Send::Ack(format!(
                r#"["chat","{{\"EvtType\":\"message\",\"To\":\"{GHOST}\",\"MsgID\":\"m\",\"Body\":\"\\ud800\"}}"]"#
            )),
            BAD,
        ),
        plan(
            "invalid escape",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":"\x41""#
            ))),
            &["ack:bad_request", "disconnected"],
        ),
        plan(
            "message to an unknown user",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{GHOST}","MsgID":"m","Body":"x""#
            ))),
            &["ack:not_found"],
        ),
        plan(
            "message into a group of others",
            Send::Ack(env(&format!(
                r#""EvtType":"message","To":"{gid}","MsgID":"m","Body":"x""#
            ))),
            &["ack:forbidden"],
        ),
        plan(
            "depart from a group of others",
            Send::Ack(env(&format!(r#""EvtType":"depart","To":"{gid}""#))),
            &["ack:forbidden"],
        ),
        plan(
            "binary attachment",
            Send::BinaryAck(
                r#"["chat",{"_placeholder":true,"num":0}]"#.into(),
                vec![vec![0xde, 0xad, 0xbe, 0xef]],
            ),
            BAD,
        ),
        plan(
            "binary attachment inside an envelope",
            Send::BinaryAck(
                format!(
                    r#"["chat",{{"EvtType":"message","To":"{GHOST}","MsgID":"m","Body":{{"_placeholder":true,"num":0}}}}]"#
                ),
                vec![b"hello".to_vec()],
            ),
            BAD,
        ),
        plan(
            "binary frame without a packet",
            Send::Binary(vec![0, 1, 2, 3]),
            &["ignored", "disconnected"],
        ),
        plan(
            "two attachments announced, one sent",
            Send::Frame(r#"452-["chat",{"_placeholder":true,"num":0}]"#.into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "error event without ack",
            Send::Frame(r#"42["chat",{"EvtType":"bogus","MsgID":"noack"}]"#.into()),
            &["event:bad_request"],
        ),
        plan(
            "number without ack",
            Send::Frame(r#"42["chat",17]"#.into()),
            &["event:bad_request"],
        ),
        plan(
            "Body over the limit without ack",
            Send::Frame(format!(
                r#"42["chat",{{"EvtType":"message","To":"{GHOST}","MsgID":"m","Body":"{big_body}"}}]"#
            )),
            &["event:too_large"],
        ),
        plan(
            "unknown event name",
            Send::Frame(r#"42["nope",{"EvtType":"message"}]"#.into()),
            &["ignored"],
        ),
        plan(
            "ack of an unknown id",
            Send::Frame("43999[]".into()),
            &["ignored"],
        ),
        plan(
            "truncated packet",
            Send::Frame("42[".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "ack id beyond i64",
            Send::Frame(r#"4299999999999999999999["chat",{}]"#.into()),
            &["ignored", "disconnected", "event:bad_request"],
        ),
        plan(
            "event name not a string",
            Send::Frame("42[17,{}]".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "not an array",
            Send::Frame("42{}".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "empty frame",
            Send::Frame(String::new()),
            &["ignored", "disconnected"],
        ),
        plan(
            "engine.io garbage",
            Send::Frame("9xyz".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "engine.io upgrade out of place",
            Send::Frame("5".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "connect to an unknown namespace",
            Send::Frame("40/evil,".into()),
            &["ignored", "disconnected"],
        ),
        plan(
            "join as someone else",
            Send::Frame(r#"42["join","someone-else"]"#.into()),
            &["disconnected"],
        ),
        Plan {
            every: 25,
            ..plan(
                "frame of 40 KB",
                Send::Frame(oversized(40_000)),
                &["event:too_large"],
            )
        },
        Plan {
            every: 25,
            ..plan(
                "frame of 200 KB (within the 1 MiB frame limit, over the Body limit)",
                Send::Frame(oversized(200_000)),
                &["event:too_large"],
            )
        },
        Plan {
            every: 100,
            ..plan(
                "frame of 1.1 MB (over the frame limit)",
                Send::Frame(oversized(1_100_000)),
                &["disconnected"],
            )
        },
    ]
}

/// The attacking user's socket, reconnected whenever the server drops it.
struct Attacker {
    url: String,
    user: User,
    client: SioClient,
    events: webchat_loadgen::client::EventStream,
    reconnects: usize,
}

impl Attacker {
    async fn connect(url: &str, user: &User) -> Self {
        let c = TestClient::connect(url, user).await;
        Self {
            url: url.to_owned(),
            user: user.clone(),
            client: c.client,
            events: c.events,
            reconnects: 0,
        }
    }

    async fn reconnect(&mut self) {
        let c = TestClient::connect(&self.url, &self.user).await;
        self.client = c.client;
        self.events = c.events;
        self.reconnects += 1;
    }

    /// `error` events that have arrived, by code.
    fn drain_errors(&mut self) -> Vec<String> {
        let mut codes = Vec::new();
        while let Some(event) = self.events.try_recv() {
            if event.name == "chat" && event.data["EvtType"] == "error" {
                let body: Value = serde_json::from_str(event.data["Body"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                codes.push(body["code"].as_str().unwrap_or("?").to_owned());
            }
        }
        codes
    }

    fn classify_ack(result: Result<Value, ClientError>) -> String {
        match result {
            Ok(ack) => match ack["error"]["code"].as_str() {
                Some(code) => format!("ack:{code}"),
                None => format!("ack:unexpected {ack}"),
            },
            Err(ClientError::Closed) => "disconnected".into(),
            Err(e) => format!("hung ({e})"),
        }
    }

    /// After a frame without an ack: a well-formed (refused) event with an ack shows whether
    /// the socket is still up and in order; error events for the frame arrive before it.
    async fn probe(&mut self) -> String {
        let ack = self
            .client
            .emit_with_ack("chat", &json!({"EvtType": "probe"}), PATIENCE)
            .await;
        match Self::classify_ack(ack).as_str() {
            "ack:bad_request" => {}
            other => return other.to_owned(),
        }
        match self.drain_errors().as_slice() {
            [] => "ignored".into(),
            [code] => format!("event:{code}"),
            many => format!("events:{many:?}"),
        }
    }

    async fn run(&mut self, plan: &Plan) -> String {
        let outcome = match &plan.send {
            Send::Ack(args) => {
                let ack = self
                    .client
                    .emit_raw_with_ack(|id| format!("42{id}{args}"), Vec::new(), PATIENCE)
                    .await;
                Self::classify_ack(ack)
            }
            Send::BinaryAck(args, bins) => {
                let n = bins.len();
                let ack = self
                    .client
                    .emit_raw_with_ack(|id| format!("45{n}-{id}{args}"), bins.clone(), PATIENCE)
                    .await;
                Self::classify_ack(ack)
            }
            Send::Frame(text) => match self.client.send_raw(text).await {
                Ok(()) => self.probe().await,
                Err(_) => "disconnected".into(),
            },
            Send::Binary(bytes) => match self.client.send_raw_binary(bytes.clone()).await {
                Ok(()) => self.probe().await,
                Err(_) => "disconnected".into(),
            },
        };
        if outcome == "disconnected" {
            self.reconnect().await;
        }
        outcome
    }
}

/// Sends `from` → `to` messages one by one (waiting for each ack) until `stop`, then an
/// end marker; returns how many were sent.
async fn chatter(client: SioClient, to: String, tag: &'static str, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) || n < 20 {
        let ack = client
            .emit_with_ack(
                "chat",
                &json!({"EvtType": "message", "To": to, "MsgID": format!("{tag}{n}"), "Body": n.to_string()}),
                PATIENCE,
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}{n}: no ack: {e}"));
        assert_eq!(ack["ok"], true, "{tag}{n}: {ack}");
        n += 1;
    }
    let ack = client
        .emit_with_ack(
            "chat",
            &json!({"EvtType": "message", "To": to, "MsgID": format!("{tag}-end"), "Body": "end"}),
            PATIENCE,
        )
        .await
        .expect("end ack");
    assert_eq!(ack["ok"], true, "{ack}");
    n
}

/// Receives `from`'s messages until the end marker, checking they are all there, in order,
/// with strictly increasing Seqs; returns how many.
async fn listener(mut client: TestClient, from: String, tag: &'static str) -> usize {
    let mut expected = 0usize;
    let mut last_seq = 0u64;
    loop {
        let event = client
            .events
            .recv_named("chat", Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{}: waiting for {tag}{expected}: {e}", client.uid));
        if event.data["EvtType"] != "message" || event.data["From"] != from.as_str() {
            continue;
        }
        let seq = event.data["Seq"].as_u64().expect("Seq");
        assert!(seq > last_seq, "Seq went from {last_seq} to {seq}");
        last_seq = seq;
        let id = event.data["MsgID"].as_str().expect("MsgID");
        if id == format!("{tag}-end") {
            return expected;
        }
        assert_eq!(id, format!("{tag}{expected}"), "out of order or missing");
        expected += 1;
    }
}

async fn health(url: &str) -> u16 {
    http()
        .get(format!("{url}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_storm_of_malformed_payloads_harms_no_one() {
    // The event-rate limit would answer most of the storm `rate_limited` (tests/api/limits.rs
    // covers it); here every payload must reach the parser.
    let node = NodeProcess::start_captured(&["--socket-rate", "0"], "warn").await;
    let url = node.url.clone();
    let alice = signup_at(&url, "alice").await;
    let bob = signup_at(&url, "bob").await;
    let mallory = signup_at(&url, "mallory").await;
    let ca = TestClient::try_connect(&url, &alice, true)
        .await
        .expect("alice");
    let cb = TestClient::try_connect(&url, &bob, true)
        .await
        .expect("bob");
    let ack = ca
        .chat(json!({"EvtType": "create", "To": "", "Body": [bob.uid]}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let chat_ab = tokio::spawn(chatter(
        ca.client.clone(),
        bob.uid.clone(),
        "ab",
        stop.clone(),
    ));
    let chat_ba = tokio::spawn(chatter(
        cb.client.clone(),
        alice.uid.clone(),
        "ba",
        stop.clone(),
    ));
    let listen_b = tokio::spawn(listener(cb, alice.uid.clone(), "ab"));
    let listen_a = tokio::spawn(listener(ca, bob.uid.clone(), "ba"));
    let health_checks = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checks = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                assert_eq!(health(&url).await, 200, "/health during the storm");
                checks += 1;
            }
            checks
        })
    };

    // The storm, one payload at a time.
    let started = Instant::now();
    let plans = plans(&gid);
    let mut attacker = Attacker::connect(&url, &mallory).await;
    let mut tally: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut sent = 0;
    'storm: for round in 0.. {
        for plan in plans.iter().filter(|p| round % p.every == 0) {
            if sent == SEQUENTIAL {
                break 'storm;
            }
            let outcome = attacker.run(plan).await;
            *tally
                .entry(plan.name)
                .or_default()
                .entry(outcome)
                .or_default() += 1;
            sent += 1;
        }
    }
    // Then a burst without waiting: more than the socket's in-flight limit.
    let mut burst: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..BURST {
        let frame = format!(r#"42["chat",{{"EvtType":"burst","MsgID":"b{i}"}}]"#);
        if attacker.client.send_raw(&frame).await.is_err() {
            *burst.entry("disconnected".into()).or_default() += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while burst.values().sum::<usize>() < BURST && Instant::now() < deadline {
        match attacker
            .events
            .recv_named("chat", Duration::from_secs(10))
            .await
        {
            Ok(event) if event.data["EvtType"] == "error" => {
                let body: Value = serde_json::from_str(event.data["Body"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                *burst
                    .entry(format!("event:{}", body["code"].as_str().unwrap_or("?")))
                    .or_default() += 1;
            }
            Ok(_) => {}
            Err(e) => {
                *burst.entry(format!("ended: {e}")).or_default() +=
                    BURST - burst.values().sum::<usize>();
            }
        }
    }
    let storm_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);

    let sent_ab = chat_ab.await.expect("alice's chatter");
    let sent_ba = chat_ba.await.expect("bob's chatter");
    assert_eq!(
        listen_b.await.expect("bob's listener"),
        sent_ab,
        "bob got all of alice's"
    );
    assert_eq!(
        listen_a.await.expect("alice's listener"),
        sent_ba,
        "alice got all of bob's"
    );
    let checks = health_checks.await.expect("health checks");
    assert_eq!(health(&url).await, 200);
    eprintln!(
        "storm: {SEQUENTIAL} + {BURST} payloads in {storm_secs:.1} s, {} reconnects; \
         meanwhile {sent_ab} + {sent_ba} messages delivered in order, {checks} health checks",
        attacker.reconnects
    );
    for (name, outcomes) in &tally {
        eprintln!("  {name}: {outcomes:?}");
    }
    eprintln!("  burst of {BURST}: {burst:?}");

    // Every payload got a refusal or a disconnect, as expected of its kind.
    for plan in &plans {
        let outcomes = tally.get(plan.name).expect("every plan ran");
        for outcome in outcomes.keys() {
            assert!(
                plan.expect.contains(&outcome.as_str()),
                "{}: outcome {outcome:?} not in {:?} ({outcomes:?})",
                plan.name,
                plan.expect
            );
        }
    }
    for outcome in burst.keys() {
        assert!(
            ["event:bad_request", "event:rate_limited"].contains(&outcome.as_str()),
            "burst: {burst:?}"
        );
    }
    assert_eq!(burst.values().sum::<usize>(), BURST, "{burst:?}");

    // No socket leaked by thousands of dropped connections: the chatters have hung up too,
    // so the node holds none.
    attacker.client.close().await;
    // Bounded by the Engine.IO heartbeat (25 s interval + 20 s timeout), the longest a
    // server may take to notice a peer that vanished: a leaked socket never reaches 0; a
    // slow close under a loaded CI machine does (10 s was not always enough there).
    let closing = Instant::now();
    eventually_within(
        "the node to hold no socket",
        Duration::from_secs(60),
        || async { try_metric_at(&url, "webchat_connections").await == Some(0) },
    )
    .await;
    eprintln!("  sockets closed {:?} after the storm", closing.elapsed());

    let output = node.terminate_captured().await;
    assert!(!output.contains("panicked"), "the node panicked:\n{output}");
}

/// A Body at the size limit is accepted whatever its characters, though JSON escaping makes
/// its frame several times larger (and a JSON-string envelope escapes it twice).
#[tokio::test]
async fn a_body_at_the_limit_is_accepted_whatever_its_characters() {
    let app = spawn_app(Backend::Embedded).await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let ca = app.connect(&alice).await;
    let mut cb = app.connect(&bob).await;
    let limit = 16 * 1024;
    for (name, body) in [
        ("ascii", "b".repeat(limit)),
        ("quotes", "\"".repeat(limit)),
        ("newlines", "\n".repeat(limit)),
        ("control characters", "\u{1}".repeat(limit)),
        ("two-byte characters", "é".repeat(limit / 2)),
        ("four-byte characters", "😀".repeat(limit / 4)),
    ] {
        for as_string in [false, true] {
            let envelope = json!({"EvtType": "message", "To": bob.uid, "MsgID": format!("{name}-{as_string}"), "Body": body});
            let envelope = if as_string {
                Value::String(envelope.to_string())
            } else {
                envelope
            };
            let ack = ca
                .client
                .emit_with_ack("chat", &envelope, PATIENCE)
                .await
                .unwrap_or_else(|e| panic!("{name} (as string: {as_string}): {e}"));
            assert_eq!(ack["ok"], true, "{name} (as string: {as_string}): {ack}");
            let got = cb.next_chat_acked().await;
            assert_eq!(
                got.data["Body"].as_str().map(str::len),
                Some(limit),
                "{name}"
            );
        }
    }
    // One byte more, escaped at worst and sent as a JSON string: refused, the socket stays.
    let over = json!({"EvtType": "message", "To": bob.uid, "MsgID": "over", "Body": "\u{1}".repeat(limit + 1)});
    let ack = ca.chat(Value::String(over.to_string())).await;
    assert_eq!(ack["error"]["code"], "too_large", "{ack}");
    assert_eq!(ca.send(&bob.uid, "after", "x").await["ok"], true);
}
