//! A minimal socket.io v5 (Engine.IO 4) client over a raw websocket.
//!
//! It speaks only what the chat server and its tests need: the default
//! namespace `/`, websocket transport straight away (no long-polling, no
//! upgrade), text packets (no binary attachments), events, acks in both
//! directions and Engine.IO heartbeats.
//!
//! ```no_run
//! # async fn demo() -> Result<(), webchat_loadgen::client::ClientError> {
//! use std::time::{Duration, Instant};
//! use webchat_loadgen::client::{ClientOptions, SioClient};
//!
//! let (client, mut events) =
//!     SioClient::connect("http://127.0.0.1:4000", None, ClientOptions::default()).await?;
//! let reply = client
//!     .emit_with_ack("join", &serde_json::json!("alice"), Duration::from_secs(5))
//!     .await?;
//! assert_eq!(reply["ok"], true);
//! while let Some(ev) = events.recv().await {
//!     println!("{} {}", ev.name, ev.data);
//! }
//! println!("ended: {:?}", events.disconnect_reason());
//! # Ok(()) }
//! ```
//!
//! Design: [`SioClient`] is a cheap, cloneable handle. One task per connection
//! reads and writes it: it answers pings, resolves ack waiters, optionally
//! answers the server's ack requests ([`ClientOptions::auto_ack`]) in the same
//! turn as the frame that asked, writes what the handles queue (through an
//! unbounded channel, flushed once per burst) and hands events to the
//! [`EventStream`], or to a callback ([`SioClient::connect_observed`]). A load
//! generator holding 10,000 sockets on the machine it measures thus pays one
//! task wake-up per received event instead of three (reader, writer, consumer).
//! When the connection ends, every pending [`SioClient::emit_with_ack`] fails
//! with [`ClientError::Closed`] and the [`EventStream`] yields `None`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ws::{self, Incoming, Outgoing, WsReader, WsWriter};

/// TCP connect to `authority` (`host:port`), bound to `bind` first when given.
async fn tcp_connect(authority: &str, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(bind) = bind else {
        return TcpStream::connect(authority).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await? {
        if addr.is_ipv4() != bind.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(bind, 0))?;
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("no address of {authority} matches the family of {bind}"),
        )
    }))
}

/// Errors returned by [`SioClient`].
#[derive(Debug)]
pub enum ClientError {
    /// The base URL could not be understood (only `http://` and `ws://` are supported).
    InvalidUrl(String),
    /// TCP or websocket level failure while connecting.
    Transport(String),
    /// The server violated the Engine.IO / socket.io handshake.
    Handshake(String),
    /// The server refused the namespace connection with a `44` CONNECT_ERROR packet.
    ConnectError {
        /// The `message` field of the packet (e.g. `"unauthorized"`).
        message: String,
        /// The full packet payload.
        data: Value,
    },
    /// No answer in time (connect handshake or ack).
    Timeout,
    /// The connection is closed (or closed while waiting for an ack).
    Closed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidUrl(u) => write!(f, "invalid url: {u}"),
            ClientError::Transport(e) => write!(f, "transport error: {e}"),
            ClientError::Handshake(e) => write!(f, "handshake error: {e}"),
            ClientError::ConnectError { message, .. } => write!(f, "connect_error: {message}"),
            ClientError::Timeout => write!(f, "timed out"),
            ClientError::Closed => write!(f, "connection closed"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Connection options for [`SioClient::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Answer every server ack request with an empty ack (`43<id>[]`) as soon
    /// as the event arrives, before handing the event to the [`EventStream`].
    pub auto_ack: bool,
    /// Upper bound for TCP connect + websocket upgrade + Engine.IO open +
    /// socket.io CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Engine.IO path on the server. Default `/socket.io/`.
    pub path: String,
    /// Local address to bind the TCP socket to before connecting (port chosen by the
    /// kernel), e.g. `127.0.0.2`: spreading many sockets over several source addresses
    /// avoids running out of ephemeral ports. Default: none (the kernel picks).
    pub bind_addr: Option<IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auto_ack: false,
            connect_timeout: Duration::from_secs(10),
            path: "/socket.io/".to_string(),
            bind_addr: None,
        }
    }
}

/// An event emitted by the server (`42["name",arg,...]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    /// Event name.
    pub name: String,
    /// First argument, `Value::Null` if the event had none.
    pub data: Value,
    /// Arguments after the first one (usually empty).
    pub extra: Vec<Value>,
    /// Set when the server asked for an ack (`42<id>[...]`). Answer it with
    /// [`SioClient::ack`] — unless [`ClientOptions::auto_ack`] is on, in which
    /// case it has already been answered.
    pub ack_id: Option<u64>,
}

/// Why the connection ended (see [`EventStream::disconnect_reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server sent a socket.io DISCONNECT (`41`).
    ServerDisconnect,
    /// The server sent an Engine.IO CLOSE (`1`).
    EngineClose,
    /// The websocket was closed (close frame or EOF) without a socket.io goodbye.
    TransportClosed,
    /// The client closed it ([`SioClient::close`] or all handles dropped).
    ClientClosed,
    /// No ping from the server within `pingInterval + pingTimeout`.
    PingTimeout,
    /// A transport error or an unparsable packet.
    Error(String),
}

/// Events from the server, in order. Yields `None` once the connection has ended.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<ServerEvent>,
    reason: Arc<Mutex<Option<DisconnectReason>>>,
}

