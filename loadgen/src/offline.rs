//! Scenarios 2, 4 and 5 of the benchmarks: many idle sockets, replay of a large backlog, and a
//! reconnect storm of users with queued messages.
//!
//! - `idle` (scenario 2): `--sockets` sockets connect to the first `--urls` node and `join`
//!   (uids `id<run>_<i>`), `--connect-batch` at a time (each batch waits for its joins), then
//!   stay idle for `--hold`. The RSS (`VmRSS` of `/proc/PID/status`) of every `--server-pids`
//!   process is read before the first connect and after the hold; the report gives KiB per
//!   connection for each pid (the first one is the headline: pass the chat node first).
//!   `--no-join` only connects (no `join`): the share of the transport alone.
//! - `replay` (scenario 4): a sender queues `--replay-messages` messages (`--send-inflight`
//!   un-acked at a time) for a user who has never connected, on the first node; then the
//!   user connects to the last node and joins. Replay time = from the start of the connect
//!   to the receipt of the last distinct message. Needs store-and-forward (webchat only).
//! - `storm` (scenario 5): `--senders` sockets queue `--per-user` messages for each of
//!   `--users` offline users; then every user connects (user `i` to node `i % nodes`) and
//!   joins, at most `--connect-batch` connects in flight at any time (a new one starts as
//!   soon as one finishes; up to 3 attempts each, every failure counted). Drain time = from
//!   the first connect to the receipt of the last queued message.
//!
//! Every client socket can be bound to one of `--source-ips` loopback source addresses
//! (127.0.0.2, 127.0.0.3, ...), so tens of thousands of sockets do not exhaust the ephemeral
//! ports of one address. Each scenario prints one JSON line on stdout; CPU per message (or
//! per connection for `idle`) is reported summed over `--server-pids` and per pid.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use webchat_loadgen::client::{ClientOptions, EventStream, SioClient};

use crate::{
    ack_error_code, check_fd_limit, connect_and_join, connect_and_join_from, cpu_by_pid, cpu_us,
    lock, make_body, ms, note_disconnect, now_us, percentile, pids_cpu_us, round3, Args,
    DISCONNECTS, SHUTTING_DOWN,
};

/// Source address of client socket `i`: 127.0.0.2 + i mod `--source-ips`, or none.
pub(crate) fn source_ip(args: &Args, i: usize) -> Option<IpAddr> {
    let n = args.source_ips.min(250) as usize;
    (n > 0).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % n) as u8)))
}

/// `VmRSS` of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn sum_cpu(v: &[Option<u64>]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().copied().sum()
}

/// µs of CPU per unit between two samples (`null` when unknown).
fn per_unit(a: Option<u64>, b: Option<u64>, units: u64) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if units > 0 => json!(round3(b.saturating_sub(a) as f64 / units as f64)),
        _ => Value::Null,
    }
}

/// A short error label for counting (the first line of the error chain, shortened).
fn error_label(e: &anyhow::Error) -> String {
    let s = format!("{:#}", e);
    let root = s.rsplit(": ").next().unwrap_or(&s);
    root.chars().take(80).collect()
}

fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
}

async fn close_all(clients: Vec<SioClient>) {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
    futures_util::future::join_all(clients.into_iter().map(SioClient::close)).await;
}

