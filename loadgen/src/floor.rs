//! Scenario `transport-floor`: what the group fan-out's transport alone costs on this
//! machine, with nothing of webchat in it.
//!
//! `--members` loopback TCP connections (TCP_NODELAY on both ends, as webchat sets). A bare
//! server process (no webchat) with a single-threaded runtime, like a webchat node started with
//! `--worker-threads 1`, writes one `--floor-frame-bytes` frame to every connection per
//! round; the generator's own runtime (`--threads` workers, as in `group-fanout`) reads each
//! frame and answers with an 11-byte frame, the size of a masked socket.io ack. A round ends
//! when the server has read every answer. No WebSocket framing, no socket.io, no JSON, no
//! store, no Redis: one write and one read per delivery on each side, the least any server
//! that asks every client to ack every event can do.
//!
//! Reported per round: wall time, and the CPU time of the server process and of this one (the
//! client side), each read from its own `/proc/self/task/*/schedstat` (nanoseconds).

use std::{
    cell::Cell,
    process::Stdio,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::{watch, Notify},
};

use crate::{ms, percentile, round3, Args};

/// The length of a masked WebSocket text frame carrying a socket.io ack (`43<id>[]`) as the
/// group-fanout generator sends it (seen with `strace` on a node).
const ANSWER_BYTES: usize = 11;

/// CPU nanoseconds this process has run, all threads (`/proc/self/task/*/schedstat`).
/// Not `/proc/self/stat` as the other scenarios read: its 10 ms ticks are a tenth of a round.
fn cpu_ns() -> Result<u64> {
    let mut total = 0;
    let mut read_any = false;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("schedstat");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A thread that ended between the listing and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("no run time in {}", path.display()))?;
        read_any = true;
    }
    if !read_any {
        bail!("no thread of this process has a schedstat");
    }
    Ok(total)
}

/// One round: its wall time as the server saw it, and the CPU time of each side.
struct Round {
    wall: Duration,
    server_ns: u64,
    client_ns: u64,
}

/// The client side, in this process: starts the server side (this program again, with
/// `--floor-serve`: a process of its own, as a webchat node is, and under its own open-files
/// limit), connects, answers, and reports.
pub async fn run(args: &Args) -> Result<()> {
    let connections = args.members;
    if connections == 0 {
        bail!("--members must be at least 1");
    }
    let frame_bytes = args.floor_frame_bytes.max(1);
    let mut server = Command::new(std::env::current_exe()?)
        .args(["--scenario", "transport-floor", "--floor-serve"])
        .args(["--members", &connections.to_string()])
        .args(["--messages", &args.messages.to_string()])
        .args(["--pause", &format!("{}ms", args.pause.as_millis())])
        .args(["--floor-frame-bytes", &frame_bytes.to_string()])
        .args([
            "--fanout-timeout",
            &format!("{}ms", args.fanout_timeout.as_millis()),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the floor server")?;
    let mut lines = BufReader::new(server.stdout.take().context("no server stdout")?).lines();
    let port: u16 = match lines.next_line().await? {
        Some(line) => line
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("unexpected first line from the floor server: {line}"))?,
        None => bail!("the floor server ended before it listened"),
    };
    eprintln!("loadgen: transport-floor: connecting {connections} sockets");
    let mut answering = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        answering.push(tokio::spawn(answer_every_frame(stream, frame_bytes)));
        // Opening thousands at once from one process stalls (see the README's pitfalls).
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let mut rounds = Vec::with_capacity(args.messages);
    // This side's CPU is read when the server says it is ready and after each round: a round
    // starts a pause after either, and the client does nothing in between, so each window
    // holds one round's work whole (reading it when the round starts could come late, with
    // the first frames already answered).
    let mut client0 = None;
    while let Some(line) = lines.next_line().await? {
        let unexpected = || format!("unexpected line from the floor server: {line}");
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ready"), None, None) => client0 = Some(cpu_ns()?),
            (Some("end"), Some(wall_us), Some(server_ns)) => {
                let client1 = cpu_ns()?;
                rounds.push(Round {
                    wall: Duration::from_micros(wall_us.parse().with_context(unexpected)?),
                    server_ns: server_ns.parse().with_context(unexpected)?,
                    // A thread that ended in the window takes its time with it: never
                    // below zero, at worst low.
                    client_ns: client1.saturating_sub(client0.with_context(unexpected)?),
                });
                client0 = Some(client1);
            }
            _ => bail!(unexpected()),
        }
    }
    let status = server.wait().await?;
    if !status.success() || rounds.len() != args.messages {
        bail!(
            "the floor server ended with {status} after {} of {} rounds",
            rounds.len(),
            args.messages
        );
    }
    for task in answering {
        task.abort();
    }
    report(args, connections, frame_bytes, &rounds);
    Ok(())
}