impl EventStream {
    /// Next event; `None` when the connection has ended (then
    /// [`disconnect_reason`](Self::disconnect_reason) says why).
    pub async fn recv(&mut self) -> Option<ServerEvent> {
        self.rx.recv().await
    }

    /// The next event if one has already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.rx.try_recv().ok()
    }

    /// Waits for the next event called `name`, dropping other events.
    /// Fails with [`ClientError::Timeout`] or [`ClientError::Closed`].
    pub async fn recv_named(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<ServerEvent, ClientError> {
        let wait = async {
            while let Some(ev) = self.rx.recv().await {
                if ev.name == name {
                    return Ok(ev);
                }
            }
            Err(ClientError::Closed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Why the connection ended, or `None` while it is still up.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        lock(&self.reason).clone()
    }
}

/// State shared between the handles and the reader task.
struct Shared {
    next_ack_id: AtomicU64,
    closing: AtomicBool,
    acks: Mutex<AckTable>,
    reason: Arc<Mutex<Option<DisconnectReason>>>,
}

#[derive(Default)]
struct AckTable {
    closed: bool,
    waiters: HashMap<u64, oneshot::Sender<Vec<Value>>>,
}

/// Handle to one socket.io connection (namespace `/`). Cheap to clone; the
/// connection is closed by [`close`](Self::close) or when the last handle is dropped.
#[derive(Clone)]
pub struct SioClient {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
    sid: Arc<str>,
}

impl fmt::Debug for SioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SioClient").field("sid", &self.sid).finish()
    }
}

impl SioClient {
    /// Connects to `base_url` (`http://host:port` or `ws://host:port`; any path
    /// is ignored, [`ClientOptions::path`] is used) and joins namespace `/`,
    /// sending `auth` (a JSON object such as `{"token":"..."}`) in the CONNECT
    /// packet when given. A CONNECT_ERROR answer becomes
    /// [`ClientError::ConnectError`].
    pub async fn connect(
        base_url: &str,
        auth: Option<Value>,
        opts: ClientOptions,
    ) -> Result<(SioClient, EventStream), ClientError> {
        Self::connect_to(base_url, auth, opts, None).await
    }

    /// [`connect`](Self::connect), but every event is passed to `observe`, called in the
    /// connection's task as the event arrives (with [`ClientOptions::auto_ack`], after its
    /// ack is buffered), instead of being queued for the [`EventStream`], which then only
    /// reports the end of the connection. For load generators: no hand-off per event, and
    /// the arrival is seen when it is read.
    pub async fn connect_observed(
        base_url: &str,
        auth: Option<Value>,
        opts: ClientOptions,
        observe: impl FnMut(ServerEvent) + Send + 'static,
    ) -> Result<(SioClient, EventStream), ClientError> {
        Self::connect_to(base_url, auth, opts, Some(Box::new(observe))).await
    }