/// Scenario 2: idle sockets on one node, server RSS per connection.
pub(crate) async fn run_idle(args: &Args, run_id: &str) -> Result<()> {
    let n = args.sockets;
    if n == 0 {
        bail!("--sockets must be at least 1");
    }
    check_fd_limit(n);
    let url = args.urls[0].as_str();
    let pids = &args.server_pids;
    let rss0: Vec<Option<u64>> = pids.iter().map(|p| rss_kib(*p)).collect();
    let cpu0 = pids_cpu_us(pids);
    let gen0 = cpu_us(None);
    let batch = args.connect_batch.max(1);
    eprintln!(
        "loadgen: idle: {n} sockets to {url} in batches of {batch}, {} source address(es)",
        args.source_ips.max(1)
    );
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut errors = BTreeMap::new();
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + batch).min(n);
        let connects = (i0..i1).map(|i| async move {
            let uid = format!("id{run_id}_{i}");
            if args.no_join {
                let opts = ClientOptions {
                    auto_ack: true,
                    connect_timeout: args.ack_timeout,
                    bind_addr: source_ip(args, i),
                    ..ClientOptions::default()
                };
                return SioClient::connect(url, None, opts)
                    .await
                    .map_err(anyhow::Error::from);
            }
            connect_and_join_from(url, &uid, args.ack_timeout, source_ip(args, i)).await
        });
        for r in futures_util::future::join_all(connects).await {
            match r {
                Ok((client, events)) => {
                    tokio::spawn(drain(events));
                    clients.push(client);
                }
                Err(e) => {
                    if errors.values().sum::<u64>() < 5 {
                        eprintln!("loadgen: idle: {e:#}");
                    }
                    bump(&mut errors, error_label(&e));
                }
            }
        }
        if i1 % 5000 < batch || i1 == n {
            eprintln!(
                "loadgen: idle: {i1} / {n} tried, {} joined, {:.1}s",
                clients.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        i0 = i1;
    }
    let ramp = t0.elapsed();
    let cpu1 = pids_cpu_us(pids);
    let gen1 = cpu_us(None);
    let joined = clients.len() as u64;
    eprintln!(
        "loadgen: idle: holding {joined} sockets for {:?}",
        args.hold
    );
    tokio::time::sleep(args.hold).await;
    let rss1: Vec<Option<u64>> = pids.iter().map(|p| rss_kib(*p)).collect();
    let connected = clients.iter().filter(|c| c.is_connected()).count() as u64;
    close_all(clients).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2: Vec<Option<u64>> = pids.iter().map(|p| rss_kib(*p)).collect();

    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if connected > 0 => {
            json!(round3((b as f64 - a as f64) / connected as f64))
        }
        _ => Value::Null,
    };
    let mut rss = serde_json::Map::new();
    for (i, pid) in pids.iter().enumerate() {
        rss.insert(
            pid.to_string(),
            json!({
                "before_kib": rss0[i],
                "after_kib": rss1[i],
                "after_close_kib": rss2[i],
                "kib_per_conn": per_conn(rss0[i], rss1[i]),
            }),
        );
    }
    let report = json!({
        "scenario": "idle",
        "label": args.label,
        "run_id": run_id,
        "server_pids": pids,
        "url": url,
        "sockets": n,
        "join": !args.no_join,
        "joined": joined,
        "connect_errors": errors,
        "connected_after_hold": connected,
        "ramp_s": round3(ramp.as_secs_f64()),
        "connects_per_sec": round3(joined as f64 / ramp.as_secs_f64().max(1e-9)),
        "hold_s": args.hold.as_secs_f64(),
        "source_ips": args.source_ips,
        "rss_kib_per_conn": pids.first().map_or(Value::Null, |_| per_conn(rss0[0], rss1[0])),
        "rss": rss,
        "server_cpu_us_per_conn": per_unit(sum_cpu(&cpu0), sum_cpu(&cpu1), joined),
        "server_cpu_us_per_conn_by_pid": cpu_by_pid(pids, &cpu0, &cpu1, joined),
        "gen_cpu_us_per_conn": per_unit(gen0, gen1, joined),
        "disconnects": DISCONNECTS.load(Ordering::Relaxed),
    });
    println!("{report}");
    Ok(())
}

async fn drain(mut events: EventStream) {
    while events.recv().await.is_some() {}
    note_disconnect("idle socket", &events);
}

/// Sends every `(to, msg_id)` as a `message`, `inflight` un-acked at a time; returns the
/// number acked `ok` and the errors by code.
async fn send_all(
    client: &SioClient,
    msgs: Vec<(String, String)>,
    inflight: usize,
    timeout: Duration,
    body_bytes: usize,
) -> (u64, BTreeMap<String, u64>) {
    let mut acked = 0;
    let mut errors = BTreeMap::new();
    let mut pending = FuturesUnordered::new();
    let mut it = msgs.into_iter();
    loop {
        while pending.len() < inflight.max(1) {
            let Some((to, id)) = it.next() else { break };
            let msg = json!({
                "EvtType": "message",
                "To": to,
                "MsgID": id,
                "Body": make_body(now_us(), body_bytes),
            });
            pending.push(async move { client.emit_with_ack("chat", &msg, timeout).await });
        }
        let Some(res) = pending.next().await else {
            break;
        };
        match ack_error_code(&res) {
            None => acked += 1,
            Some(code) => bump(&mut errors, code),
        }
    }
    (acked, errors)
}

fn msg_field<'a>(ev: &'a Value, field: &str) -> Option<&'a str> {
    ev.get(field).and_then(Value::as_str)
}

