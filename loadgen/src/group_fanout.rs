//! Scenario `group-fanout` (benchmark scenario 3): one message to a large group, and the time
//! until every online member has it.
//!
//! `--members N` sockets join (open auth mode) with uids `g<tag>_<i>`, member `i` on node
//! `i % nodes`, connected in batches of `--connect-batch`. `<tag>` is 6 base-36 characters
//! hashed from the run id: uids stay short because every member's `notify` carries the whole
//! member list, so creating a group of N moves O(N²) bytes (10,000 members: ~1.4 GB).
//!
//! Member 0 creates the group (`create`, `To` = `""`, Body = the JSON-encoded list of all
//! uids; the ack names the server-made gid) and waits until every member has its `notify`.
//! Then it sends `--messages` group messages one after another, each `--pause` after the
//! previous one reached every other member (or `--fanout-timeout` passed). Every member acks
//! every delivery (`43<id>[]`, the client's `auto_ack`).
//!
//! Per message: fan-out time = the last member's receipt − the send time; ack time = the
//! sender's ack − the send time; the number of distinct members that received it (it must be
//! N − 1: the sending socket gets no copy). Both ends use this process's monotonic clock, so
//! the fan-out time includes the generator's own time to read N − 1 frames (on the same
//! cores as the servers). CPU of the `--server-pids` and of the generator is sampled from just
//! before the first message to [`CONFIRM_TAIL`] (or one `--pause`, if longer) after the last
//! one, so the ack confirmations of the last fan-out are counted, and divided by the
//! deliveries; the create is reported separately.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::Notify;
use webchat_loadgen::client::{EventStream, ServerEvent, SioClient};

use crate::{
    ack_error_code, check_fd_limit, connect_and_join_observed, cpu_us, lock, make_body, ms,
    note_disconnect, now_us, percentile, round3, servers_cpu_us, steal_us, Args, SHUTTING_DOWN,
};

/// How long after the last message the CPU is still counted: webchat confirms acks in the
/// inbox up to 5 s after they arrive (its `CONFIRM_DELAY`), and that work belongs to the
/// fan-out.
const CONFIRM_TAIL: Duration = Duration::from_secs(6);

/// Receipt times (µs since generator start) of one event — the create's `notify` or one group
/// message — over the members, one per member.
struct Arrivals {
    /// Receipts that make it complete.
    target: usize,
    times: Mutex<Vec<u64>>,
    complete: Notify,
}

impl Arrivals {
    fn new(target: usize) -> Self {
        Arrivals {
            target,
            times: Mutex::new(Vec::with_capacity(target)),
            complete: Notify::new(),
        }
    }

    /// Records one member's (first) receipt.
    fn record(&self, t_us: u64) {
        let n = {
            let mut times = lock(&self.times);
            times.push(t_us);
            times.len()
        };
        if n == self.target {
            self.complete.notify_one();
        }
    }

    fn count(&self) -> usize {
        lock(&self.times).len()
    }

    /// Waits until every member has it; false if `deadline` passed first.
    async fn wait_complete(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.count() >= self.target {
                return true;
            }
            // A notify_one() before this point left a permit: no lost wake-up.
            if tokio::time::timeout_at(deadline, self.complete.notified())
                .await
                .is_err()
            {
                return self.count() >= self.target;
            }
        }
    }

    /// Receipt delays after `t_send` in µs, sorted.
    fn delays(&self, t_send: u64) -> Vec<u32> {
        let mut d: Vec<u32> = lock(&self.times)
            .iter()
            .map(|t| t.saturating_sub(t_send).min(u32::MAX as u64) as u32)
            .collect();
        d.sort_unstable();
        d
    }
}

/// What every member task reports into.
struct Shared {
    tag: String,
    sender_uid: String,
    /// Set from the create ack, before the first group message.
    gid: OnceLock<String>,
    notify: Arrivals,
    messages: Vec<Arrivals>,
    duplicates: AtomicU64,
    /// `chat` events of another run or type, or with an unknown MsgID.
    stray: AtomicU64,
    /// Group messages whose `From` is not the gid or whose `Originated` is not the sender.
    misrouted: AtomicU64,
    /// Stored events (notify, message) that came without an ack request.
    no_ack_request: AtomicU64,
    /// Copies of its own messages at the sending socket (the server should send none).
    sender_copies: AtomicU64,
    /// Length of the create's member list as JSON: every `notify` Body (the same uids,
    /// sorted) must be as long.
    notify_body_bytes: usize,
    /// `notify`s whose Body is not the whole member list.
    bad_notify: AtomicU64,
}