    async fn connect_to(
        base_url: &str,
        auth: Option<Value>,
        opts: ClientOptions,
        observer: Option<Observer>,
    ) -> Result<(SioClient, EventStream), ClientError> {
        let (authority, url) = websocket_url(base_url, &opts.path)?;
        let connect_timeout = opts.connect_timeout;
        tokio::time::timeout(
            connect_timeout,
            Self::connect_inner(authority, url, auth, opts, observer),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout))
    }

    async fn connect_inner(
        authority: String,
        url: String,
        auth: Option<Value>,
        opts: ClientOptions,
        observer: Option<Observer>,
    ) -> Result<(SioClient, EventStream), ClientError> {
        let tcp = tcp_connect(&authority, opts.bind_addr)
            .await
            .map_err(|e| ClientError::Transport(format!("connect {authority}: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let (mut reader, mut writer) = ws::connect(tcp, &url)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;

        // Engine.IO OPEN.
        let open = match decode(&next_text(&mut reader).await?) {
            Ok(Packet::Open(v)) => v,
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected engine.io open, got {other:?}"
                )))
            }
        };
        let ping_interval = open
            .get("pingInterval")
            .and_then(Value::as_u64)
            .unwrap_or(25_000);
        let ping_timeout = open
            .get("pingTimeout")
            .and_then(Value::as_u64)
            .unwrap_or(20_000);
        let heartbeat = Duration::from_millis(ping_interval + ping_timeout);

        // socket.io CONNECT to "/".
        send_ws(&mut writer, encode_connect(auth.as_ref())).await?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut early = Vec::new();
        let sid = loop {
            let text = next_text(&mut reader).await?;
            match decode(&text) {
                Ok(Packet::Connect { nsp, data }) if nsp == "/" => {
                    let sid = data
                        .as_ref()
                        .and_then(|d| d.get("sid"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    break sid.to_string();
                }
                Ok(Packet::ConnectError { nsp, data }) if nsp == "/" => {
                    let message = match &data {
                        Value::String(s) => s.clone(),
                        d => d
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    };
                    return Err(ClientError::ConnectError { message, data });
                }
                Ok(Packet::Ping(p)) => send_ws(&mut writer, format!("3{p}")).await?,
                Ok(Packet::Event {
                    nsp,
                    id,
                    name,
                    args,
                }) if nsp == "/" => {
                    early.push(server_event(name, args, id));
                }
                Ok(Packet::Close) => return Err(ClientError::Closed),
                Ok(_) => {}
                Err(e) => return Err(ClientError::Handshake(format!("{e}: {text:?}"))),
            }
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let reason = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            next_ack_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            acks: Mutex::new(AckTable::default()),
            reason: reason.clone(),
        });
        let mut events = match observer {
            Some(observe) => EventSink::Observer {
                observe,
                _end: ev_tx,
            },
            None => EventSink::Stream(ev_tx),
        };
        for ev in early {
            if let Some(id) = ev.ack_id.filter(|_| opts.auto_ack) {
                writer.buffer(&Outgoing::Text(encode_ack(id, &[])));
            }
            events.pass(ev);
        }
        tokio::spawn(connection_task(
            Connection {
                reader,
                writer,
                outgoing: rx,
                events,
            },
            shared.clone(),
            done_tx,
            heartbeat,
            opts.auto_ack,
        ));
        let client = SioClient {
            tx,
            shared,
            done: done_rx,
            sid: sid.into(),
        };
        Ok((client, EventStream { rx: ev_rx, reason }))
    }

    /// The socket.io session id the server assigned in its CONNECT answer.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        !*self.done.borrow()
    }

    /// Emits `42["event",data]`. `data` can be any JSON value, including a
    /// bare string.
    pub async fn emit(&self, event: &str, data: &Value) -> Result<(), ClientError> {
        self.send_raw(&encode_event(event, data, None)).await
    }

    /// Emits `42<id>["event",data]` and waits up to `timeout` for the server's
    /// `43<id>[...]`; returns its first argument (`Value::Null` if it had none).
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        self.send_with_ack(
            |id| encode_event(event, data, Some(id)),
            Vec::new(),
            timeout,
        )
        .await
    }

    /// Sends the text frame `frame(id)` exactly as made (for robustness tests: any packet,
    /// possibly malformed, that carries the ack id `id`, e.g. `format!("42{id}[\"chat\",7]")`)
    /// and waits up to `timeout` for the server's `43<id>[...]`.
    /// `attachments` are sent as binary frames right after it (for binary packets `45…`).
    pub async fn emit_raw_with_ack(
        &self,
        frame: impl FnOnce(u64) -> String,
        attachments: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        self.send_with_ack(frame, attachments, timeout).await
    }

    async fn send_with_ack(
        &self,
        frame: impl FnOnce(u64) -> String,
        attachments: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let id = self.shared.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut acks = lock(&self.shared.acks);
            if acks.closed {
                return Err(ClientError::Closed);
            }
            acks.waiters.insert(id, tx);
        }
        let mut sent = self.send_raw(&frame(id)).await;
        for bytes in attachments {
            if sent.is_ok() {
                sent = self.send_raw_binary(bytes).await;
            }
        }
        if let Err(e) = sent {
            lock(&self.shared.acks).waiters.remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args.into_iter().next().unwrap_or(Value::Null)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.shared.acks).waiters.remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Answers the server's ack request `ack_id` with no arguments (`43<id>[]`).
    pub async fn ack(&self, ack_id: u64) -> Result<(), ClientError> {
        self.send_raw(&encode_ack(ack_id, &[])).await
    }

    /// Sends `text` as one websocket text frame, unchanged (for tests that need
    /// malformed or unusual packets; remember the Engine.IO `4` prefix).
    pub async fn send_raw(&self, text: &str) -> Result<(), ClientError> {
        if !self.is_connected() {
            return Err(ClientError::Closed);
        }
        self.tx
            .send(Outgoing::Text(text.to_owned()))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends `bytes` as one websocket binary frame (a socket.io binary attachment).
    pub async fn send_raw_binary(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        if !self.is_connected() {
            return Err(ClientError::Closed);
        }
        self.tx
            .send(Outgoing::Binary(bytes))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a socket.io DISCONNECT (`41`), closes the websocket and waits
    /// (at most 2 s) for the connection to wind down.
    pub async fn close(self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Outgoing::Text("41".into()));
        let _ = self.tx.send(Outgoing::Close);
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn server_event(name: String, args: Vec<Value>, ack_id: Option<u64>) -> ServerEvent {
    let mut args = args.into_iter();
    let data = args.next().unwrap_or(Value::Null);
    ServerEvent {
        name,
        data,
        extra: args.collect(),
        ack_id,
    }
}

async fn send_ws(writer: &mut WsWriter, text: String) -> Result<(), ClientError> {
    writer.buffer(&Outgoing::Text(text));
    writer
        .flush()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))
}

