//! The HTTP server loop: accepts TCP connections and serves them (HTTP/1.1 with upgrades, for
//! websockets) so that no client can hold the node's connections or file descriptors:
//!
//! - a request's headers must arrive within the header timeout, and an idle keep-alive
//!   connection is closed after it too (hyper's header read timer runs whenever the
//!   connection waits for a request head, the first one included);
//! - a request body must arrive within the body timeout ([`bound_body_time`]); bodiless
//!   requests (long-polling GETs, websocket upgrades) are not timed, so a held long-poll
//!   or an established websocket is never cut (socket.io's heartbeat bounds those);
//! - one client address holds at most `max_per_address` connections, websockets included;
//!   trusted proxies are exempt (every client behind them shares their address);
//! - when accepting fails for want of file descriptors, the loop backs off briefly and keeps
//!   accepting, instead of giving up or spinning.
//!
//! axum's own `serve` offers none of these knobs, so this replaces it; what it does besides
//! (graceful shutdown, `ConnectInfo`) is done the same way here.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request},
    Router,
};
use dashmap::DashMap;
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::limits::TrustedProxies;

/// How long the accept loop waits after a failed accept (out of file descriptors, or of
/// memory) before it tries again: long enough not to spin, short enough that a descriptor
/// freed by a closing connection is soon used.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a client may hold of the node.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, and for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// Most connections one client address may hold at once (0: no limit).
    pub max_per_address: usize,
    /// Addresses exempt from `max_per_address` (the load balancers).
    pub exempt: TrustedProxies,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its request in progress, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let draining = CancellationToken::new();
    tokio::spawn({
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.cancel();
        }
    });
    let per_address = Arc::new(AddressCounts::default());
    let connections = TaskTracker::new();
    let mut accept_failures = OncePerSecond::default();
    let mut capped = OncePerSecond::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = draining.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before it was accepted: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if let Some(failures) = accept_failures.note() {
                    tracing::warn!(error = %e, failures, "accept failed (out of file descriptors?); backing off and accepting again");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let slot = if limits.max_per_address == 0 || limits.exempt.contains(ip) {
            None
        } else {
            match per_address.take(ip, limits.max_per_address) {
                Some(slot) => Some(slot),
                None => {
                    // Dropping the stream closes it at once. Warned (at most once a second):
                    // behind a proxy missing from --trusted-proxies every client shares one
                    // address, and the node would otherwise top out silently.
                    if let Some(refused) = capped.note() {
                        tracing::warn!(address = %ip, max = limits.max_per_address, refused, "connections refused: too many from one address (behind a proxy? see --trusted-proxies)");
                    }
                    continue;
                }
            }
        };
        // Without it, small ack frames wait for Nagle: ~40 ms round trips instead of ~1 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        connections.spawn(serve_connection(
            CountedStream {
                inner: stream,
                _slot: slot,
            },
            peer,
            app.clone(),
            limits.header_timeout,
            draining.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it closes, or until `draining` asks it to finish what it is
/// doing and close.
async fn serve_connection(
    stream: CountedStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    draining: CancellationToken,
) {
    let service = app.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        // What `into_make_service_with_connect_info` would insert: the client address.
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // Timeouts and clients that hang up mid-request land here: routine.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Whether an accept error concerns only the one connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Counts repeated events (failed accepts, refused connections) and tells when to warn about
/// them: at most once a second, with how many happened since the last warning, so a flood
/// cannot flood the log too.
#[derive(Default)]
struct OncePerSecond {
    since_logged: u64,
    last_logged: Option<tokio::time::Instant>,
}

impl OncePerSecond {
    /// Notes one event; `Some(count since the last warning)` when it is time to warn.
    fn note(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Open connections per client address.
#[derive(Default)]
struct AddressCounts {
    open: DashMap<IpAddr, usize>,
}

impl AddressCounts {
    /// A slot for one more connection from `ip`, if it holds fewer than `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.entry(ip).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection counted against its address; given back when dropped (with the connection's
/// socket, which may outlive the HTTP exchange as a websocket).
struct AddressSlot {
    counts: Arc<AddressCounts>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(mut open) = self.counts.open.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
        }
        self.counts.open.remove_if(&self.ip, |_, open| *open == 0);
    }
}

/// A TCP stream that holds its address's slot for as long as it is open: through an upgrade
/// the stream moves into the websocket, and the slot with it.
struct CountedStream {
    inner: TcpStream,
    _slot: Option<AddressSlot>,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Middleware: a request body must arrive within `timeout` of the request reaching the
/// application, or reading it fails (the handler answers with its error for an unreadable
/// body, and hyper closes the connection, since the rest of the body was never read).
/// Requests without a body are passed through untimed.
pub async fn bound_body_time(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
) -> Request {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        })
    })
}

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the body timeout")]
pub struct BodyTimedOut;

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_slots_and_gets_them_back() {
        let counts = Arc::new(AddressCounts::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = counts.take(a, 2).expect("first");
        let second = counts.take(a, 2).expect("second");
        assert!(counts.take(a, 2).is_none(), "a third is refused");
        assert!(
            counts.take(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        let again = counts.take(a, 2).expect("a slot given back is free");
        drop((second, again));
        assert!(
            counts.open.get(&a).is_none(),
            "no entry left for an idle address"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_fails_and_one_that_does_is_read() {
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, io::Error>>());
        let request = Request::builder()
            .method("POST")
            .body(stalled)
            .expect("request");
        let request = bound_body_time(axum::extract::State(Duration::from_secs(1)), request).await;
        let read = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        assert!(read.is_err(), "the stalled body timed out");

        let request = Request::builder()
            .method("POST")
            .body(Body::from("{}"))
            .expect("request");
        let request = bound_body_time(axum::extract::State(Duration::from_secs(1)), request).await;
        let read = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        assert_eq!(read.expect("read").as_ref(), b"{}");
    }
}
