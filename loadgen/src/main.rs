//! `webchat-loadgen`: drives a webchat (or a Node baseline speaking the same
//! subset) with chat messages and measures delivered msgs/s and latency.
//!
//! Scenario `pairs`: `--sockets N` sockets form N/2 sender→receiver pairs. The
//! sender of pair `p` connects to node `p % nodes`, its receiver to node
//! `(p + 1) % nodes`, so with several `--urls` the traffic crosses nodes. Every
//! socket connects without auth and emits `join` with its uid (server started
//! with `--auth open`). Senders emit `chat` with an ack on a fixed open-loop
//! timeline (`--rate` msgs/s in total, interleaved across pairs); they don't
//! wait for acks, but at most `--max-inflight` un-acked messages per sender are
//! allowed — a send due while the cap is reached is skipped and counted as
//! `not_sent`. Receivers ack every delivery (`43<id>[]`).
//!
//! Each step runs `--warmup` then `--duration` (the measurement window), then
//! waits at most `--drain-timeout` for outstanding deliveries, and prints one
//! JSON line on stdout. Progress goes to stderr.
//!
//! Latency = receive time − send time, both taken from this process's
//! monotonic clock; the send time (µs since generator start) travels in the
//! message body (`t=<micros>;` padded to `--body-bytes`).
//!
//! Scenario `group-fanout` (`--members`, `--messages`): one group of
//! `--members` online sockets, `--messages` group messages one at a time, time
//! until every member has each; see [`group_fanout`]. One socket per member: the
//! open-files limit must exceed the member count (`ulimit -n` in the shell that
//! starts the generator; raising it here would need libc).
//!
//! Scenarios `idle` (scenario 2: idle sockets, server RSS per connection), `replay` (scenario
//! 4: a large backlog replayed to one user) and `storm` (scenario 5: users with queued
//! messages reconnect at once): see [`offline`]. `--source-ips N` binds client sockets to
//! 127.0.0.2 .. 127.0.0.(N+1) in turn (no ephemeral-port exhaustion with many sockets).
//!
//! The `pairs` scenario needs only `join` (acked `{ok:true}`), the `chat` ack `{ok:true}` and
//! a `chat` delivery carrying `From` and the sent `MsgID`/`Body`: it drives webchat and the
//! Node baseline (`bench/baseline-node`) alike; deliveries are acked only when the server asks.
//!
//! CPU: utime+stime from `/proc/PID/stat` (and `/proc/self/stat`) sampled at
//! the start and end of the measurement window, assuming `CLK_TCK` = 100 (the
//! value on every Linux we run on; reading it via `sysconf` would need libc).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use webchat_loadgen::client::{ClientError, ClientOptions, EventStream, ServerEvent, SioClient};

mod channel_fanout;
mod floor;
mod group_fanout;
mod offline;

/// Assumed `sysconf(_SC_CLK_TCK)`.
const CLK_TCK: u64 = 100;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// N/2 sender→receiver pairs, receivers on the next node.
    Pairs,
    /// One group of --members; --messages group messages, one at a time.
    GroupFanout,
    /// --sockets idle sockets (connect + join) to the first URL; server RSS per connection.
    Idle,
    /// --replay-messages queued for one offline user, then the time to replay them all.
    Replay,
    /// --users offline users with --per-user queued messages each reconnect at once.
    Storm,
    /// The group fan-out's transport alone: --members loopback TCP connections to a bare
    /// server process (no webchat), one frame out and one answer back per connection and
    /// round (--messages rounds).
    TransportFloor,
    /// --sockets subscribers of one channel over the nodes; REST publications at each rate.
    ChannelFanout,
}