/// Next text message during the handshake (skipping control frames).
async fn next_text(reader: &mut WsReader) -> Result<String, ClientError> {
    loop {
        match reader.next().await {
            Ok(Some(Incoming::Text(t))) => return Ok(t),
            Ok(Some(Incoming::Close)) | Ok(None) => return Err(ClientError::Closed),
            Ok(Some(_)) => {}
            Err(e) => return Err(ClientError::Transport(e.to_string())),
        }
    }
}

/// A callback that takes every event of one connection ([`SioClient::connect_observed`]).
type Observer = Box<dyn FnMut(ServerEvent) + Send>;

/// Where a connection's events go. Either way the channel's sender is dropped when the
/// connection ends, so the [`EventStream`] yields `None` then.
enum EventSink {
    Stream(mpsc::UnboundedSender<ServerEvent>),
    Observer {
        observe: Observer,
        /// Never sent on; dropped with the connection to end the [`EventStream`].
        _end: mpsc::UnboundedSender<ServerEvent>,
    },
}

impl EventSink {
    fn pass(&mut self, event: ServerEvent) {
        match self {
            // A dropped EventStream is fine: the events are just discarded.
            EventSink::Stream(tx) => {
                let _ = tx.send(event);
            }
            EventSink::Observer { observe, .. } => observe(event),
        }
    }
}

/// What the connection task owns.
struct Connection {
    reader: WsReader,
    writer: WsWriter,
    /// Frames queued by the handles; closed when every handle is gone.
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    events: EventSink,
}

/// What one turn of the connection task saw.
enum Turn {
    Continue,
    /// This side sent its websocket Close; the server's end is awaited.
    Closing,
    End(DisconnectReason),
}