/// Scenario 4: a 10,000-message backlog replayed to one user.
pub(crate) async fn run_replay(args: &Args, run_id: &str) -> Result<()> {
    let n = args.replay_messages;
    if n == 0 {
        bail!("--replay-messages must be at least 1");
    }
    let s_url = args.urls[0].as_str();
    let r_url = args.urls[args.urls.len() - 1].as_str();
    let sender_uid = format!("rp{run_id}_s");
    let receiver_uid = format!("rp{run_id}_r");
    let prefix = format!("{run_id}-rp-");
    let (sender, sender_events) = connect_and_join(s_url, &sender_uid, args.ack_timeout).await?;
    tokio::spawn(drain(sender_events));

    eprintln!("loadgen: replay: queueing {n} messages for {receiver_uid} (offline) via {s_url}");
    let msgs = (0..n)
        .map(|k| (receiver_uid.clone(), format!("{prefix}{k}")))
        .collect();
    let tq = Instant::now();
    let (acked, send_errors) = send_all(
        &sender,
        msgs,
        args.send_inflight,
        args.ack_timeout,
        args.body_bytes,
    )
    .await;
    let queue_s = tq.elapsed().as_secs_f64();
    eprintln!("loadgen: replay: {acked} acked in {queue_s:.2}s, errors {send_errors:?}");
    tokio::time::sleep(args.pause).await;

    let pids = &args.server_pids;
    let cpu0 = pids_cpu_us(pids);
    let gen0 = cpu_us(None);
    let t0 = now_us();
    let (receiver, mut events) = connect_and_join(r_url, &receiver_uid, args.ack_timeout).await?;
    let t_join = now_us();
    let mut seen = vec![false; n];
    let (mut distinct, mut dups, mut stray, mut out_of_order) = (0usize, 0u64, 0u64, 0u64);
    let (mut t_first, mut t_last) = (None, None);
    let mut last_seq = 0u64;
    let deadline = tokio::time::Instant::now() + args.fanout_timeout;
    while distinct < n {
        let ev = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                note_disconnect(&receiver_uid, &events);
                break;
            }
            Err(_) => break,
        };
        if ev.name != "chat" || msg_field(&ev.data, "EvtType") != Some("message") {
            continue;
        }
        let k = msg_field(&ev.data, "MsgID")
            .and_then(|id| id.strip_prefix(prefix.as_str()))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|&k| k < n);
        let Some(k) = k else {
            stray += 1;
            continue;
        };
        if let Some(seq) = ev.data.get("Seq").and_then(Value::as_u64) {
            if seq <= last_seq {
                out_of_order += 1;
            }
            last_seq = last_seq.max(seq);
        }
        if seen[k] {
            dups += 1;
            continue;
        }
        seen[k] = true;
        distinct += 1;
        let t = now_us();
        t_first.get_or_insert(t);
        t_last = Some(t);
    }
    let cpu1 = pids_cpu_us(pids);
    let gen1 = cpu_us(None);
    let since = |t: Option<u64>| t.map_or(Value::Null, |t| json!(ms((t - t0) as u32)));
    let report = json!({
        "scenario": "replay",
        "label": args.label,
        "run_id": run_id,
        "server_pids": pids,
        "sender_url": s_url,
        "receiver_url": r_url,
        "messages": n,
        "queued_acked": acked,
        "queue_errors": send_errors,
        "queue_s": round3(queue_s),
        "queue_msgs_per_sec": round3(acked as f64 / queue_s.max(1e-9)),
        "join_ms": ms((t_join - t0) as u32),
        "first_ms": since(t_first),
        "last_ms": since(t_last),
        "received": distinct,
        "delivered_all": distinct == n,
        "duplicates": dups,
        "stray": stray,
        "out_of_order": out_of_order,
        "server_cpu_us_per_msg": per_unit(sum_cpu(&cpu0), sum_cpu(&cpu1), distinct as u64),
        "server_cpu_us_per_msg_by_pid": cpu_by_pid(pids, &cpu0, &cpu1, distinct as u64),
        "gen_cpu_us_per_msg": per_unit(gen0, gen1, distinct as u64),
        "disconnects": DISCONNECTS.load(Ordering::Relaxed),
    });
    println!("{report}");
    close_all(vec![sender, receiver]).await;
    Ok(())
}

