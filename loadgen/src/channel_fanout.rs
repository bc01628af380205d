//! Scenario `channel-fanout` (issue 20's benchmark): `--sockets N` subscribers of one channel
//! (`--channel`, default `general`) spread over the `--urls` nodes (subscriber `i` on node
//! `i % nodes`, bound to source address 127.0.0.(2 + i % `--source-ips`)), and a back-end
//! publishing over REST (`POST /api/v1/channels/<channel>/publish`, `Authorization: Bearer
//! --publish-token`), alternating between the nodes.
//!
//! First one publication alone: the time until every subscriber has it (p50/p99/max over the
//! subscribers). Then one step per `--rate-steps` rate (publications/s, open loop, at most
//! `--max-inflight` publish requests in flight): deliveries/s, latency percentiles
//! (publish time → receipt, one monotonic clock), and deliveries missing after the drain.
//! Memory per subscription: the `--server-pids`' RSS before connecting and after every
//! subscriber has its subscribe ack, over N. Last, with `--recovery-publications` K > 0 and
//! a server that answers an epoch (webchat): the time of one resubscribe with `since` that
//! recovers K missed publications.
//!
//! Subscribers connect without auth and `join` with their uid (servers in `--auth open`),
//! then `subscribe {channel}`: webchat and the Node peer (`bench/baseline-node`, socket.io
//! rooms on @socket.io/redis-adapter) alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use webchat_loadgen::client::SioClient;

use crate::{
    check_fd_limit, join, join_options, lock, make_body, ms, now_us, parse_body_time, percentile,
    round3, Args,
};

/// What the subscribers have received.
#[derive(Default)]
struct Received {
    deliveries: AtomicU64,
    /// Latencies (µs) of the current step.
    latencies: Mutex<Vec<u32>>,
}

impl Received {
    fn record(&self, sent_us: u64) {
        let latency = now_us().saturating_sub(sent_us);
        lock(&self.latencies).push(u32::try_from(latency).unwrap_or(u32::MAX));
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Vec<u32> {
        let mut all = std::mem::take(&mut *lock(&self.latencies));
        all.sort_unstable();
        all
    }
}

fn rss_sum_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| crate::offline::rss_kib(p)).sum()
}

