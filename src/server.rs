//! The one accept loop behind every port (HTTP, gRPC, admin): a connection cap (more wait in the
//! kernel's backlog), a header timeout kept per connection rather than by a timer per request,
//! header size bounds, the open-connections gauge, the peer address handed to each port's
//! [`Mouth`], and the drain:
//! stop accepting when told, let open connections finish within a bound. HTTP/1 answers end
//! their connection while the process drains; HTTP/2 connections get a GOAWAY.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::Limits;
use crate::shutdown::until_true;
use crate::telemetry::OpenConnection;

/// The peer address of a connection, inserted into every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What a port answers: a request, and the address of the peer it came from, to a response.
pub trait Mouth: Clone + Send + 'static {
    /// The answer to `req` from `peer` (a mouth is cloned for every request).
    fn answer(
        self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static;
}

/// An axum router answers with the peer's address in the request's extensions ([`PeerAddr`]).
impl Mouth for Router {
    fn answer(
        self,
        mut req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        req.extensions_mut().insert(PeerAddr(peer));
        let answer = self.oneshot(req.map(Body::new));
        async move { answer.await.unwrap_or_else(|e| match e {}) }
    }
}

/// What one port serves.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    /// The `listener` label of the open-connections gauge, and the name in logs.
    pub name: &'static str,
    /// HTTP/2 only (prior knowledge, as gRPC clients speak it); otherwise HTTP/1.1 and HTTP/2.
    pub http2_only: bool,
    /// Cap on one request's headers (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
}

/// When a port stops: `draining` turns true when shutdown begins (HTTP/1 answers then close
/// their connection), `close` when the listener must close; open connections then get at most
/// `drain_timeout`.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Shutdown has begun.
    pub draining: watch::Receiver<bool>,
    /// Close the listener now.
    pub close: watch::Receiver<bool>,
    /// Bound on draining open connections after `close`.
    pub drain_timeout: Duration,
}

/// Serves `mouth` on `listener` until `stop.close` turns true, then drains open connections
/// for at most `stop.drain_timeout`.
pub async fn serve(
    port: Port,
    listener: TcpListener,
    mouth: impl Mouth,
    limits: &Limits,
    stop: Stop,
) {
    let Stop {
        draining,
        mut close,
        drain_timeout,
    } = stop;
    let name = port.name;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if port.http2_only {
        builder = builder.http2_only();
    } else {
        // The header timeout is kept by `HeadDeadline`, not by hyper's timer per request.
        builder
            .http1()
            .max_buf_size(port.max_header_bytes)
            .max_headers(128);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(port.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the connection cap, new connections wait in the kernel's backlog until one closes.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = until_true(&mut close) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(server = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = until_true(&mut close) => break,
        };
        let _ = stream.set_nodelay(true);
        let mouth = mouth.clone();
        let draining = draining.clone();
        let progress = Arc::new(Progress::default());
        let stream = HeadDeadline::new(
            stream,
            limits.header_read_timeout,
            port.http2_only,
            Arc::clone(&progress),
        );
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::new(&progress);
            // While draining, HTTP/1 answers end their connection, so a proxy's keep-alive pool
            // empties before the listener closes instead of racing requests into a close.
            let close_after = *draining.borrow() && req.version() <= http::Version::HTTP_11;
            let answer = mouth.clone().answer(req, peer);
            async move {
                let mut response = answer.await;
                drop(in_flight);
                if close_after {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let open = OpenConnection::new(name);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(open);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            server = name,
            "drain timeout passed; closing remaining connections"
        );
    }
}

/// What a connection's service tells its [`HeadDeadline`]: request heads received so far, and
/// requests still being answered.
#[derive(Debug, Default)]
struct Progress {
    heads: AtomicU64,
    in_flight: AtomicUsize,
}

/// Counts one request from its head until its answer is ready.
#[derive(Debug)]
struct InFlight(Arc<Progress>);

impl InFlight {
    fn new(progress: &Arc<Progress>) -> Self {
        progress.heads.fetch_add(1, Ordering::Relaxed);
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(progress))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The header timeout of a connection, kept without a timer per request: a connection that
/// neither completes a request head nor has a request being answered for `limit` (checked every
/// `limit / 2`, so it is closed between `limit` and `1.5 x limit`) fails its next read with
/// `TimedOut` and is dropped by the server. That covers a client that connects and stays silent,
/// one that trickles a request head (slowloris), and a keep-alive connection left idle. hyper's
/// own `header_read_timeout` does the same per request, at the price of a timer set and
/// cancelled for every request (a tenth of a cache-hit check's CPU, measured). On HTTP/2
/// connections (the gRPC port, or the HTTP/2 preface on the HTTP port) only the first bytes are
/// timed: hyper's HTTP/2 owns the connection after them.
#[derive(Debug)]
struct HeadDeadline<T> {
    inner: T,
    tick: Pin<Box<tokio::time::Sleep>>,
    period: Duration,
    progress: Arc<Progress>,
    /// `heads` at the last tick.
    heads_seen: u64,
    /// Ticks in a row without progress.
    idle_ticks: u8,
    /// No byte has arrived yet.
    before_first_bytes: bool,
    /// Only the first bytes are timed (HTTP/2).
    first_bytes_only: bool,
}

impl<T> HeadDeadline<T> {
    /// Wraps `inner`; `http2_only`: the port speaks only HTTP/2.
    fn new(inner: T, limit: Duration, http2_only: bool, progress: Arc<Progress>) -> Self {
        let period = limit / 2;
        Self {
            inner,
            tick: Box::pin(tokio::time::sleep(period)),
            period,
            progress,
            heads_seen: 0,
            idle_ticks: 0,
            before_first_bytes: true,
            first_bytes_only: http2_only,
        }
    }

    /// On a read that would wait: whether the connection has been without progress too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.first_bytes_only && !self.before_first_bytes {
            return false;
        }
        while self.tick.as_mut().poll(cx).is_ready() {
            let heads = self.progress.heads.load(Ordering::Relaxed);
            if heads != self.heads_seen || self.progress.in_flight.load(Ordering::Relaxed) > 0 {
                self.heads_seen = heads;
                self.idle_ticks = 0;
            } else {
                self.idle_ticks += 1;
            }
            if self.idle_ticks >= 2 {
                return true;
            }
            let next = tokio::time::Instant::now() + self.period;
            self.tick.as_mut().reset(next);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.before_first_bytes && buf.filled().len() > before {
                    this.before_first_bytes = false;
                    // The HTTP/2 preface ("PRI * HTTP/2.0...") on a port that also speaks
                    // HTTP/1.1: HTTP/2 from here on.
                    this.first_bytes_only |= buf.filled()[before..].starts_with(b"PRI ");
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request head within the header timeout",
            ))),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    /// Not on HTTP/2: h2 then copies frames up to 1 KiB into its write buffer instead of
    /// chaining those over 256 bytes, which it must flush before it can buffer another frame.
    /// A Check answer (HEADERS, a DATA frame of a few hundred bytes, trailers) then goes out in
    /// one write instead of two (measured with strace: 2 writev per Check before, 1 after).
    fn is_write_vectored(&self) -> bool {
        !self.first_bytes_only && self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
