//! The one accept loop behind every port (HTTP, gRPC, admin): a connection cap (more wait in the
//! kernel's backlog), a deadline for a connection's first bytes, header size and read-time
//! bounds, the open-connections gauge, the peer address handed to the handlers, and the drain:
//! stop accepting when told, let open connections finish within a bound. HTTP/1 answers end
//! their connection while the process drains; HTTP/2 connections get a GOAWAY.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
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

/// Serves `router` on `listener` until `stop.close` turns true, then drains open connections
/// for at most `stop.drain_timeout`.
pub async fn serve(port: Port, listener: TcpListener, router: Router, limits: &Limits, stop: Stop) {
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
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
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
        let router = router.clone();
        let draining = draining.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let router = router.clone();
            // While draining, HTTP/1 answers end their connection, so a proxy's keep-alive pool
            // empties before the listener closes instead of racing requests into a close.
            let close_after = *draining.borrow() && req.version() <= http::Version::HTTP_11;
            async move {
                let mut response = router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e| match e {});
                if close_after {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        });
        // The first bytes (a request line, the HTTP/2 preface) must come within the header
        // timeout; after them, hyper's own timeouts own the connection.
        let stream = FirstBytesDeadline::new(stream, limits.header_read_timeout);
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

/// A connection that must send its first bytes within a deadline, or fail with `TimedOut` (and
/// be dropped by the server). hyper's header timeout starts at a request's first byte (and, on
/// a keep-alive connection, when it waits for the next request), so without this a client that
/// connects and stays silent would hold its connection slot forever.
#[derive(Debug)]
struct FirstBytesDeadline<T> {
    inner: T,
    /// `None` once the first byte has arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstBytesDeadline<T> {
    /// Wraps `inner`; its first bytes must arrive within `limit` from now.
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the header timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<T> {
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

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