/// Reads and writes one connection until it ends (see the module docs), then records why,
/// fails the pending ack waiters and tells the handles.
async fn connection_task(
    mut conn: Connection,
    shared: Arc<Shared>,
    done: watch::Sender<bool>,
    heartbeat: Duration,
    auto_ack: bool,
) {
    // Checked a few times per heartbeat instead of a timer armed per frame: a frame costs
    // a clock read, not a timer wheel insert and removal.
    let mut last_heard = Instant::now();
    let mut check = tokio::time::interval(heartbeat / 4);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set once this side writes no more: it sent its websocket Close (then it only reads,
    // until the server closes too, so `close()` returns once the server has seen the socket
    // go), or a write failed.
    let mut closing = false;
    let reason = loop {
        // Acks and pongs of the previous turn, and frames answered during the handshake. A
        // write that cannot finish within a heartbeat (a peer that stopped reading) ends the
        // connection, as a silent peer would. Either failure leaves a frame half written,
        // so nothing more is written after it (not even a Close frame).
        match tokio::time::timeout(heartbeat, conn.writer.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                closing = true;
                break DisconnectReason::Error(e.to_string());
            }
            Err(_) => {
                closing = true;
                break DisconnectReason::Error("write stalled for a heartbeat".into());
            }
        }
        // Unbiased: neither a busy inbound stream nor a busy sender starves the other
        // (`next` is cancel-safe: a frame half read stays in the reader's buffer).
        let turn = tokio::select! {
            queued = conn.outgoing.recv(), if !closing => conn.queued(queued),
            incoming = conn.reader.next() => {
                last_heard = Instant::now();
                // After our Close frame nothing more may be written (RFC 6455).
                conn.incoming(incoming, &shared, auto_ack, !closing)
            }
            _ = check.tick() => {
                if last_heard.elapsed() > heartbeat {
                    Turn::End(DisconnectReason::PingTimeout)
                } else {
                    Turn::Continue
                }
            }
        };
        match turn {
            Turn::Continue => {}
            Turn::Closing => closing = true,
            Turn::End(reason) => break reason,
        }
    };
    // The server ended the session (e.g. `41`, or its own Close frame): close the websocket
    // politely, unless this side already did or can no longer write.
    if !closing {
        conn.writer.buffer(&Outgoing::Close);
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.writer.flush()).await;
    }
    // A closed transport after close() or after every handle was dropped is the client's
    // doing.
    let client_side = shared.closing.load(Ordering::Relaxed) || conn.outgoing.is_closed();
    let reason = match reason {
        DisconnectReason::TransportClosed | DisconnectReason::Error(_) if client_side => {
            DisconnectReason::ClientClosed
        }
        r => r,
    };
    *lock(&shared.reason) = Some(reason);
    {
        let mut acks = lock(&shared.acks);
        acks.closed = true;
        acks.waiters.clear(); // dropping the senders fails the waiters
    }
    let _ = done.send(true);
}

impl Connection {
    /// Buffers the frames the handles queued (all of them, a burst is written at once).
    fn queued(&mut self, first: Option<Outgoing>) -> Turn {
        let Some(mut message) = first else {
            // Every handle dropped: say goodbye.
            self.writer.buffer(&Outgoing::Text("41".into()));
            self.writer.buffer(&Outgoing::Close);
            return Turn::Closing;
        };
        loop {
            self.writer.buffer(&message);
            if message == Outgoing::Close {
                return Turn::Closing;
            }
            match self.outgoing.try_recv() {
                Ok(next) => message = next,
                Err(_) => return Turn::Continue,
            }
        }
    }

    /// Handles one frame from the server; answers (only when `may_write`) are buffered for
    /// the flush after it.
    fn incoming(
        &mut self,
        incoming: std::io::Result<Option<Incoming>>,
        shared: &Shared,
        auto_ack: bool,
        may_write: bool,
    ) -> Turn {
        let auto_ack = auto_ack && may_write;
        let text = match incoming {
            Ok(None) | Ok(Some(Incoming::Close)) => {
                return Turn::End(DisconnectReason::TransportClosed)
            }
            Err(e) => return Turn::End(DisconnectReason::Error(e.to_string())),
            Ok(Some(Incoming::Text(t))) => t,
            Ok(Some(Incoming::Ping(p))) => {
                if may_write {
                    self.writer.buffer(&Outgoing::Pong(p));
                }
                return Turn::Continue;
            }
            Ok(Some(Incoming::Pong | Incoming::Binary(_))) => return Turn::Continue,
        };
        match decode(&text) {
            Ok(Packet::Ping(p)) if may_write => {
                self.writer.buffer(&Outgoing::Text(format!("3{p}")))
            }
            Ok(Packet::Event {
                nsp,
                id,
                name,
                args,
            }) if nsp == "/" => {
                if let Some(id) = id.filter(|_| auto_ack) {
                    self.writer.buffer(&Outgoing::Text(encode_ack(id, &[])));
                }
                self.events.pass(server_event(name, args, id));
            }
            Ok(Packet::Ack { nsp, id, args }) if nsp == "/" => {
                let waiter = lock(&shared.acks).waiters.remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(args);
                }
            }
            Ok(Packet::Disconnect { nsp }) if nsp == "/" => {
                return Turn::End(DisconnectReason::ServerDisconnect)
            }
            Ok(Packet::Close) => return Turn::End(DisconnectReason::EngineClose),
            Ok(_) => {}
            Err(e) => return Turn::End(DisconnectReason::Error(format!("{e}: {text:?}"))),
        }
        Turn::Continue
    }
}

