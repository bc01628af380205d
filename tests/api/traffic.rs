//! Sustained 1:1 traffic for fault tests: sender/receiver pairs over `webchat` processes in
//! open auth mode, each sender sending its next message as soon as the previous one is
//! acknowledged, every client moving to another node when its own stops answering.
//!
//! What the tests check afterwards: every acknowledged message reached its receiver, in the
//! sender's order by Seq, and nothing else did; redeliveries of a Seq (at least once) are
//! counted, not failed.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use webchat_loadgen::client::{ClientOptions, EventStream, SioClient};

/// Sockets opened at once while ramping up (hundreds at once from one process stall).
const CONNECT_BATCH: usize = 50;
/// Pause before trying again after a refused connect or an `unavailable` answer: a retry
/// back-off, not a synchronisation.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What one sender did.
#[derive(Default)]
pub struct SenderLog {
    /// MsgIDs acknowledged with `ok`, in order.
    pub acked: Mutex<Vec<String>>,
    /// `unavailable` answers (each followed by a re-send of the same MsgID).
    pub unavailable: AtomicUsize,
    /// Sends that got no answer because the connection ended (re-sent elsewhere).
    pub cut_off: AtomicUsize,
    /// Any other error answer (a test failure).
    pub other_errors: Mutex<Vec<Value>>,
}

/// What one receiver got.
#[derive(Default)]
pub struct ReceiverLog {
    /// Seq → MsgID of every message received.
    pub seen: Mutex<BTreeMap<u64, String>>,
    /// Messages received again under a Seq already seen.
    pub redeliveries: AtomicUsize,
    /// Connections that ended under it (it then reconnected).
    pub reconnects: AtomicUsize,
}

/// One pair's logs.
pub struct Pair {
    pub sender: String,
    pub receiver: String,
    pub sent: Arc<SenderLog>,
    pub got: Arc<ReceiverLog>,
}

/// Running traffic.
pub struct Traffic {
    pub pairs: Vec<Pair>,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<()>>,
    receivers: Vec<JoinHandle<()>>,
}