/// The client side of one connection: answers every frame, until the server closes.
async fn answer_every_frame(mut stream: TcpStream, frame_bytes: usize) {
    let mut frame = vec![0u8; frame_bytes];
    let answer = [b'a'; ANSWER_BYTES];
    while stream.read_exact(&mut frame).await.is_ok() {
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The server side (`--floor-serve`): a single-threaded runtime, like a webchat node started
/// with `--worker-threads 1`. Prints `port P`, accepts `--members` connections, prints
/// `ready`, then runs `--messages` rounds `--pause` apart, printing `end WALL_US CPU_NS`
/// after each. A round that does not end within `--fanout-timeout` fails the run.
pub fn serve_main(args: &Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(args))
}

async fn serve(args: &Args) -> Result<()> {
    let (connections, frame_bytes) = (args.members, args.floor_frame_bytes.max(1));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("port {}", listener.local_addr()?.port());
    // The round number: each task holds a receiver from before it first runs, so a round
    // started before a task got to wait is still seen by it.
    let (round_tx, round_rx) = watch::channel(0usize);
    let answered = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Cell::new(false));
    let round_over = Rc::new(Notify::new());
    for _ in 0..connections {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut round = round_rx.clone();
        let (answered, failed, round_over) = (answered.clone(), failed.clone(), round_over.clone());
        tokio::task::spawn_local(async move {
            let mut stream = stream;
            let frame = vec![b'x'; frame_bytes];
            let mut answer = [0u8; ANSWER_BYTES];
            while round.changed().await.is_ok() {
                if stream.write_all(&frame).await.is_err()
                    || stream.read_exact(&mut answer).await.is_err()
                {
                    // The round cannot end: say so now instead of at the timeout.
                    failed.set(true);
                    round_over.notify_one();
                    return;
                }
                answered.set(answered.get() + 1);
                if answered.get() == connections {
                    round_over.notify_one();
                }
            }
        });
    }
    // Lets the tasks start (and the client settle) before the first round.
    tokio::time::sleep(args.pause).await;
    println!("ready");
    for round in 1..=args.messages {
        tokio::time::sleep(args.pause).await;
        answered.set(0);
        let (t0, cpu0) = (Instant::now(), cpu_ns()?);
        round_tx.send_replace(round);
        tokio::time::timeout(args.fanout_timeout, round_over.notified())
            .await
            .with_context(|| {
                format!(
                    "round {round}: {} of {connections} answers within {:?}",
                    answered.get(),
                    args.fanout_timeout
                )
            })?;
        if failed.get() {
            bail!("round {round}: a connection failed");
        }
        let (wall, cpu) = (t0.elapsed(), cpu_ns()?.saturating_sub(cpu0));
        println!("end {} {cpu}", wall.as_micros());
    }
    Ok(())
}

fn report(args: &Args, connections: usize, frame_bytes: usize, rounds: &[Round]) {
    let cpu_ms = |ns: u64| round3(ns as f64 / 1e6);
    let wall_us: Vec<u32> = rounds
        .iter()
        .map(|r| u32::try_from(r.wall.as_micros()).unwrap_or(u32::MAX))
        .collect();
    let server: Vec<f64> = rounds.iter().map(|r| cpu_ms(r.server_ns)).collect();
    let client: Vec<f64> = rounds.iter().map(|r| cpu_ms(r.client_ns)).collect();
    let mean = |v: &[f64]| round3(v.iter().sum::<f64>() / v.len().max(1) as f64);
    let mut sorted = wall_us.clone();
    sorted.sort_unstable();
    let (p50, max) = (ms(percentile(&sorted, 0.5)), ms(percentile(&sorted, 1.0)));
    let line = json!({
        "scenario": "transport-floor",
        "label": args.label,
        "connections": connections,
        "rounds": rounds.len(),
        "frame_bytes": frame_bytes,
        "answer_bytes": ANSWER_BYTES,
        "client_threads": args.threads,
        "wall_ms": wall_us.iter().map(|us| ms(*us)).collect::<Vec<_>>(),
        "wall_ms_p50": p50,
        "wall_ms_max": max,
        "server_cpu_ms": server,
        "client_cpu_ms": client,
        "server_cpu_ms_mean": mean(&server),
        "client_cpu_ms_mean": mean(&client),
    });
    println!("{line}");
    eprintln!(
        "loadgen: transport-floor {connections} sockets: wall p50 {p50} ms max {max} ms, CPU per round: server {} ms + client {} ms",
        mean(&server),
        mean(&client)
    );
}