// ---------------------------------------------------------------------------
// Packet encoding / decoding (pure functions).
// ---------------------------------------------------------------------------

/// A decoded incoming frame: Engine.IO packet, or the socket.io packet inside
/// an Engine.IO MESSAGE (`4`).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// `0{...}` Engine.IO OPEN with its handshake object.
    Open(Value),
    /// `1` Engine.IO CLOSE.
    Close,
    /// `2<payload>` Engine.IO PING (payload normally empty).
    Ping(String),
    /// `3<payload>` Engine.IO PONG.
    Pong(String),
    /// `5` / `6` Engine.IO UPGRADE / NOOP (ignored).
    Other,
    /// `40[nsp,][{...}]` socket.io CONNECT (answer carries `{"sid":..}`).
    Connect {
        /// Namespace, `/` when omitted.
        nsp: String,
        /// Payload object, if any.
        data: Option<Value>,
    },
    /// `41[nsp,]` socket.io DISCONNECT.
    Disconnect {
        /// Namespace.
        nsp: String,
    },
    /// `42[nsp,][id]["name",args...]` socket.io EVENT.
    Event {
        /// Namespace.
        nsp: String,
        /// Ack id when the sender wants an ack.
        id: Option<u64>,
        /// Event name.
        name: String,
        /// Arguments after the name.
        args: Vec<Value>,
    },
    /// `43[nsp,]id[args...]` socket.io ACK.
    Ack {
        /// Namespace.
        nsp: String,
        /// Ack id being answered.
        id: u64,
        /// Ack arguments.
        args: Vec<Value>,
    },
    /// `44[nsp,]{...}` socket.io CONNECT_ERROR.
    ConnectError {
        /// Namespace.
        nsp: String,
        /// Payload, normally `{"message":..}`.
        data: Value,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad packet: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn bad(what: &str) -> DecodeError {
    DecodeError(what.to_string())
}

/// Decodes one websocket text frame.
pub fn decode(frame: &str) -> Result<Packet, DecodeError> {
    let mut chars = frame.chars();
    let eio = chars.next().ok_or_else(|| bad("empty frame"))?;
    let rest = chars.as_str();
    match eio {
        '0' => serde_json::from_str(rest)
            .map(Packet::Open)
            .map_err(|e| DecodeError(format!("open: {e}"))),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping(rest.to_string())),
        '3' => Ok(Packet::Pong(rest.to_string())),
        '4' => decode_sio(rest),
        '5' | '6' => Ok(Packet::Other),
        _ => Err(bad("unknown engine.io packet type")),
    }
}

fn decode_sio(s: &str) -> Result<Packet, DecodeError> {
    let mut chars = s.chars();
    let kind = chars.next().ok_or_else(|| bad("empty socket.io packet"))?;
    let mut rest = chars.as_str();
    if kind == '5' || kind == '6' {
        return Err(bad("binary packets are not supported"));
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        nsp = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        Some(
            rest[..digits]
                .parse::<u64>()
                .map_err(|_| bad("ack id overflow"))?,
        )
    } else {
        None
    };
    let payload = &rest[digits..];
    let json = |p: &str| serde_json::from_str::<Value>(p).map_err(|e| DecodeError(e.to_string()));
    let nsp = nsp.to_string();
    match kind {
        '0' => Ok(Packet::Connect {
            nsp,
            data: if payload.is_empty() {
                None
            } else {
                Some(json(payload)?)
            },
        }),
        '1' => Ok(Packet::Disconnect { nsp }),
        '2' => {
            let Value::Array(items) = json(payload)? else {
                return Err(bad("event payload is not an array"));
            };
            let mut items = items.into_iter();
            let Some(Value::String(name)) = items.next() else {
                return Err(bad("event name is not a string"));
            };
            Ok(Packet::Event {
                nsp,
                id,
                name,
                args: items.collect(),
            })
        }
        '3' => {
            let id = id.ok_or_else(|| bad("ack without id"))?;
            let Value::Array(args) = json(payload)? else {
                return Err(bad("ack payload is not an array"));
            };
            Ok(Packet::Ack { nsp, id, args })
        }
        '4' => Ok(Packet::ConnectError {
            nsp,
            data: if payload.is_empty() {
                Value::Null
            } else {
                json(payload)?
            },
        }),
        _ => Err(bad("unknown socket.io packet type")),
    }
}