/// Load generator for webchat: 1:1 chat messages (delivered msgs/s and latency) or group
/// fan-out (time until every member has a message).
#[derive(Debug, Parser)]
#[command(name = "webchat-loadgen", version)]
struct Args {
    /// Server base URLs (comma-separated), one per cluster node.
    #[arg(
        long,
        env = "LOADGEN_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:4000"
    )]
    urls: Vec<String>,
    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::Pairs)]
    scenario: Scenario,
    /// Number of sockets (2 per pair).
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Offered load in messages per second, over all pairs.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Several offered rates (comma-separated), one step each; overrides --rate.
    #[arg(long, value_delimiter = ',')]
    rate_steps: Vec<f64>,
    /// Measurement window per step (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measurement window of each step.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Message body size in bytes (at least the `t=<micros>;` stamp).
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Max un-acked messages per sender; sends due beyond it are skipped.
    #[arg(long, default_value_t = 64)]
    max_inflight: usize,
    /// Sockets opened concurrently while connecting.
    #[arg(long, default_value_t = 100)]
    connect_batch: usize,
    /// Per-message ack timeout (connect/join and chat).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ack_timeout: Duration,
    /// pairs: how receivers acknowledge deliveries. `per-event` answers each socket.io ack
    /// request; `cumulative` connects with `auth.acks = "cumulative"` (webchat's contract
    /// §15) and emits `ack {Seq}` every 100 deliveries or each second while they arrive.
    #[arg(long, value_enum, default_value_t = AckMode::PerEvent)]
    acks: AckMode,
    /// Max wait after a step's sending stops for outstanding deliveries.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Server process ids (comma-separated) whose CPU time is reported.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Free-form label copied into every JSON report (e.g. which server was measured).
    #[arg(long, default_value = "")]
    label: String,
    /// Run id used in uids (`lg<run>_<i>`) and MsgIDs; default: unix time.
    #[arg(long)]
    run_id: Option<String>,
    /// Also require p99 latency <= this (ms) for a step to count as keeping up.
    #[arg(long)]
    slo_p99_ms: Option<f64>,
    /// Stop after the first step that does not keep up with the offered rate.
    #[arg(long)]
    stop_on_saturation: bool,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// group-fanout: group size; every member is online (one socket each).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// group-fanout: group messages, each sent after the previous one reached every member.
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// group-fanout: max wait for the create / a message to reach every member (and its ack).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    fanout_timeout: Duration,
    /// group-fanout: pause before each group message (and after the last one).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pause: Duration,
    /// Bind client sockets to 127.0.0.2 .. 127.0.0.(N+1) in turn (0: let the kernel pick the
    /// source address); avoids ephemeral-port exhaustion with tens of thousands of sockets.
    #[arg(long, default_value_t = 0)]
    source_ips: u8,
    /// idle: how long the sockets stay open (idle) before RSS is read again.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
    /// idle: only connect (socket.io CONNECT), no `join`: the transport's share of the RSS.
    #[arg(long)]
    no_join: bool,
    /// replay: messages queued for the offline user.
    #[arg(long, default_value_t = 10_000)]
    replay_messages: usize,
    /// replay/storm: un-acked messages per sending socket while queueing.
    #[arg(long, default_value_t = 128)]
    send_inflight: usize,
    /// storm: users that reconnect at once (spread over the --urls).
    #[arg(long, default_value_t = 5_000)]
    users: usize,
    /// storm: messages queued per user before they reconnect.
    #[arg(long, default_value_t = 3)]
    per_user: usize,
    /// transport-floor: bytes of each frame sent to a connection (the default: a group message
    /// with a 64-byte Body as webchat writes it, socket.io and WebSocket framing included).
    #[arg(long, default_value_t = 304)]
    floor_frame_bytes: usize,
    /// transport-floor: be the server side (the scenario starts it as a child process).
    #[arg(long, hide = true)]
    floor_serve: bool,
    /// channel-fanout: the channel the subscribers subscribe to and the publisher publishes on.
    #[arg(long, default_value = "general")]
    channel: String,
    /// channel-fanout: publications missed by one subscriber before it resubscribes with
    /// `since` (the recovery time is measured; 0: skipped; the channel's history must hold
    /// them).
    #[arg(long, default_value_t = 1000)]
    recovery_publications: usize,
    /// channel-fanout: bearer token of the REST publisher (webchat: a service key's secret).
    #[arg(long, env = "LOADGEN_PUBLISH_TOKEN", default_value = "")]
    publish_token: String,
    /// storm: sockets that queue the messages (each sends to every `senders`-th user).
    #[arg(long, default_value_t = 20)]
    senders: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.floor_serve {
        return floor::serve_main(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Microseconds since the generator started (monotonic).
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn instant_at(us: u64) -> tokio::time::Instant {
    let now = now_us();
    tokio::time::Instant::now() + Duration::from_micros(us.saturating_sub(now))
}

/// Deliveries seen by one receiver during the current step.
#[derive(Debug, Default)]
struct RecvState {
    step: u32,
    /// Measurement window `[start, end)` in µs since generator start.
    window: (u64, u64),
    /// Deliveries per sequence number.
    count: Vec<u8>,
    /// Latencies (µs) of first deliveries of messages sent in the window.
    lat_us: Vec<u32>,
    /// First deliveries of messages sent in the window.
    delivered: u64,
    /// First deliveries received in the window (whatever their send time).
    in_window: u64,
    duplicates: u64,
    /// Deliveries of another step / pair, or with an unparsable MsgID.
    stray: u64,
    /// `From` is not this pair's sender.
    misrouted: u64,
}

struct Pair {
    sender: SioClient,
    receiver: SioClient,
    receiver_uid: String,
    recv: Arc<Mutex<RecvState>>,
}

/// What a sender did during one step.
#[derive(Debug, Default)]
struct SendStats {
    scheduled: u64,
    sent: u64,
    not_sent: u64,
    acked: u64,
    errors: BTreeMap<String, u64>,
    sent_total: u64,
    acked_total: u64,
    /// Sequence numbers acked `ok` (whole step).
    acked_seqs: Vec<u32>,
}

static DISCONNECTS: AtomicU64 = AtomicU64::new(0);
static DELIVERIES: AtomicU64 = AtomicU64::new(0);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn run(args: Args) -> Result<()> {
    now_us();
    if args.urls.is_empty() {
        bail!("--urls is empty");
    }
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
            .to_string()
    });
    match args.scenario {
        Scenario::Pairs => run_pairs(&args, &run_id).await,
        Scenario::GroupFanout => group_fanout::run(&args, &run_id).await,
        Scenario::Idle => offline::run_idle(&args, &run_id).await,
        Scenario::Replay => offline::run_replay(&args, &run_id).await,
        Scenario::Storm => offline::run_storm(&args, &run_id).await,
        Scenario::TransportFloor => floor::run(&args).await,
        Scenario::ChannelFanout => channel_fanout::run(&args, &run_id).await,
    }
}