/// Runs the scenario; prints one JSON line per measurement.
pub async fn run(args: &Args, run_id: &str) -> Result<()> {
    let n = args.sockets;
    if n == 0 {
        bail!("--sockets must be at least 1");
    }
    check_fd_limit(n);
    let received = Arc::new(Received::default());
    let rss_before = rss_sum_kib(&args.server_pids);
    let mut clients: Vec<SioClient> = Vec::with_capacity(n);
    let mut connecting = FuturesUnordered::new();
    let mut next = 0usize;
    while clients.len() < n {
        while next < n && connecting.len() < args.connect_batch.max(1) {
            let url = args.urls[next % args.urls.len()].clone();
            let uid = format!("c{run_id}_{next}");
            let opts = join_options(args.ack_timeout, crate::offline::source_ip(args, next));
            let received = received.clone();
            let channel = args.channel.clone();
            let timeout = args.ack_timeout;
            connecting.push(async move {
                let observe = move |event: webchat_loadgen::client::ServerEvent| {
                    if event.name == "publication" {
                        if let Some(t) = event.data["data"].as_str().and_then(parse_body_time) {
                            received.record(t);
                        }
                    }
                };
                let (client, events) = SioClient::connect_observed(&url, None, opts, observe)
                    .await
                    .with_context(|| format!("connecting {uid} to {url}"))?;
                let (client, events) = join(client, events, &uid, timeout).await?;
                let ack = client
                    .emit_with_ack("subscribe", &json!({ "channel": channel }), timeout)
                    .await
                    .with_context(|| format!("subscribe {uid}"))?;
                if ack.get("ok") != Some(&Value::Bool(true)) {
                    bail!("subscribe {uid} refused: {ack}");
                }
                tokio::spawn(async move {
                    let mut events = events;
                    while events.recv().await.is_some() {}
                });
                Ok::<_, anyhow::Error>(client)
            });
            next += 1;
        }
        match connecting.next().await {
            Some(client) => clients.push(client?),
            None => break,
        }
    }
    let rss_after = rss_sum_kib(&args.server_pids);
    eprintln!(
        "channel-fanout: {n} subscribers on {} nodes",
        args.urls.len()
    );
    println!(
        "{}",
        json!({
            "scenario": "channel-fanout", "measure": "memory", "label": args.label,
            "subscribers": n, "nodes": args.urls.len(),
            "rss_kib_before": rss_before, "rss_kib_after": rss_after,
            "kib_per_subscription": match (rss_before, rss_after) {
                (Some(b), Some(a)) => json!(round3(a.saturating_sub(b) as f64 / n as f64)),
                _ => Value::Null,
            },
        })
    );

    let http = reqwest::Client::new();
    let publisher = Publisher {
        http,
        urls: args.urls.clone(),
        channel: args.channel.clone(),
        token: args.publish_token.clone(),
        body_bytes: args.body_bytes,
    };

    // One publication alone: how long until every subscriber has it.
    let base = received.deliveries.load(Ordering::Relaxed);
    received.take();
    publisher.publish(0).await?;
    let deadline = tokio::time::Instant::now() + args.fanout_timeout;
    while received.deliveries.load(Ordering::Relaxed) - base < n as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let one = received.take();
    println!(
        "{}",
        json!({
            "scenario": "channel-fanout", "measure": "one-publication", "label": args.label,
            "subscribers": n, "received": one.len(),
            "p50_ms": ms(percentile(&one, 0.5)), "p99_ms": ms(percentile(&one, 0.99)),
            "max_ms": ms(one.last().copied().unwrap_or(0)),
        })
    );

    let steps = if args.rate_steps.is_empty() {
        vec![args.rate]
    } else {
        args.rate_steps.clone()
    };
    for (step, rate) in steps.into_iter().enumerate() {
        let base = received.deliveries.load(Ordering::Relaxed);
        received.take();
        let start = now_us();
        let total = (rate * args.duration.as_secs_f64()).round() as u64;
        let inflight = Arc::new(tokio::sync::Semaphore::new(args.max_inflight.max(1)));
        let failed = Arc::new(AtomicU64::new(0));
        let mut sends = Vec::with_capacity(total as usize);
        for k in 0..total {
            let due = start + (k as f64 * 1e6 / rate) as u64;
            tokio::time::sleep_until(crate::instant_at(due)).await;
            let Ok(permit) = inflight.clone().try_acquire_owned() else {
                failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let publisher = publisher.clone();
            let failed = failed.clone();
            sends.push(tokio::spawn(async move {
                if publisher.publish(k as usize).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            }));
        }
        for send in sends {
            let _ = send.await;
        }
        let published = total - failed.load(Ordering::Relaxed);
        let expected = published * n as u64;
        let deadline = tokio::time::Instant::now() + args.drain_timeout;
        while received.deliveries.load(Ordering::Relaxed) - base < expected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed_s = (now_us() - start) as f64 / 1e6;
        let got = received.deliveries.load(Ordering::Relaxed) - base;
        let latencies = received.take();
        println!(
            "{}",
            json!({
                "scenario": "channel-fanout", "measure": "rate-step", "label": args.label,
                "step": step, "offered_publications_per_s": rate, "subscribers": n,
                "published": published, "not_published": failed.load(Ordering::Relaxed),
                "deliveries": got, "missing": expected.saturating_sub(got),
                "deliveries_per_s": round3(got as f64 / elapsed_s),
                "p50_ms": ms(percentile(&latencies, 0.5)), "p99_ms": ms(percentile(&latencies, 0.99)),
                "max_ms": ms(latencies.last().copied().unwrap_or(0)),
            })
        );
    }
    if args.recovery_publications > 0 {
        recovery(args, run_id, &publisher).await?;
    }
    for client in clients {
        client.close().await;
    }
    Ok(())
}

/// Recovery (webchat only: the Node peer keeps no history): one more subscriber notes the
/// channel's epoch and newest offset and unsubscribes; `--recovery-publications` are
/// published; then the time of its subscribe with `since` until the ack that holds them.
async fn recovery(args: &Args, run_id: &str, publisher: &Publisher) -> Result<()> {
    let url = &args.urls[0];
    let uid = format!("c{run_id}_recovery");
    let opts = join_options(args.ack_timeout, None);
    let (client, events) = SioClient::connect(url, None, opts)
        .await
        .context("recovery connect")?;
    let (client, _events) = join(client, events, &uid, args.ack_timeout).await?;
    let subscribe = json!({ "channel": args.channel });
    let ack = client
        .emit_with_ack("subscribe", &subscribe, args.ack_timeout)
        .await?;
    let (Some(epoch), Some(offset)) = (ack["epoch"].as_str(), ack["offset"].as_u64()) else {
        eprintln!("channel-fanout: no epoch in the subscribe ack (no history): recovery skipped");
        return Ok(());
    };
    let epoch = epoch.to_owned();
    client
        .emit_with_ack("unsubscribe", &subscribe, args.ack_timeout)
        .await?;
    let missed = args.recovery_publications;
    let inflight = Arc::new(tokio::sync::Semaphore::new(args.max_inflight.max(1)));
    let mut sends = Vec::with_capacity(missed);
    for k in 0..missed {
        let permit = inflight.clone().acquire_owned().await?;
        let publisher = publisher.clone();
        sends.push(tokio::spawn(async move {
            let sent = publisher.publish(k).await;
            drop(permit);
            sent
        }));
    }
    for send in sends {
        send.await??;
    }
    let since = json!({ "channel": args.channel, "since": { "offset": offset, "epoch": epoch } });
    let started = now_us();
    let ack = client
        .emit_with_ack("subscribe", &since, args.ack_timeout)
        .await?;
    let took = now_us() - started;
    println!(
        "{}",
        json!({
            "scenario": "channel-fanout", "measure": "recovery", "label": args.label,
            "missed": missed, "recovered": ack["recovered"],
            "publications": ack["publications"].as_array().map_or(0, Vec::len),
            "ms": round3(took as f64 / 1000.0),
        })
    );
    client.close().await;
    Ok(())
}

/// Publishes over REST, alternating between the nodes.
#[derive(Clone)]
struct Publisher {
    http: reqwest::Client,
    urls: Vec<String>,
    channel: String,
    token: String,
    body_bytes: usize,
}

impl Publisher {
    async fn publish(&self, k: usize) -> Result<()> {
        let url = format!(
            "{}/api/v1/channels/{}/publish",
            self.urls[k % self.urls.len()].trim_end_matches('/'),
            self.channel
        );
        let body = json!({ "data": make_body(now_us(), self.body_bytes) });
        let res = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .context("publish")?;
        if !res.status().is_success() {
            bail!("publish answered {}", res.status());
        }
        Ok(())
    }
}