/// Connects `uid` (open mode `join`) to the first of `urls` (from `start`) that takes it,
/// trying them in turn; returns the index used.
async fn connect_somewhere(
    urls: &[String],
    start: usize,
    uid: &str,
    auto_ack: bool,
) -> (usize, SioClient, EventStream) {
    let opts = ClientOptions {
        auto_ack,
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut i = start;
    loop {
        let url = &urls[i % urls.len()];
        if let Ok((client, events)) = SioClient::connect(url, None, opts.clone()).await {
            match client
                .emit_with_ack("join", &json!(uid), Duration::from_secs(5))
                .await
            {
                Ok(ack) if ack["ok"] == true => return (i % urls.len(), client, events),
                _ => client.close().await,
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{uid} found no node to join for 60 s"
        );
        i += 1;
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

impl Traffic {
    /// Starts `pairs` pairs. Pair `i`'s receiver lives on node `i % n`, its sender on node
    /// `(i + 1) % n` (so most messages cross nodes); every client falls back to the other
    /// nodes in turn. Returns once every socket is connected and every sender is sending.
    pub async fn start(urls: &[String], pairs: usize, run: &str) -> Self {
        let urls: Arc<Vec<String>> = Arc::new(urls.to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let mut all = Vec::new();
        let mut receivers = Vec::new();
        // Receivers first, so the first messages find them connected (not required).
        let mut receiver_conns = Vec::new();
        for batch in (0..pairs).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
            let joins = batch.iter().map(|&i| {
                let urls = urls.clone();
                async move {
                    let uid = format!("{run}r{i}");
                    let conn = connect_somewhere(&urls, i, &uid, true).await;
                    (i, uid, conn)
                }
            });
            receiver_conns.extend(join_all(joins).await);
        }
        for (i, uid, (at, client, events)) in receiver_conns {
            let got = Arc::new(ReceiverLog::default());
            receivers.push(tokio::spawn(receive(
                urls.clone(),
                uid.clone(),
                at,
                client,
                events,
                got.clone(),
            )));
            all.push((i, uid, got));
        }
        let mut sender_conns = Vec::new();
        for batch in (0..pairs).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
            let joins = batch.iter().map(|&i| {
                let urls = urls.clone();
                async move {
                    let uid = format!("{run}s{i}");
                    let conn = connect_somewhere(&urls, i + 1, &uid, false).await;
                    (uid, conn)
                }
            });
            sender_conns.extend(join_all(joins).await);
        }
        let mut senders = Vec::new();
        let mut out = Vec::new();
        for ((_, receiver, got), (sender, (at, client, events))) in
            all.into_iter().zip(sender_conns)
        {
            let sent = Arc::new(SenderLog::default());
            senders.push(tokio::spawn(send(
                urls.clone(),
                sender.clone(),
                receiver.clone(),
                (at, client, events),
                sent.clone(),
                stop.clone(),
            )));
            out.push(Pair {
                sender,
                receiver,
                sent,
                got,
            });
        }
        Self {
            pairs: out,
            stop,
            senders,
            receivers,
        }
    }

    /// Messages acknowledged so far, per sender.
    pub fn acked_per_sender(&self) -> Vec<usize> {
        self.pairs
            .iter()
            .map(|p| p.sent.acked.lock().expect("lock").len())
            .collect()
    }

    /// Waits until every sender has `more` acknowledged messages beyond `since` (as
    /// returned by [`Traffic::acked_per_sender`]), for at most `patience`.
    pub async fn wait_for_each_sender(&self, since: &[usize], more: usize, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let now = self.acked_per_sender();
            let behind = now
                .iter()
                .zip(since)
                .filter(|(n, s)| **n < **s + more)
                .count();
            if behind == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{behind} senders did not get {more} more messages acknowledged in {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending (each sender finishes the message it is on, until acknowledged) and
    /// returns the total number of acknowledged messages.
    pub async fn stop_sending(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.senders.drain(..) {
            handle.await.expect("sender task");
        }
        self.acked_per_sender().iter().sum()
    }

    /// Waits until every receiver has every message its sender got acknowledged, then checks
    /// each receiver got exactly those, in order by Seq. Returns the redeliveries.
    pub async fn verify_all_delivered(&self, patience: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let missing: usize = self
                .pairs
                .iter()
                .map(|p| {
                    let acked = p.sent.acked.lock().expect("lock").len();
                    acked.saturating_sub(p.got.seen.lock().expect("lock").len())
                })
                .sum();
            if missing == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing} acknowledged messages not delivered after {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut redeliveries = 0;
        for p in &self.pairs {
            let acked = p.sent.acked.lock().expect("lock").clone();
            let seen: Vec<String> = p.got.seen.lock().expect("lock").values().cloned().collect();
            assert_eq!(
                seen, acked,
                "{} → {}: received (in Seq order) differs from acknowledged (in send order)",
                p.sender, p.receiver
            );
            let others = p.sent.other_errors.lock().expect("lock").clone();
            assert!(
                others.is_empty(),
                "{}: unexpected answers {others:?}",
                p.sender
            );
            redeliveries += p.got.redeliveries.load(Ordering::Relaxed);
        }
        redeliveries
    }

    /// Sum of a sender counter.
    pub fn total(&self, f: impl Fn(&SenderLog) -> usize) -> usize {
        self.pairs.iter().map(|p| f(&p.sent)).sum()
    }

    /// Receivers that reconnected at least once.
    pub fn receivers_reconnected(&self) -> usize {
        self.pairs
            .iter()
            .filter(|p| p.got.reconnects.load(Ordering::Relaxed) > 0)
            .count()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.senders.iter().chain(&self.receivers) {
            handle.abort();
        }
    }
}

/// A sender: message `n` is sent until acknowledged, with the same MsgID on every attempt
/// (on whichever node answers), then message `n + 1`.
async fn send(
    urls: Arc<Vec<String>>,
    uid: String,
    to: String,
    first: (usize, SioClient, EventStream),
    log: Arc<SenderLog>,
    stop: Arc<AtomicBool>,
) {
    let (mut at, client, events) = first;
    let mut conn = Some((client, events));
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("{uid}-{n}");
        let msg = json!({"EvtType": "message", "To": to, "MsgID": id, "Body": "x"});
        loop {
            let (client, _) = match &conn {
                Some(c) => c,
                None => {
                    let (i, client, events) = connect_somewhere(&urls, at, &uid, false).await;
                    at = i;
                    conn.insert((client, events))
                }
            };
            match client
                .emit_with_ack("chat", &msg, Duration::from_secs(30))
                .await
            {
                Ok(ack) if ack["ok"] == true => {
                    log.acked.lock().expect("lock").push(id);
                    break;
                }
                Ok(ack) if ack["error"]["code"] == "unavailable" => {
                    log.unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(ack) => {
                    log.other_errors.lock().expect("lock").push(ack);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    // The node went away (or did not answer): re-send elsewhere.
                    log.cut_off.fetch_add(1, Ordering::Relaxed);
                    if let Some((client, _)) = conn.take() {
                        client.close().await;
                    }
                    at += 1;
                }
            }
        }
        n += 1;
    }
    if let Some((client, _)) = conn.take() {
        client.close().await;
    }
}

/// A receiver (acking every event on arrival): records each message by Seq and reconnects
/// (to the next node that takes it) whenever its connection ends.
async fn receive(
    urls: Arc<Vec<String>>,
    uid: String,
    mut at: usize,
    client: SioClient,
    events: EventStream,
    log: Arc<ReceiverLog>,
) {
    let mut conn = (client, events);
    loop {
        while let Some(event) = conn.1.recv().await {
            if event.name != "chat" || event.data["EvtType"] != "message" {
                continue;
            }
            let seq = event.data["Seq"]
                .as_u64()
                .expect("stored messages carry a Seq");
            let id = event.data["MsgID"].as_str().unwrap_or("").to_owned();
            let mut seen = log.seen.lock().expect("lock");
            if let Some(before) = seen.insert(seq, id.clone()) {
                assert_eq!(before, id, "{uid}: Seq {seq} named two messages");
                log.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
        log.reconnects.fetch_add(1, Ordering::Relaxed);
        let (i, client, events) = connect_somewhere(&urls, at + 1, &uid, true).await;
        at = i;
        conn = (client, events);
    }
}