async fn run_pairs(args: &Args, run_id: &str) -> Result<()> {
    let npairs = args.sockets / 2;
    if npairs == 0 {
        bail!("--sockets must be at least 2");
    }
    let steps = if args.rate_steps.is_empty() {
        vec![args.rate]
    } else {
        args.rate_steps.clone()
    };
    if steps.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("rates must be > 0");
    }
    check_fd_limit(args.sockets);
    let nodes = args.urls.len();
    eprintln!(
        "loadgen: run {run_id}, {npairs} pairs over {nodes} node(s), connecting in batches of {}",
        args.connect_batch
    );
    let pairs = connect_all(args, run_id, npairs).await?;
    eprintln!("loadgen: all {} sockets joined", npairs * 2);

    for (step, &rate) in steps.iter().enumerate() {
        let report = run_step(args, run_id, step as u32, rate, &pairs).await;
        println!("{report}");
        let keeps_up = report["keeps_up"].as_bool().unwrap_or(false);
        if args.stop_on_saturation && !keeps_up {
            eprintln!("loadgen: saturated at {rate} msgs/s, stopping");
            break;
        }
    }
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    let closes = pairs
        .into_iter()
        .flat_map(|p| [p.sender.close(), p.receiver.close()]);
    futures_util::future::join_all(closes).await;
    Ok(())
}

fn check_fd_limit(sockets: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft {
        if sockets + 64 > soft {
            eprintln!("loadgen: warning: {sockets} sockets but the open-files limit is {soft} (raise ulimit -n)");
        }
    }
}

/// How the `pairs` scenario's receivers acknowledge deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AckMode {
    /// One socket.io ack per stored event (every client's default).
    PerEvent,
    /// `ack {Seq}` every [`CUMULATIVE_ACK_EVERY`] deliveries or [`CUMULATIVE_ACK_INTERVAL`].
    Cumulative,
}

/// Deliveries between two cumulative acks (the contract's bound).
const CUMULATIVE_ACK_EVERY: u32 = 100;
/// Longest wait before a cumulative ack while deliveries arrive (the contract's bound).
const CUMULATIVE_ACK_INTERVAL: Duration = Duration::from_secs(1);

