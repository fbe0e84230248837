//! The connection loop shared by every listener of the manager (API over TCP or TLS, the two
//! Unix sockets, the metrics port): HTTP/1.1 through hyper, with bounds a client that can
//! reach the port cannot push past, token or not.
//!
//! - **Connections** ([`Limits::max_connections`]): a slot is taken *before* `accept`, so a
//!   listener at its cap first stops accepting: clients wait in the kernel's backlog (no file
//!   descriptor, no memory in the manager), which is all a burst of short requests needs. When
//!   no slot frees within [`Limits::shed_after`] — the slots are held by idle or slow clients —
//!   the listener *sheds*: it accepts and closes at once every connection that finds it full,
//!   until a slot frees, so a flood of idle connections is turned away instead of filling the
//!   backlog. The caps come from the file descriptor budget ([`super::capacity`]).
//! - **Header read and idle timeout** ([`Limits::header_timeout`]): hyper's header read timer
//!   runs from the moment a connection waits for a request head — right after accept and
//!   after every response — so an idle keep-alive connection and a half-sent head are both
//!   closed when it fires.
//! - **Bodies** are read whole, at most [`super::MAX_BODY`] bytes within
//!   [`super::limit::BODY_TIMEOUT`], before a handler runs (see `limit`).
//! - **Responses**: a client that stops reading is cut off after [`Limits::write_timeout`]
//!   without progress ([`WriteTimeout`]).
//! - **Concurrent requests** ([`Limits::max_requests`]): a request waits at most
//!   [`Limits::queue_wait`] for a slot, then gets a JSON 503 with `Retry-After: 1`.
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, ...) never stop a listener: it backs off
//!   ([`accept_backoff`]) and accepts again.
//! - The read buffer of a connection is capped at [`MAX_BUF`] (hyper's default is ~400 KiB).
//!
//! Only HTTP/1.1 is served (the CLI, the peers, probes and Prometheus speak it; TLS offers
//! `http/1.1` by ALPN).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use super::ApiError;

/// The largest read buffer of a connection: a request head must fit in it.
pub const MAX_BUF: usize = 64 * 1024;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests being answered at once.
    pub max_requests: usize,
    /// Time to send a request head, counted from accept and from the previous response
    /// (also the idle timeout of a keep-alive connection).
    pub header_timeout: Duration,
    /// Time a response may wait for the client to read it, without any progress.
    pub write_timeout: Duration,
    /// Time a request waits for a free request slot before its 503.
    pub queue_wait: Duration,
    /// Time the listener at its connection cap waits for a slot before it sheds.
    pub shed_after: Duration,
}

impl Limits {
    /// Defaults with `max_connections` connections and `max_requests` requests at once.
    pub fn new(max_connections: usize, max_requests: usize) -> Self {
        Self {
            max_connections: max_connections.max(1),
            max_requests: max_requests.max(1),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            queue_wait: Duration::from_secs(1),
            shed_after: Duration::from_secs(1),
        }
    }
}

/// A listening socket: `accept` hands out what the kernel accepted, `establish` turns it into
/// a stream HTTP runs on (a TLS handshake, or nothing) in the connection's own task, with the
/// request extensions every request of that connection carries (the TLS peer).
pub trait Accept: Send + 'static {
    /// What `accept` returns.
    type Accepted: Send + 'static;
    /// The stream HTTP runs on.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Accepted>> + Send;
    /// The stream of `accepted`, or `None` when it cannot be used (failed handshake).
    fn establish(
        &self,
        accepted: Self::Accepted,
    ) -> impl Future<Output = Option<(Self::Io, axum::http::Extensions)>> + Send + 'static;
}

/// HTTPS: the handshake runs in the connection's task; the verified peer becomes the
/// request extension `ConnectInfo<TlsPeer>` (the auth middleware reads it).
impl Accept for crate::tls::TlsListener {
    type Accepted = (tokio::net::TcpStream, std::net::SocketAddr);
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<Self::Accepted> {
        self.accept_tcp().await
    }

    fn establish(
        &self,
        (stream, peer): Self::Accepted,
    ) -> impl Future<Output = Option<(Self::Io, axum::http::Extensions)>> + Send + 'static {
        let handshake = self.handshake(stream, peer);
        async move {
            let (tls, verified) = handshake.await?;
            let mut extensions = axum::http::Extensions::new();
            extensions.insert(axum::extract::ConnectInfo(verified));
            Some((tls, extensions))
        }
    }
}

impl Accept for tokio::net::TcpListener {
    type Accepted = tokio::net::TcpStream;
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Accepted> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
    fn establish(
        &self,
        s: Self::Accepted,
    ) -> impl Future<Output = Option<(Self::Io, axum::http::Extensions)>> + 'static {
        std::future::ready(Some((s, axum::http::Extensions::new())))
    }
}