/// Encodes a socket.io CONNECT to `/`: `40` or `40{auth}`.
pub fn encode_connect(auth: Option<&Value>) -> String {
    match auth {
        Some(a) => format!("40{a}"),
        None => "40".to_string(),
    }
}

/// Encodes an event `42["event",data]`, or `42<id>["event",data]` with an ack id.
pub fn encode_event(event: &str, data: &Value, ack_id: Option<u64>) -> String {
    let name = Value::from(event);
    match ack_id {
        Some(id) => format!("42{id}[{name},{data}]"),
        None => format!("42[{name},{data}]"),
    }
}

/// Encodes an ack answer `43<id>[args...]`.
pub fn encode_ack(ack_id: u64, args: &[Value]) -> String {
    let mut s = format!("43{ack_id}[");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&a.to_string());
    }
    s.push(']');
    s
}

/// Turns `http://host:port/...` / `ws://host:port/...` into the TCP address
/// to dial and the websocket URL of the Engine.IO endpoint.
fn websocket_url(base_url: &str, path: &str) -> Result<(String, String), ClientError> {
    let rest = ["http://", "ws://"]
        .iter()
        .find_map(|p| base_url.strip_prefix(p))
        .ok_or_else(|| ClientError::InvalidUrl(format!("{base_url} (want http:// or ws://)")))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() || host.contains('@') {
        return Err(ClientError::InvalidUrl(base_url.to_string()));
    }
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']'))
        && !host.ends_with(']');
    let authority = if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let path = path.trim_end_matches('/');
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((
        authority.clone(),
        format!("ws://{authority}{path}/?EIO=4&transport=websocket"),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_engine_packets() {
        assert_eq!(
            decode(r#"0{"sid":"abc","pingInterval":25000,"pingTimeout":20000}"#).unwrap(),
            Packet::Open(json!({"sid":"abc","pingInterval":25000,"pingTimeout":20000}))
        );
        assert_eq!(decode("1").unwrap(), Packet::Close);
        assert_eq!(decode("2").unwrap(), Packet::Ping(String::new()));
        assert_eq!(decode("2probe").unwrap(), Packet::Ping("probe".into()));
        assert_eq!(decode("3").unwrap(), Packet::Pong(String::new()));
        assert_eq!(decode("6").unwrap(), Packet::Other);
        assert!(decode("").is_err());
        assert!(decode("9").is_err());
        assert!(decode("0{").is_err());
    }

    #[test]
    fn decodes_connect_and_connect_error() {
        assert_eq!(
            decode(r#"40{"sid":"x1"}"#).unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                data: Some(json!({"sid":"x1"}))
            }
        );
        assert_eq!(
            decode("40").unwrap(),
            Packet::Connect {
                nsp: "/".into(),
                data: None
            }
        );
        assert_eq!(
            decode(r#"40/admin,{"sid":"y"}"#).unwrap(),
            Packet::Connect {
                nsp: "/admin".into(),
                data: Some(json!({"sid":"y"}))
            }
        );
        assert_eq!(
            decode(r#"44{"message":"unauthorized"}"#).unwrap(),
            Packet::ConnectError {
                nsp: "/".into(),
                data: json!({"message":"unauthorized"})
            }
        );
        assert_eq!(
            decode("41").unwrap(),
            Packet::Disconnect { nsp: "/".into() }
        );
        assert_eq!(
            decode("41/chat,").unwrap(),
            Packet::Disconnect {
                nsp: "/chat".into()
            }
        );
    }

    #[test]
    fn decodes_events() {
        assert_eq!(
            decode(r#"42["chat",{"a":1},2]"#).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                id: None,
                name: "chat".into(),
                args: vec![json!({"a":1}), json!(2)]
            }
        );
        assert_eq!(
            decode(r#"4217["chat","hi"]"#).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                id: Some(17),
                name: "chat".into(),
                args: vec![json!("hi")]
            }
        );
        assert_eq!(
            decode(r#"42["ping"]"#).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                id: None,
                name: "ping".into(),
                args: vec![]
            }
        );
        assert!(decode(r#"42[1,2]"#).is_err());
        assert!(decode(r#"42{"a":1}"#).is_err());
        assert!(decode(r#"42["chat""#).is_err());
        assert!(decode("451-[\"x\",{\"_placeholder\":true,\"num\":0}]").is_err());
    }

    #[test]
    fn decodes_acks() {
        assert_eq!(
            decode(r#"435[{"ok":true}]"#).unwrap(),
            Packet::Ack {
                nsp: "/".into(),
                id: 5,
                args: vec![json!({"ok":true})]
            }
        );
        assert_eq!(
            decode("43123[]").unwrap(),
            Packet::Ack {
                nsp: "/".into(),
                id: 123,
                args: vec![]
            }
        );
        assert!(decode("43[]").is_err());
        assert!(decode("437{}").is_err());
        assert!(decode("4399999999999999999999999[]").is_err());
    }

    #[test]
    fn encodes_packets() {
        assert_eq!(encode_connect(None), "40");
        assert_eq!(
            encode_connect(Some(&json!({"token":"t"}))),
            r#"40{"token":"t"}"#
        );
        assert_eq!(
            encode_event("join", &json!("u1"), None),
            r#"42["join","u1"]"#
        );
        assert_eq!(
            encode_event("chat", &json!({"To":"b"}), Some(9)),
            r#"429["chat",{"To":"b"}]"#
        );
        assert_eq!(
            encode_event("we\"ird", &json!(null), None),
            r#"42["we\"ird",null]"#
        );
        assert_eq!(encode_ack(4, &[]), "434[]");
        assert_eq!(encode_ack(4, &[json!(1), json!("x")]), r#"434[1,"x"]"#);
    }

    #[test]
    fn encoded_events_round_trip() {
        let data = json!({"Body":"a,b[c]\"d","n":[1,2]});
        let frame = encode_event("chat", &data, Some(42));
        assert_eq!(
            decode(&frame).unwrap(),
            Packet::Event {
                nsp: "/".into(),
                id: Some(42),
                name: "chat".into(),
                args: vec![data]
            }
        );
    }

    #[test]
    fn builds_websocket_urls() {
        let p = "/socket.io/";
        assert_eq!(
            websocket_url("http://127.0.0.1:4000", p).unwrap(),
            (
                "127.0.0.1:4000".into(),
                "ws://127.0.0.1:4000/socket.io/?EIO=4&transport=websocket".into()
            )
        );
        assert_eq!(
            websocket_url("ws://localhost:9/x?y", p).unwrap().0,
            "localhost:9"
        );
        assert_eq!(
            websocket_url("http://localhost/", p).unwrap().0,
            "localhost:80"
        );
        assert_eq!(
            websocket_url("http://[::1]:4000", p).unwrap().0,
            "[::1]:4000"
        );
        assert_eq!(websocket_url("http://[::1]", p).unwrap().0, "[::1]:80");
        assert!(websocket_url("https://example.com", p).is_err());
        assert!(websocket_url("http://", p).is_err());
    }

    #[tokio::test]
    async fn a_write_the_server_never_reads_ends_the_connection_within_a_heartbeat() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (release, released) = oneshot::channel::<()>();
        // A 200 ms heartbeat, and the CONNECT answer; from then on nothing is read.
        let text = |payload: &str| {
            crate::ws::test_server::server_frame(true, crate::ws::OP_TEXT, payload.as_bytes())
        };
        let mut frames = text(r#"0{"sid":"e","pingInterval":100,"pingTimeout":100}"#);
        frames.extend(text(r#"40{"sid":"s"}"#));
        let server = tokio::spawn(async move {
            let (_socket, _) = crate::ws::test_server::accept_sending(&listener, &frames).await;
            let _ = released.await;
        });
        let (client, mut events) = SioClient::connect(&url, None, ClientOptions::default())
            .await
            .unwrap();
        // Far more than the loopback socket buffers of both ends hold.
        client.send_raw(&"x".repeat(32 << 20)).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        assert!(
            matches!(ended, Ok(None)),
            "the connection is still up while its write is stalled"
        );
        assert!(
            matches!(events.disconnect_reason(), Some(DisconnectReason::Error(_))),
            "{:?}",
            events.disconnect_reason()
        );
        assert!(!client.is_connected());
        let _ = release.send(());
        server.await.unwrap();
    }
}