async fn connect_all(args: &Args, run_id: &str, npairs: usize) -> Result<Vec<Pair>> {
    let nodes = args.urls.len();
    let per_batch = (args.connect_batch / 2).max(1);
    let mut pairs = Vec::with_capacity(npairs);
    let mut p0 = 0;
    while p0 < npairs {
        let p1 = (p0 + per_batch).min(npairs);
        let batch = (p0..p1).map(|p| async move {
            let sender_uid = format!("lg{run_id}_{}", 2 * p);
            let receiver_uid = format!("lg{run_id}_{}", 2 * p + 1);
            let (sender, sender_events) =
                connect_and_join(&args.urls[p % nodes], &sender_uid, args.ack_timeout).await?;
            let receiver_auth =
                (args.acks == AckMode::Cumulative).then(|| json!({ "acks": "cumulative" }));
            let opts = join_options(args.ack_timeout, None);
            let (receiver, receiver_events) =
                SioClient::connect(&args.urls[(p + 1) % nodes], receiver_auth, opts)
                    .await
                    .with_context(|| format!("connecting {receiver_uid}"))?;
            let (receiver, receiver_events) =
                join(receiver, receiver_events, &receiver_uid, args.ack_timeout).await?;
            let recv = Arc::new(Mutex::new(RecvState::default()));
            tokio::spawn(drain_events(sender_events, sender_uid.clone()));
            let acker = (args.acks == AckMode::Cumulative).then(|| receiver.clone());
            tokio::spawn(receive_loop(
                receiver_events,
                p as u32,
                sender_uid.clone(),
                recv.clone(),
                acker,
            ));
            anyhow::Ok(Pair {
                sender,
                receiver,
                receiver_uid,
                recv,
            })
        });
        for r in futures_util::future::join_all(batch).await {
            pairs.push(r?);
        }
        eprintln!("loadgen: {} / {} sockets joined", p1 * 2, npairs * 2);
        p0 = p1;
    }
    Ok(pairs)
}

async fn connect_and_join(
    url: &str,
    uid: &str,
    timeout: Duration,
) -> Result<(SioClient, EventStream)> {
    connect_and_join_from(url, uid, timeout, None).await
}

/// [`connect_and_join`] with the client socket bound to `bind` (a source address).
async fn connect_and_join_from(
    url: &str,
    uid: &str,
    timeout: Duration,
    bind: Option<std::net::IpAddr>,
) -> Result<(SioClient, EventStream)> {
    let opts = join_options(timeout, bind);
    let (client, events) = SioClient::connect(url, None, opts)
        .await
        .with_context(|| format!("connecting {uid} to {url}"))?;
    join(client, events, uid, timeout).await
}

/// [`connect_and_join`] with every event passed to `observe` as it is read (see
/// [`SioClient::connect_observed`]); the returned stream only reports the end.
async fn connect_and_join_observed(
    url: &str,
    uid: &str,
    timeout: Duration,
    observe: impl FnMut(ServerEvent) + Send + 'static,
) -> Result<(SioClient, EventStream)> {
    let opts = join_options(timeout, None);
    let (client, events) = SioClient::connect_observed(url, None, opts, observe)
        .await
        .with_context(|| format!("connecting {uid} to {url}"))?;
    join(client, events, uid, timeout).await
}

/// Auto-acking client options for the members of a scenario.
fn join_options(timeout: Duration, bind: Option<std::net::IpAddr>) -> ClientOptions {
    ClientOptions {
        auto_ack: true,
        connect_timeout: timeout,
        bind_addr: bind,
        ..ClientOptions::default()
    }
}

/// Joins as `uid` on a connected `client`.
async fn join(
    client: SioClient,
    events: EventStream,
    uid: &str,
    timeout: Duration,
) -> Result<(SioClient, EventStream)> {
    let reply = client
        .emit_with_ack("join", &json!(uid), timeout)
        .await
        .with_context(|| format!("join {uid}"))?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        bail!("join {uid} refused: {reply}");
    }
    Ok((client, events))
}

/// Senders get no chat traffic; just notice when they drop.
async fn drain_events(mut events: EventStream, uid: String) {
    while events.recv().await.is_some() {}
    note_disconnect(&uid, &events);
}

fn note_disconnect(uid: &str, events: &EventStream) {
    if SHUTTING_DOWN.load(Ordering::Relaxed) {
        return;
    }
    if DISCONNECTS.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!(
            "loadgen: {uid} disconnected: {:?}",
            events.disconnect_reason()
        );
    }
}