/// 6 base-36 characters from the run id (FNV-1a), for short uids and MsgIDs.
fn short_tag(run_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..6)
        .map(|_| {
            let c = digits[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

/// Group message MsgIDs are `<tag>-m<k>`; returns k.
fn parse_message_index(tag: &str, msg_id: &str) -> Option<usize> {
    msg_id.strip_prefix(tag)?.strip_prefix("-m")?.parse().ok()
}

fn create_msg_id(tag: &str) -> String {
    format!("{tag}-create")
}

/// Takes the `chat` events of member `idx` as its connection reads them (acks are sent by
/// `auto_ack`): called in the connection's own task, so an arrival costs no hand-off to
/// another task and is timed when read.
struct MemberObserver {
    idx: usize,
    shared: Arc<Shared>,
    create_id: String,
    notified: bool,
    seen: Vec<bool>,
}

impl MemberObserver {
    fn new(idx: usize, shared: Arc<Shared>) -> Self {
        MemberObserver {
            idx,
            create_id: create_msg_id(&shared.tag),
            notified: false,
            seen: vec![false; shared.messages.len()],
            shared,
        }
    }

    fn observe(&mut self, ev: ServerEvent) {
        if ev.name != "chat" {
            return;
        }
        let t = now_us();
        let shared = &*self.shared;
        let field = |name: &str| ev.data.get(name).and_then(Value::as_str);
        let msg_id = field("MsgID").unwrap_or_default();
        match field("EvtType") {
            Some("notify") if msg_id == self.create_id => {
                if ev.ack_id.is_none() {
                    shared.no_ack_request.fetch_add(1, Ordering::Relaxed);
                }
                // A length check, not a parse: 10,000 members each get a ~140 KB list.
                if field("Body").map(str::len) != Some(shared.notify_body_bytes) {
                    shared.bad_notify.fetch_add(1, Ordering::Relaxed);
                }
                if self.notified {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.notified = true;
                    shared.notify.record(t);
                }
            }
            Some("message") => {
                let Some(k) =
                    parse_message_index(&shared.tag, msg_id).filter(|&k| k < self.seen.len())
                else {
                    shared.stray.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if self.idx == 0 {
                    shared.sender_copies.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if ev.ack_id.is_none() {
                    shared.no_ack_request.fetch_add(1, Ordering::Relaxed);
                }
                let gid = shared.gid.get().map(String::as_str);
                if field("From") != gid || field("Originated") != Some(&shared.sender_uid) {
                    shared.misrouted.fetch_add(1, Ordering::Relaxed);
                }
                if self.seen[k] {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.seen[k] = true;
                    shared.messages[k].record(t);
                }
            }
            _ => {
                shared.stray.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Notes how member `idx`'s connection ended (its events go to its [`MemberObserver`]).
async fn watch_member(mut events: EventStream, idx: usize) {
    while events.recv().await.is_some() {}
    note_disconnect(&format!("member {idx}"), &events);
}

/// Connects and joins every member, `--connect-batch` at a time, member `i` on node
/// `i % nodes`; starts their receive tasks.
async fn connect_members(
    args: &Args,
    uids: &[String],
    shared: &Arc<Shared>,
) -> Result<Vec<SioClient>> {
    let nodes = args.urls.len();
    let batch = args.connect_batch.max(1);
    let mut clients = Vec::with_capacity(uids.len());
    for start in (0..uids.len()).step_by(batch) {
        let end = (start + batch).min(uids.len());
        let joins = (start..end).map(|i| {
            let mut member = MemberObserver::new(i, shared.clone());
            async move {
                connect_and_join_observed(
                    &args.urls[i % nodes],
                    &uids[i],
                    args.ack_timeout,
                    move |ev| member.observe(ev),
                )
                .await
                .map(|(client, events)| (i, client, events))
            }
        });
        for r in futures_util::future::join_all(joins).await {
            let (i, client, events) = r?;
            tokio::spawn(watch_member(events, i));
            clients.push(client);
        }
        if end / 1000 > start / 1000 || end == uids.len() {
            eprintln!("loadgen: {end} / {} members joined", uids.len());
        }
    }
    Ok(clients)
}

/// One group message as sent.
struct Sent {
    t_send: u64,
    t_ack: u64,
    /// `None`: acked `ok`.
    ack_error: Option<String>,
    /// The machine's steal time while the message went out (see [`steal_us`]).
    steal_us: Option<u64>,
}

/// Runs the scenario and prints its one JSON line.
pub(crate) async fn run(args: &Args, run_id: &str) -> Result<()> {
    let n = args.members;
    if n < 2 {
        bail!("--members must be at least 2");
    }
    if args.messages == 0 {
        bail!("--messages must be at least 1");
    }
    check_fd_limit(n);
    let tag = short_tag(run_id);
    let uids: Vec<String> = (0..n).map(|i| format!("g{tag}_{i}")).collect();
    let shared = Arc::new(Shared {
        tag: tag.clone(),
        sender_uid: uids[0].clone(),
        gid: OnceLock::new(),
        notify: Arrivals::new(n),
        messages: (0..args.messages).map(|_| Arrivals::new(n - 1)).collect(),
        duplicates: AtomicU64::new(0),
        stray: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        no_ack_request: AtomicU64::new(0),
        sender_copies: AtomicU64::new(0),
        notify_body_bytes: serde_json::to_string(&uids)?.len(),
        bad_notify: AtomicU64::new(0),
    });
    let nodes = args.urls.len();
    eprintln!(
        "loadgen: run {run_id} (tag {tag}), group-fanout: {n} members over {nodes} node(s), \
         {} messages, connecting in batches of {}",
        args.messages, args.connect_batch
    );
    let t_connect = Instant::now();
    let clients = connect_members(args, &uids, &shared).await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    eprintln!("loadgen: all {n} members joined in {connect_s:.1}s");
    let sender = clients[0].clone();

    // Create the group: ack, then every member's notify.
    let create = json!({
        "EvtType": "create",
        "To": "",
        "MsgID": create_msg_id(&tag),
        "Body": serde_json::to_string(&uids)?,
    });
    let srv_c0 = servers_cpu_us(&args.server_pids);
    let steal_c0 = steal_us();
    let t_create = now_us();
    let deadline = tokio::time::Instant::now() + args.fanout_timeout;
    let reply = sender
        .emit_with_ack("chat", &create, args.fanout_timeout)
        .await;
    let create_ack_us = now_us() - t_create;
    let reply = match reply {
        Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => v,
        other => bail!("create refused or not acked: {other:?}"),
    };
    let gid = reply
        .get("Group")
        .and_then(Value::as_str)
        .context("create ack without Group")?
        .to_string();
    let _ = shared.gid.set(gid.clone());
    let notified_all = shared.notify.wait_complete(deadline).await;
    let notify_delays = shared.notify.delays(t_create);
    let srv_c1 = servers_cpu_us(&args.server_pids);
    let create_steal = grown(steal_c0, steal_us());
    let create_us = notify_delays.last().copied().filter(|_| notified_all);
    eprintln!(
        "loadgen: created {gid}: ack {:.1} ms, {} / {n} notified{}",
        create_ack_us as f64 / 1000.0,
        notify_delays.len(),
        match create_us {
            Some(us) => format!(", the last after {:.1} ms", us as f64 / 1000.0),
            None => " (timed out)".to_string(),
        }
    );

    // Group messages, one after another.
    tokio::time::sleep(args.pause).await;
    let srv0 = servers_cpu_us(&args.server_pids);
    let gen0 = cpu_us(None);
    let mut sent = Vec::with_capacity(args.messages);
    for (k, arrivals) in shared.messages.iter().enumerate() {
        if k > 0 {
            tokio::time::sleep(args.pause).await;
        }
        let steal0 = steal_us();
        let t_send = now_us();
        let msg = json!({
            "EvtType": "message",
            "To": gid,
            "MsgID": format!("{tag}-m{k}"),
            "Body": make_body(t_send, args.body_bytes),
            "Timestamp": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
        });
        let deadline = tokio::time::Instant::now() + args.fanout_timeout;
        let ack = async {
            let res = sender
                .emit_with_ack("chat", &msg, args.fanout_timeout)
                .await;
            (ack_error_code(&res), now_us())
        };
        let ((ack_error, t_ack), complete) = tokio::join!(ack, arrivals.wait_complete(deadline));
        let steal = grown(steal0, steal_us());
        let delays = arrivals.delays(t_send);
        eprintln!(
            "loadgen: message {k}: ack {:.1} ms{}, {} / {} members, the last after {:.1} ms{}{}",
            (t_ack - t_send) as f64 / 1000.0,
            ack_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            delays.len(),
            n - 1,
            delays.last().copied().unwrap_or(0) as f64 / 1000.0,
            if complete { "" } else { " (timed out)" },
            match steal {
                Some(us) if us > 0 => format!(", steal {:.0} ms", us as f64 / 1000.0),
                _ => String::new(),
            }
        );
        sent.push(Sent {
            t_send,
            t_ack,
            ack_error,
            steal_us: steal,
        });
    }
    tokio::time::sleep(args.pause.max(CONFIRM_TAIL)).await;
    let srv1 = servers_cpu_us(&args.server_pids);
    let gen1 = cpu_us(None);

    let report = report(
        args,
        run_id,
        &shared,
        &sent,
        Create {
            gid: &gid,
            ack_us: create_ack_us,
            done_us: create_us,
            notified: notify_delays.len(),
            server_cpu_us: grown(srv_c0, srv_c1),
            steal_us: create_steal,
        },
        connect_s,
        grown(srv0, srv1),
        grown(gen0, gen1),
    );
    println!("{report}");
    eprintln!(
        "loadgen: group-fanout {n} members: fan-out p50 {} ms p99 {} ms max {} ms, ack p50 {} ms, \
         delivered_all {}",
        report["fanout_ms_p50"],
        report["fanout_ms_p99"],
        report["fanout_ms_max"],
        report["ack_ms_p50"],
        report["delivered_all"]
    );

    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    futures_util::future::join_all(clients.into_iter().map(SioClient::close)).await;
    Ok(())
}

/// How much a counter (CPU or steal time) grew between two readings; `None` if either
/// reading failed.
fn grown(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    start.zip(end).map(|(a, b)| b.saturating_sub(a))
}

struct Create<'a> {
    gid: &'a str,
    ack_us: u64,
    /// Until the last notify; `None` if not every member got one.
    done_us: Option<u32>,
    notified: usize,
    server_cpu_us: Option<u64>,
    /// The machine's steal time during the create (see [`steal_us`]).
    steal_us: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    run_id: &str,
    shared: &Shared,
    sent: &[Sent],
    create: Create<'_>,
    connect_s: f64,
    server_cpu_us: Option<u64>,
    gen_cpu_us: Option<u64>,
) -> Value {
    let n = args.members;
    let mut delivered = Vec::with_capacity(sent.len());
    let mut fanout = Vec::with_capacity(sent.len());
    let mut first = Vec::with_capacity(sent.len());
    let mut all_delays = Vec::new();
    for (arrivals, s) in shared.messages.iter().zip(sent) {
        let d = arrivals.delays(s.t_send);
        delivered.push(d.len());
        // Fan-out time only for messages that reached everyone.
        fanout.push(d.last().copied().filter(|_| d.len() >= n - 1));
        first.push(d.first().copied());
        all_delays.extend_from_slice(&d);
    }
    all_delays.sort_unstable();
    let mut complete: Vec<u32> = fanout.iter().flatten().copied().collect();
    complete.sort_unstable();
    let mut acks: Vec<u32> = sent
        .iter()
        .filter(|s| s.ack_error.is_none())
        .map(|s| (s.t_ack - s.t_send).min(u32::MAX as u64) as u32)
        .collect();
    acks.sort_unstable();
    let mut ack_errors: BTreeMap<String, u64> = BTreeMap::new();
    for e in sent.iter().filter_map(|s| s.ack_error.clone()) {
        *ack_errors.entry(e).or_default() += 1;
    }
    let delivered_total: usize = delivered.iter().sum();
    let delivered_all = create.notified == n
        && shared.bad_notify.load(Ordering::Relaxed) == 0
        && ack_errors.is_empty()
        && delivered.iter().all(|&d| d == n - 1);
    let opt_ms = |v: Option<u32>| v.map_or(Value::Null, |us| json!(ms(us)));
    let stat = |v: &[u32], q: f64| {
        if v.is_empty() {
            Value::Null
        } else {
            json!(ms(percentile(v, q)))
        }
    };
    let per_msg = |cpu: Option<u64>| match cpu {
        Some(us) if delivered_total > 0 => json!(round3(us as f64 / delivered_total as f64)),
        _ => Value::Null,
    };
    let cpu_ms = |cpu: Option<u64>| cpu.map_or(Value::Null, |us| json!(round3(us as f64 / 1e3)));
    let mut report = json!({
        "scenario": "group-fanout",
        "run_id": run_id,
        "nodes": args.urls.len(),
        "members": n,
        "messages": sent.len(),
        "body_bytes": args.body_bytes,
        "pause_ms": args.pause.as_millis() as u64,
        "gid": create.gid,
        "connect_s": round3(connect_s),
        "create_ack_ms": round3(create.ack_us as f64 / 1e3),
        "create_ms": opt_ms(create.done_us),
        "create_notified": create.notified,
        "create_server_cpu_ms": cpu_ms(create.server_cpu_us),
        "expected_per_message": n - 1,
        "delivered": delivered,
        "delivered_total": delivered_total,
        "delivered_all": delivered_all,
        "fanout_ms": fanout.iter().map(|v| opt_ms(*v)).collect::<Vec<_>>(),
        "fanout_ms_p50": stat(&complete, 0.50),
        "fanout_ms_p99": stat(&complete, 0.99),
        "fanout_ms_max": stat(&complete, 1.0),
        "first_ms": first.iter().map(|v| opt_ms(*v)).collect::<Vec<_>>(),
        "member_ms_p50": stat(&all_delays, 0.50),
        "member_ms_p99": stat(&all_delays, 0.99),
        "ack_ms": sent.iter().map(|s| round3((s.t_ack - s.t_send) as f64 / 1e3)).collect::<Vec<_>>(),
        "ack_ms_p50": stat(&acks, 0.50),
        "ack_ms_p99": stat(&acks, 0.99),
        "ack_ms_max": stat(&acks, 1.0),
        "ack_errors": ack_errors,
        "steal_ms": sent.iter().map(|s| s.steal_us.map_or(Value::Null, |us| json!(round3(us as f64 / 1e3)))).collect::<Vec<_>>(),
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "stray": shared.stray.load(Ordering::Relaxed),
        "misrouted": shared.misrouted.load(Ordering::Relaxed),
        "no_ack_request": shared.no_ack_request.load(Ordering::Relaxed),
        "sender_copies": shared.sender_copies.load(Ordering::Relaxed),
        "server_cpu_ms": cpu_ms(server_cpu_us),
        "server_cpu_us_per_msg": per_msg(server_cpu_us),
        "gen_cpu_ms": cpu_ms(gen_cpu_us),
        "gen_cpu_us_per_msg": per_msg(gen_cpu_us),
        "disconnects": crate::DISCONNECTS.load(Ordering::Relaxed),
    });
    // Added apart: one `json!` with every field exceeds the macro's recursion limit.
    if let Value::Object(fields) = &mut report {
        fields.insert(
            "bad_notify".into(),
            json!(shared.bad_notify.load(Ordering::Relaxed)),
        );
        fields.insert("create_steal_ms".into(), cpu_ms(create.steal_us));
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_stable_uid_characters() {
        let a = short_tag("1795413605876729500");
        assert_eq!(a.len(), 6);
        assert_eq!(a, short_tag("1795413605876729500"));
        assert_ne!(a, short_tag("1795413605876729501"));
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    }

    #[test]
    fn message_indexes() {
        assert_eq!(parse_message_index("abc123", "abc123-m0"), Some(0));
        assert_eq!(parse_message_index("abc123", "abc123-m17"), Some(17));
        assert_eq!(parse_message_index("abc123", "abc124-m1"), None);
        assert_eq!(parse_message_index("abc123", "abc123-create"), None);
        assert_eq!(parse_message_index("abc123", "abc123-mx"), None);
    }

    #[tokio::test]
    async fn arrivals_complete_and_time_out() {
        let a = Arrivals::new(2);
        a.record(150);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert!(!a.wait_complete(soon).await);
        a.record(120);
        // Completed before anyone waited: the stored permit is not lost.
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert!(a.wait_complete(later).await);
        assert_eq!(a.delays(100), vec![20, 50]);
        assert_eq!(a.delays(200), vec![0, 0]);
    }
}