/// Scenario 5 state shared by the user tasks.
struct Storm {
    per_user: usize,
    expected: u64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    /// Time (µs) of the last new delivery.
    last_us: AtomicU64,
    done: Notify,
    connect_us: Mutex<Vec<u32>>,
    connect_errors: Mutex<BTreeMap<String, u64>>,
    failed_users: AtomicU64,
    last_join_us: AtomicU64,
    clients: Mutex<Vec<SioClient>>,
}

/// Scenario 5: every user with queued messages reconnects at once.
pub(crate) async fn run_storm(args: &Args, run_id: &str) -> Result<()> {
    let (users, per_user, nsend) = (args.users, args.per_user, args.senders.max(1));
    if users == 0 || per_user == 0 {
        bail!("--users and --per-user must be at least 1");
    }
    check_fd_limit(users + nsend);
    let nodes = args.urls.len();
    let prefix = format!("{run_id}-st-");
    let user_uid = |i: usize| format!("st{run_id}_{i}");

    // Queue: sender j (on node j % nodes) sends to users j, j + nsend, ...
    let mut senders = Vec::with_capacity(nsend);
    for j in 0..nsend {
        let uid = format!("st{run_id}_s{j}");
        let (client, events) =
            connect_and_join(&args.urls[j % nodes], &uid, args.ack_timeout).await?;
        tokio::spawn(drain(events));
        senders.push(client);
    }
    eprintln!(
        "loadgen: storm: queueing {per_user} messages for each of {users} offline users from {nsend} senders"
    );
    let tq = Instant::now();
    let queues = senders.iter().enumerate().map(|(j, client)| {
        let msgs = (j..users)
            .step_by(nsend)
            .flat_map(|i| (0..per_user).map(move |m| (i, m)))
            .map(|(i, m)| (user_uid(i), format!("{prefix}{i}-{m}")))
            .collect();
        send_all(
            client,
            msgs,
            args.send_inflight,
            args.ack_timeout,
            args.body_bytes,
        )
    });
    let mut queued = 0;
    let mut queue_errors: BTreeMap<String, u64> = BTreeMap::new();
    for (acked, errors) in futures_util::future::join_all(queues).await {
        queued += acked;
        for (k, v) in errors {
            *queue_errors.entry(k).or_default() += v;
        }
    }
    let queue_s = tq.elapsed().as_secs_f64();
    eprintln!("loadgen: storm: {queued} acked in {queue_s:.2}s, errors {queue_errors:?}");
    tokio::time::sleep(args.pause).await;

    let st = Arc::new(Storm {
        per_user,
        expected: queued,
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        done: Notify::new(),
        connect_us: Mutex::new(Vec::with_capacity(users)),
        connect_errors: Mutex::new(BTreeMap::new()),
        failed_users: AtomicU64::new(0),
        last_join_us: AtomicU64::new(0),
        clients: Mutex::new(Vec::with_capacity(users)),
    });
    let pids = &args.server_pids;
    let cpu0 = pids_cpu_us(pids);
    let gen0 = cpu_us(None);
    let sem = Arc::new(Semaphore::new(args.connect_batch.max(1)));
    let t0 = now_us();
    eprintln!(
        "loadgen: storm: {users} users reconnect, {} connects in flight at most",
        args.connect_batch.max(1)
    );
    for i in 0..users {
        let (st, sem) = (st.clone(), sem.clone());
        let url = args.urls[i % nodes].clone();
        let uid = user_uid(i);
        let mine = format!("{prefix}{i}-");
        let prefix = prefix.clone();
        let (timeout, bind) = (args.ack_timeout, source_ip(args, i));
        tokio::spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else {
                return;
            };
            let start = now_us();
            let mut conn = None;
            for attempt in 0..3 {
                match connect_and_join_from(&url, &uid, timeout, bind).await {
                    Ok(c) => {
                        conn = Some(c);
                        break;
                    }
                    Err(e) => {
                        let mut errs = lock(&st.connect_errors);
                        if errs.values().sum::<u64>() < 5 {
                            eprintln!("loadgen: storm: {uid} attempt {attempt}: {e:#}");
                        }
                        bump(&mut errs, error_label(&e));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            drop(permit);
            let Some((client, events)) = conn else {
                st.failed_users.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let end = now_us();
            lock(&st.connect_us).push((end - start).min(u32::MAX as u64) as u32);
            st.last_join_us.fetch_max(end, Ordering::Relaxed);
            lock(&st.clients).push(client);
            storm_user(events, &st, &mine, &prefix).await;
        });
    }
    let deadline = tokio::time::Instant::now() + args.fanout_timeout;
    let mut last_print = Instant::now();
    loop {
        let got = st.delivered.load(Ordering::Relaxed);
        if got >= st.expected {
            break;
        }
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        if tokio::time::timeout_at(deadline.min(tick), st.done.notified())
            .await
            .is_err()
            && tokio::time::Instant::now() >= deadline
        {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "loadgen: storm: {} joined, {got} / {} delivered",
                lock(&st.connect_us).len(),
                st.expected
            );
            last_print = Instant::now();
        }
    }
    let t_end = now_us();
    let cpu1 = pids_cpu_us(pids);
    let gen1 = cpu_us(None);
    let delivered = st.delivered.load(Ordering::Relaxed);
    let mut conn_us = lock(&st.connect_us).clone();
    conn_us.sort_unstable();
    let last_us = st.last_us.load(Ordering::Relaxed);
    let since = |t: u64| {
        if t == 0 {
            Value::Null
        } else {
            json!(ms((t.saturating_sub(t0)).min(u32::MAX as u64) as u32))
        }
    };
    let report = json!({
        "scenario": "storm",
        "label": args.label,
        "run_id": run_id,
        "server_pids": pids,
        "nodes": nodes,
        "users": users,
        "per_user": per_user,
        "senders": nsend,
        "queued_acked": queued,
        "queue_errors": queue_errors,
        "queue_s": round3(queue_s),
        "joined": conn_us.len(),
        "failed_users": st.failed_users.load(Ordering::Relaxed),
        "connect_errors": lock(&st.connect_errors).clone(),
        "connect_ms_p50": ms(percentile(&conn_us, 0.5)),
        "connect_ms_p99": ms(percentile(&conn_us, 0.99)),
        "connect_ms_max": ms(conn_us.last().copied().unwrap_or(0)),
        "all_joined_ms": since(st.last_join_us.load(Ordering::Relaxed)),
        "drain_ms": since(last_us),
        "timed_out": delivered < st.expected,
        "waited_ms": ms((t_end - t0).min(u32::MAX as u64) as u32),
        "expected": st.expected,
        "delivered": delivered,
        "delivered_pct": round3(100.0 * delivered as f64 / (st.expected.max(1)) as f64),
        "duplicates": st.duplicates.load(Ordering::Relaxed),
        "misrouted": st.misrouted.load(Ordering::Relaxed),
        "server_cpu_us_per_msg": per_unit(sum_cpu(&cpu0), sum_cpu(&cpu1), delivered),
        "server_cpu_us_per_msg_by_pid": cpu_by_pid(pids, &cpu0, &cpu1, delivered),
        "gen_cpu_us_per_msg": per_unit(gen0, gen1, delivered),
        "disconnects": DISCONNECTS.load(Ordering::Relaxed),
    });
    println!("{report}");
    let mut clients = std::mem::take(&mut *lock(&st.clients));
    clients.extend(senders);
    close_all(clients).await;
    Ok(())
}

/// One storm user: counts first deliveries of its own queued messages.
async fn storm_user(mut events: EventStream, st: &Storm, mine: &str, prefix: &str) {
    let mut seen = vec![false; st.per_user];
    while let Some(ev) = events.recv().await {
        if ev.name != "chat" || msg_field(&ev.data, "EvtType") != Some("message") {
            continue;
        }
        let Some(id) = msg_field(&ev.data, "MsgID") else {
            continue;
        };
        let Some(m) = id.strip_prefix(mine).and_then(|m| m.parse::<usize>().ok()) else {
            if id.starts_with(prefix) {
                st.misrouted.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        };
        match seen.get_mut(m) {
            Some(s) if !*s => *s = true,
            Some(_) => {
                st.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {
                st.misrouted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        st.last_us.fetch_max(now_us(), Ordering::Relaxed);
        if st.delivered.fetch_add(1, Ordering::Relaxed) + 1 >= st.expected {
            st.done.notify_one();
        }
    }
    note_disconnect("storm user", &events);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        let status = "Name:\twebchat\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_some());
    }

    #[test]
    fn error_labels_are_short() {
        let e = anyhow::anyhow!("root cause here").context("connecting u1 to http://x");
        assert_eq!(error_label(&e), "root cause here");
        let long = anyhow::anyhow!("{}", "x".repeat(500));
        assert_eq!(error_label(&long).len(), 80);
    }
}