/// Receives `chat` deliveries for one pair. Per-event acks are sent by `auto_ack`; with
/// `acker` (cumulative acks), this loop emits `ack {Seq}` itself.
async fn receive_loop(
    mut events: EventStream,
    pair: u32,
    sender_uid: String,
    state: Arc<Mutex<RecvState>>,
    acker: Option<SioClient>,
) {
    let mut cumulative = CumulativeAcker::default();
    let mut tick = tokio::time::interval(CUMULATIVE_ACK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = tick.tick(), if acker.is_some() => {
                if let (Some(client), Some(seq)) = (&acker, cumulative.due_by_time()) {
                    let _ = client.emit("ack", &json!({ "Seq": seq })).await;
                }
                continue;
            }
        };
        if ev.name != "chat" {
            continue;
        }
        let t_recv = now_us();
        if let (Some(client), Some(seq)) = (&acker, ev.data.get("Seq").and_then(Value::as_u64)) {
            if let Some(upto) = cumulative.received(seq) {
                let _ = client.emit("ack", &json!({ "Seq": upto })).await;
            }
        }
        DELIVERIES.fetch_add(1, Ordering::Relaxed);
        let id = ev
            .data
            .get("MsgID")
            .and_then(Value::as_str)
            .and_then(parse_msg_id);
        let t_send = ev
            .data
            .get("Body")
            .and_then(Value::as_str)
            .and_then(parse_body_time);
        let from_ok = ev.data.get("From").and_then(Value::as_str) == Some(sender_uid.as_str());
        let mut st = lock(&state);
        let (Some((step, p, seq)), Some(t_send)) = (id, t_send) else {
            st.stray += 1;
            continue;
        };
        if step != st.step || p != pair {
            st.stray += 1;
            continue;
        }
        if !from_ok {
            st.misrouted += 1;
        }
        let seq = seq as usize;
        if st.count.len() <= seq {
            st.count.resize(seq + 1, 0);
        }
        let c = st.count[seq];
        st.count[seq] = c.saturating_add(1);
        if c > 0 {
            st.duplicates += 1;
            continue;
        }
        let (ws, we) = st.window;
        if (ws..we).contains(&t_send) {
            st.delivered += 1;
            let lat = t_recv.saturating_sub(t_send).min(u32::MAX as u64) as u32;
            st.lat_us.push(lat);
        }
        if (ws..we).contains(&t_recv) {
            st.in_window += 1;
        }
    }
    note_disconnect(&format!("receiver of pair {pair}"), &events);
}

/// When a cumulative-ack receiver acks: after [`CUMULATIVE_ACK_EVERY`] deliveries, or on the
/// interval tick when something arrived since the last ack.
#[derive(Debug, Default)]
struct CumulativeAcker {
    highest: u64,
    acked: u64,
    since_ack: u32,
}

impl CumulativeAcker {
    /// Notes a delivery; returns the Seq to ack now, if one is due.
    fn received(&mut self, seq: u64) -> Option<u64> {
        self.highest = self.highest.max(seq);
        self.since_ack += 1;
        (self.since_ack >= CUMULATIVE_ACK_EVERY).then(|| self.ack())
    }

    /// On the interval: the Seq to ack, when anything arrived since the last ack.
    fn due_by_time(&mut self) -> Option<u64> {
        (self.highest > self.acked).then(|| self.ack())
    }

    fn ack(&mut self) -> u64 {
        self.acked = self.highest;
        self.since_ack = 0;
        self.highest
    }
}

/// MsgID: `<run>-<step>-<pair>-<seq>`; returns (step, pair, seq).
fn parse_msg_id(id: &str) -> Option<(u32, u32, u32)> {
    let mut it = id.rsplitn(4, '-');
    let seq = it.next()?.parse().ok()?;
    let pair = it.next()?.parse().ok()?;
    let step = it.next()?.parse().ok()?;
    it.next()?;
    Some((step, pair, seq))
}

/// Body: `t=<micros>;` padded with `x` to `size` bytes.
fn make_body(t_us: u64, size: usize) -> String {
    let mut b = format!("t={t_us};");
    if b.len() < size {
        b.extend(std::iter::repeat_n('x', size - b.len()));
    }
    b
}

fn parse_body_time(body: &str) -> Option<u64> {
    body.strip_prefix("t=")?.split(';').next()?.parse().ok()
}

struct StepPlan {
    run_id: Arc<str>,
    step: u32,
    rate: f64,
    npairs: usize,
    start: u64,
    window: (u64, u64),
    body_bytes: usize,
    max_inflight: usize,
    ack_timeout: Duration,
}

impl StepPlan {
    /// Scheduled time (µs) of message `k` of pair `p`: the global timeline
    /// `start + n / rate` with message n going to pair `n % npairs`.
    fn due(&self, pair: usize, k: u64) -> u64 {
        let n = k as f64 * self.npairs as f64 + pair as f64;
        self.start + (n * 1e6 / self.rate) as u64
    }
}