impl Accept for tokio::net::UnixListener {
    type Accepted = tokio::net::UnixStream;
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Accepted> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
    fn establish(
        &self,
        s: Self::Accepted,
    ) -> impl Future<Output = Option<(Self::Io, axum::http::Extensions)>> + 'static {
        std::future::ready(Some((s, axum::http::Extensions::new())))
    }
}

/// How long to wait before accepting again after `consecutive` failed accepts in a row with
/// `error`: nothing for a connection that failed on its own (aborted, reset), a growing pause
/// (10 ms doubling, at most 1 s) when the process or system is out of resources.
pub fn accept_backoff(error: &io::Error, consecutive: u32) -> Duration {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    if matches!(error.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock) {
        return Duration::ZERO;
    }
    let exp = consecutive.saturating_sub(1).min(7);
    Duration::from_millis(10u64 << exp).min(Duration::from_secs(1))
}

/// Serves `app` on `listener` within `limits`, forever. `name` names the listener in logs.
pub async fn serve<L: Accept>(mut listener: L, app: Router, limits: Limits, name: &'static str) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let requests = Arc::new(Semaphore::new(limits.max_requests));
    let mut failures = 0u32;
    let mut shed = Shedding::default();
    loop {
        let slot = shed.slot(&connections, limits, name).await;
        let accepted = match listener.accept().await {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = accept_backoff(&e, failures);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(listener = name, error = %e, failures, pause_ms = pause.as_millis() as u64,
                        "accept failed; backing off");
                }
                drop(slot);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        // Shedding: a slot may have freed while accept waited.
        let Some(slot) = slot.or_else(|| shed.late_slot(&connections, name)) else {
            // Full: closed at once (dropping it closes the descriptor).
            drop(accepted);
            shed.count += 1;
            continue;
        };
        let establish = listener.establish(accepted);
        let (app, requests) = (app.clone(), Arc::clone(&requests));
        tokio::spawn(async move {
            let _slot = slot;
            if let Some((io, extensions)) = establish.await {
                connection(io, extensions, app, requests, limits).await;
            }
        });
    }
}

/// Whether a listener at its cap sheds, and how many connections it shed since it started to.
#[derive(Default)]
struct Shedding {
    on: bool,
    count: u64,
}

impl Shedding {
    /// A connection slot, or `None` when the next connection is to be shed: none free now, and
    /// none freed within `shed_after` (or already shedding).
    async fn slot(&mut self, connections: &Arc<Semaphore>, limits: Limits, name: &str) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(connections).try_acquire_owned() {
            self.stop(name);
            return Some(slot);
        }
        if self.on {
            return None;
        }
        match tokio::time::timeout(limits.shed_after, Arc::clone(connections).acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            _ => {
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    "every connection slot is taken by clients that do not finish; closing new connections at once \
                     until one frees"
                );
                self.on = true;
                None
            }
        }
    }

    /// A slot freed since [`slot`](Self::slot) said none.
    fn late_slot(&mut self, connections: &Arc<Semaphore>, name: &str) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(connections).try_acquire_owned().ok()?;
        self.stop(name);
        Some(slot)
    }

    fn stop(&mut self, name: &str) {
        if self.on {
            tracing::warn!(listener = name, shed = self.count, "a connection slot freed; accepting again");
        }
        *self = Self::default();
    }
}

/// Serves one connection until it closes or a timeout cuts it.
async fn connection<I>(io: I, extensions: axum::http::Extensions, app: Router, requests: Arc<Semaphore>, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteTimeout::new(io, limits.write_timeout));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        handle(req, extensions.clone(), app.clone(), Arc::clone(&requests), limits)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_BUF).keep_alive(true);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// One request: a request slot (or a 503), then the router.
async fn handle(
    req: Request<Incoming>,
    extensions: axum::http::Extensions,
    app: Router,
    requests: Arc<Semaphore>,
    limits: Limits,
) -> Result<Response<Body>, Infallible> {
    let slot = match tokio::time::timeout(limits.queue_wait, requests.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => return Ok(busy(limits.max_requests)),
    };
    let mut req = req.map(Body::new);
    req.extensions_mut().extend(extensions);
    let response = app.oneshot(req).await;
    drop(slot);
    response
}

/// The answer when every request slot stays taken.
fn busy(max_requests: usize) -> Response<Body> {
    let mut response = ApiError::unavailable(
        format!("too many requests at once (at most {max_requests} are answered concurrently)"),
        "retry in a second; polling clients should wait for each answer before asking again",
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    debug_assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    response
}

/// A stream whose writes fail with `TimedOut` once they made no progress for `timeout`: a
/// client that stops reading its response does not hold the connection forever.
pub struct WriteTimeout<I> {
    inner: I,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteTimeout<I> {
    /// Wraps `inner`.
    pub fn new(inner: I, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None }
    }

    /// After the inner stream said `Pending`: the error once the stall lasted `timeout`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of the response for {} s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, poll)
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