async fn sender_loop(client: SioClient, to: String, pair: usize, plan: Arc<StepPlan>) -> SendStats {
    let mut stats = SendStats::default();
    let (ws, we) = plan.window;
    let mut pending = FuturesUnordered::new();
    let mut k: u64 = 0;
    let client = &client;
    loop {
        let next = plan.due(pair, k);
        if next >= we {
            break;
        }
        tokio::select! {
            biased;
            Some((seq, measured, res)) = pending.next(), if !pending.is_empty() => {
                record_ack(&mut stats, seq, measured, res);
            }
            _ = tokio::time::sleep_until(instant_at(next)) => {
                let now = now_us();
                while plan.due(pair, k) <= now && plan.due(pair, k) < we {
                    let seq = k as u32;
                    k += 1;
                    let t = now_us();
                    let measured = (ws..we).contains(&t);
                    stats.scheduled += measured as u64;
                    if pending.len() >= plan.max_inflight {
                        stats.not_sent += measured as u64;
                        continue;
                    }
                    stats.sent += measured as u64;
                    stats.sent_total += 1;
                    let msg = json!({
                        "EvtType": "message",
                        "To": to,
                        "MsgID": format!("{}-{}-{}-{}", plan.run_id, plan.step, pair, seq),
                        "Body": make_body(t, plan.body_bytes),
                        "Timestamp": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
                    });
                    let timeout = plan.ack_timeout;
                    pending.push(async move {
                        (seq, measured, client.emit_with_ack("chat", &msg, timeout).await)
                    });
                }
            }
        }
    }
    while let Some((seq, measured, res)) = pending.next().await {
        record_ack(&mut stats, seq, measured, res);
    }
    stats
}

fn record_ack(stats: &mut SendStats, seq: u32, measured: bool, res: Result<Value, ClientError>) {
    let Some(code) = ack_error_code(&res) else {
        stats.acked_total += 1;
        stats.acked += measured as u64;
        stats.acked_seqs.push(seq);
        return;
    };
    if measured {
        *stats.errors.entry(code).or_default() += 1;
    }
}

/// `None` for an `{ok:true}` ack, else the error code (or what went wrong).
fn ack_error_code(res: &Result<Value, ClientError>) -> Option<String> {
    let code = match res {
        Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => return None,
        Ok(v) => v
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("bad_ack"),
        Err(ClientError::Timeout) => "ack_timeout",
        Err(ClientError::Closed) => "closed",
        Err(_) => "client_error",
    };
    Some(code.to_string())
}

/// utime+stime of `pid` (or this process) in µs.
fn cpu_us(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    parse_stat_cpu_ticks(&stat).map(|t| t * (1_000_000 / CLK_TCK))
}

/// utime (field 14) + stime (field 15) from a `/proc/PID/stat` line.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU µs per message of each pid between two [`pids_cpu_us`] samples: `{"<pid>": µs/msg}`.
fn cpu_by_pid(pids: &[u32], a: &[Option<u64>], b: &[Option<u64>], msgs: u64) -> Value {
    let mut m = serde_json::Map::new();
    for ((pid, a), b) in pids.iter().zip(a).zip(b) {
        let v = match (a, b) {
            (Some(a), Some(b)) if msgs > 0 => {
                json!(round3(b.saturating_sub(*a) as f64 / msgs as f64))
            }
            _ => Value::Null,
        };
        m.insert(pid.to_string(), v);
    }
    Value::Object(m)
}

fn pids_cpu_us(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|p| cpu_us(Some(*p))).collect()
}

/// The machine's steal time so far in µs, summed over its CPUs (`/proc/stat`, the `steal`
/// column of the `cpu` line): time this virtual machine's CPUs were runnable but the
/// hypervisor ran something else. A fan-out that took longer while steal rose was slowed
/// by the host, not by the servers.
fn steal_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_steal_ticks(stat.lines().next()?).map(|t| t * (1_000_000 / CLK_TCK))
}

/// The `steal` column (the 8th number) of the `cpu` line of `/proc/stat`.
fn parse_steal_ticks(cpu_line: &str) -> Option<u64> {
    let mut fields = cpu_line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    fields.nth(7)?.parse().ok()
}

fn servers_cpu_us(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_us(Some(*p))).sum()
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn count_lost(pairs: &[Pair], stats: &[SendStats]) -> u64 {
    pairs
        .iter()
        .zip(stats)
        .map(|(p, s)| {
            let st = lock(&p.recv);
            s.acked_seqs
                .iter()
                .filter(|&&seq| st.count.get(seq as usize).copied().unwrap_or(0) == 0)
                .count() as u64
        })
        .sum()
}

fn ms(us: u32) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run_step(args: &Args, run_id: &str, step: u32, rate: f64, pairs: &[Pair]) -> Value {
    let start = now_us() + 200_000;
    let ws = start + args.warmup.as_micros() as u64;
    let we = ws + args.duration.as_micros() as u64;
    for p in pairs {
        *lock(&p.recv) = RecvState {
            step,
            window: (ws, we),
            ..RecvState::default()
        };
    }
    let plan = Arc::new(StepPlan {
        run_id: run_id.into(),
        step,
        rate,
        npairs: pairs.len(),
        start,
        window: (ws, we),
        body_bytes: args.body_bytes,
        max_inflight: args.max_inflight.max(1),
        ack_timeout: args.ack_timeout,
    });
    eprintln!(
        "loadgen: step {step}: {rate} msgs/s, warmup {:?}, window {:?}",
        args.warmup, args.duration
    );
    let tasks: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tokio::spawn(sender_loop(
                p.sender.clone(),
                p.receiver_uid.clone(),
                i,
                plan.clone(),
            ))
        })
        .collect();

    // CPU samples at the window edges, progress once a second.
    tokio::time::sleep_until(instant_at(ws)).await;
    let srv0 = servers_cpu_us(&args.server_pids);
    let by_pid0 = pids_cpu_us(&args.server_pids);
    let gen0 = cpu_us(None);
    let mut last = DELIVERIES.load(Ordering::Relaxed);
    let mut tick = ws;
    while tick < we {
        tick = (tick + 1_000_000).min(we);
        tokio::time::sleep_until(instant_at(tick)).await;
        let d = DELIVERIES.load(Ordering::Relaxed);
        eprintln!(
            "loadgen: step {step} t={:.1}s delivered {} in the last interval",
            (tick - ws) as f64 / 1e6,
            d - last
        );
        last = d;
    }
    let srv1 = servers_cpu_us(&args.server_pids);
    let by_pid1 = pids_cpu_us(&args.server_pids);
    let gen1 = cpu_us(None);

    let mut stats = Vec::with_capacity(tasks.len());
    for t in tasks {
        stats.push(t.await.unwrap_or_default());
    }
    let drain_start = Instant::now();
    let mut lost = count_lost(pairs, &stats);
    while lost > 0 && drain_start.elapsed() < args.drain_timeout {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lost = count_lost(pairs, &stats);
    }
    let drain_ms = drain_start.elapsed().as_millis() as u64;

    let mut tot = SendStats::default();
    for s in &stats {
        tot.scheduled += s.scheduled;
        tot.sent += s.sent;
        tot.not_sent += s.not_sent;
        tot.acked += s.acked;
        tot.sent_total += s.sent_total;
        tot.acked_total += s.acked_total;
        for (k, v) in &s.errors {
            *tot.errors.entry(k.clone()).or_default() += v;
        }
    }
    let (mut delivered, mut in_window, mut dups, mut stray, mut misrouted) = (0, 0, 0, 0, 0);
    let mut lat = Vec::new();
    for p in pairs {
        let mut st = lock(&p.recv);
        delivered += st.delivered;
        in_window += st.in_window;
        dups += st.duplicates;
        stray += st.stray;
        misrouted += st.misrouted;
        lat.append(&mut st.lat_us);
    }
    lat.sort_unstable();
    let secs = args.duration.as_secs_f64();
    let delivered_per_sec = in_window as f64 / secs;
    let p99_ms = ms(percentile(&lat, 0.99));
    let keeps_up = delivered_per_sec >= 0.95 * rate
        && tot.not_sent == 0
        && args.slo_p99_ms.is_none_or(|slo| p99_ms <= slo);
    let cpu_per_msg = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if in_window > 0 => {
            json!(round3(b.saturating_sub(a) as f64 / in_window as f64))
        }
        _ => Value::Null,
    };
    let cpu_pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => json!(round3(b.saturating_sub(a) as f64 / (secs * 1e4))),
        _ => Value::Null,
    };
    let mut report = json!({
        "step": step,
        "scenario": "pairs",
        "run_id": run_id,
        "nodes": args.urls.len(),
        "sockets": pairs.len() * 2,
        "pairs": pairs.len(),
        "offered_rate": rate,
        "duration_s": secs,
        "warmup_s": args.warmup.as_secs_f64(),
        "body_bytes": args.body_bytes,
        "max_inflight": plan.max_inflight,
        "scheduled": tot.scheduled,
        "sent": tot.sent,
        "not_sent": tot.not_sent,
        "acked": tot.acked,
        "ack_errors": tot.errors,
        "delivered": delivered,
        "delivered_in_window": in_window,
        "sent_per_sec": round3(tot.sent as f64 / secs),
        "acked_per_sec": round3(tot.acked as f64 / secs),
        "delivered_per_sec": round3(delivered_per_sec),
        "keeps_up": keeps_up,
        "latency_samples": lat.len(),
        "latency_p50_ms": ms(percentile(&lat, 0.50)),
        "latency_p99_ms": p99_ms,
        "latency_p999_ms": ms(percentile(&lat, 0.999)),
        "latency_max_ms": ms(lat.last().copied().unwrap_or(0)),
        "sent_total": tot.sent_total,
        "acked_total": tot.acked_total,
        "lost": lost,
        "duplicates": dups,
        "stray": stray,
        "misrouted": misrouted,
        "drain_ms": drain_ms,
        "server_cpu_pct": cpu_pct(srv0, srv1),
        "server_cpu_us_per_msg": cpu_per_msg(srv0, srv1),
        "server_cpu_us_per_msg_by_pid": cpu_by_pid(&args.server_pids, &by_pid0, &by_pid1, in_window),
        "gen_cpu_pct": cpu_pct(gen0, gen1),
        "gen_cpu_us_per_msg": cpu_per_msg(gen0, gen1),
        "disconnects": DISCONNECTS.load(Ordering::Relaxed),
    });
    report["label"] = json!(args.label);
    report["server_pids"] = json!(args.server_pids);
    eprintln!(
        "loadgen: step {step}: offered {rate}/s sent {} acked {} delivered {:.0}/s p50 {}ms p99 {}ms lost {lost} errors {:?}{}",
        tot.sent,
        tot.acked,
        delivered_per_sec,
        report["latency_p50_ms"],
        report["latency_p99_ms"],
        tot.errors,
        if keeps_up { "" } else { " (NOT keeping up)" }
    );
    report
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cumulative_acker_acks_every_hundred_deliveries_and_on_the_tick() {
        let mut acker = CumulativeAcker::default();
        assert_eq!(acker.due_by_time(), None, "nothing arrived");
        for seq in 1..100 {
            assert_eq!(acker.received(seq), None);
        }
        assert_eq!(acker.received(100), Some(100));
        assert_eq!(acker.due_by_time(), None, "all acked");
        assert_eq!(acker.received(101), None);
        assert_eq!(acker.due_by_time(), Some(101));
        // A replayed (lower) Seq never lowers the ack.
        assert_eq!(acker.received(50), None);
        assert_eq!(acker.due_by_time(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn msg_ids_and_bodies() {
        assert_eq!(parse_msg_id("1700000000-2-17-345"), Some((2, 17, 345)));
        assert_eq!(parse_msg_id("my-run-2-17-345"), Some((2, 17, 345)));
        assert_eq!(parse_msg_id("2-17-345"), None);
        assert_eq!(parse_msg_id("r-x-17-345"), None);
        let b = make_body(123456, 64);
        assert_eq!(b.len(), 64);
        assert!(b.starts_with("t=123456;x"));
        assert_eq!(parse_body_time(&b), Some(123456));
        assert_eq!(make_body(123456, 4), "t=123456;");
        assert_eq!(parse_body_time("hello"), None);
    }

    #[test]
    fn proc_stat() {
        let line = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 4 0 100 1000 10";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_us(None).is_some());
    }

    #[test]
    fn steal_is_the_eighth_number_of_the_cpu_line() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  3875427 19781 816058 2992352 29492 0 51372 8153 0 0";
        assert_eq!(parse_steal_ticks(line), Some(8153));
        assert_eq!(
            parse_steal_ticks("cpu0 1 2 3 4 5 6 7 42 0 0"),
            None,
            "one CPU's line"
        );
        assert_eq!(parse_steal_ticks("cpu  1 2 3"), None, "too short");
        assert!(steal_us().is_some());
    }

    #[test]
    fn timeline_interleaves_pairs() {
        let plan = StepPlan {
            run_id: "r".into(),
            step: 0,
            rate: 1000.0,
            npairs: 4,
            start: 1_000,
            window: (0, 0),
            body_bytes: 64,
            max_inflight: 1,
            ack_timeout: Duration::from_secs(1),
        };
        // 1000 msgs/s over 4 pairs: one message every 1 ms, round robin.
        assert_eq!(plan.due(0, 0), 1_000);
        assert_eq!(plan.due(1, 0), 2_000);
        assert_eq!(plan.due(3, 0), 4_000);
        assert_eq!(plan.due(0, 1), 5_000);
    }
}
