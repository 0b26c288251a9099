//! Connection handling for `keyhold serve`: the accept loop, TLS handshakes, HTTP/1.1 with
//! timeouts, and the limits that keep a flood of slow or idle clients from taking the
//! server down.
//!
//! Every accepted connection gets a task of its own: a TLS handshake runs there, under
//! [`Limits::handshake_timeout`], so a client that opens a socket and sends nothing blocks
//! no one. A request's head must arrive within [`Limits::header_timeout`], counted from
//! its first byte (a head is noticed within a quarter of the timeout, so it is closed at
//! most 25% late), and may hold at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]. Outside a
//! request being handled, a connection on which no byte moves either way for
//! [`Limits::idle_timeout`] is closed: a keep-alive connection waiting for its next
//! request, a client that stops reading its response. While a request is handled, its
//! handler's own timeouts apply: request bodies are read under [`Limits::body_timeout`] by
//! the JSON extractor and the streams' header reader, key-service calls under their own.
//! Once the response's status is sent and its body is being written, the idle timeout
//! applies again: a stream whose client stops sending its upload or stops reading the
//! answer is closed after [`Limits::idle_timeout`] without a byte moving, and its
//! unfinished (chunked) body tells the client it is incomplete.
//!
//! The header timer is keyhold's, not hyper's: hyper's starts whenever it waits for a
//! request, so it would also close keep-alive connections after the header timeout, racing
//! clients that reuse a pooled connection at that moment (their request fails with the
//! connection closed under it). Here a connection is in one of three phases, moved by the
//! stream (the first byte of a request) and by the service (head parsed, response ready).
//!
//! At most [`Limits::max_connections`] connections are served at once. Beyond that a small
//! overflow ([`OVERFLOW_CONNECTIONS`]) is answered `503 overloaded` with `Retry-After`
//! and closed, and anything past the overflow is closed at once, so file descriptors stay
//! bounded. Requests in flight are bounded by [`Limits::max_in_flight`] in the router (see
//! [`crate::router`]).
//!
//! hyper answers a request it cannot parse (a malformed request line or header, a URI
//! or a head over its buffer) itself, with an empty body; that answer is rewritten on its
//! way out into keyhold's `{"error":{"code","message"}}` with the same status, so every
//! error body has one shape. A head that hyper's buffer let through but is over
//! [`MAX_HEAD_BYTES`] is refused by the edge (`431 headers_too_large`).
//!
//! Shutdown: the accept loop stops, every connection finishes the request it is serving
//! (hyper's graceful shutdown), and the loop waits for them up to [`DRAIN_TIMEOUT`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Connections answered `503 overloaded` when [`Limits::max_connections`] are in use; past
/// these, new connections are closed at once.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// The most bytes of a request head (request line and headers) keyhold reads.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 100;

/// How long shutdown waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The seconds a client is told to wait (`Retry-After`) when keyhold is overloaded.
pub const RETRY_AFTER_S: u32 = 1;

/// Timeouts and limits of the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// The longest a request's head may take to arrive, from its first byte.
    pub header_timeout: Duration,
    /// The longest a request body may take to arrive in full (answered `408
    /// request_timeout`).
    pub body_timeout: Duration,
    /// A connection on which no byte is read or written for this long is closed (also how
    /// long a keep-alive connection waits for its next request).
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests handled at once; past this, `503 overloaded` with `Retry-After`.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_in_flight: 512,
        }
    }
}

/// Serves `app` on `listener` (through `tls` when given) until `shutdown` completes, then
/// lets open connections finish their requests (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_errors = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: let the condition pass; say so
                    // once in a while, not for every attempt.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (permit, overloaded) = match slots.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    tracing::debug!(%peer, "connection closed at once: connection limit and overflow reached");
                    continue;
                }
            },
        };
        if overloaded {
            tracing::debug!(%peer, max_connections = max, "connection limit reached: answering 503 overloaded");
        }
        let (tls, app, stop) = (tls.clone(), app.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, tls, app, limits, stop, overloaded).await;
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "shutdown: connections still open after the drain timeout");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    overloaded: bool,
) {
    match tls {
        None => http(tcp, peer, app, limits, stop, overloaded).await,
        Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => http(stream, peer, app, limits, stop, overloaded).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    overloaded: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Watched::new(io);
    let activity = io.activity.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer stays off (`None`: with a timer set it would default to
    // 30 s and also run on idle keep-alive connections); heads are bounded in size too.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(!overloaded);
    let watchdog = watchdog(activity.clone(), limits);
    tokio::pin!(watchdog);
    let mut stopping = *stop.borrow_and_update();
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            if stopping {
                conn.as_mut().graceful_shutdown();
            }
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    why = &mut watchdog => {
                        tracing::debug!(%peer, why, "connection closed");
                        break;
                    }
                }
            }
        }};
    }
    if overloaded {
        drive!(builder.serve_connection(TokioIo::new(io), hyper::service::service_fn(overloaded_response)));
    } else {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            // The head is in: the request is being served.
            activity.set_phase(Phase::Busy);
            let call = tower::ServiceExt::oneshot(app.clone(), req);
            let activity = activity.clone();
            async move {
                // The request is served until its response body has been sent: a stream's
                // request body is still arriving while its response streams, and those
                // bytes must not read as the next request's head. Then the connection
                // waits for its next request.
                call.await.map(|resp| resp.map(|body| Body::new(Served { body, activity, sending: false })))
            }
        });
        drive!(builder.serve_connection(TokioIo::new(io), service));
    }
}

/// The answer to every request on a connection over the limit.
async fn overloaded_response(_req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    Ok(axum::response::IntoResponse::into_response(crate::error::ApiError::overloaded(
        "keyhold is serving its maximum number of connections; retry",
    )))
}

/// Completes, saying why, once the connection must be closed: a request head that took
/// longer than the header timeout, or nothing moved for the idle timeout.
async fn watchdog(activity: Arc<Activity>, limits: Limits) -> &'static str {
    loop {
        let now = activity.now_ms();
        let quiet = Duration::from_millis(now.saturating_sub(activity.last_moved_ms(now)));
        // A head may start at any moment without waking this watchdog (a wake per request
        // would cost every request a task wake-up): outside a head it looks every quarter
        // of the header timeout, so a head is closed at most 25% late.
        let mut wait = limits.header_timeout / 4;
        match activity.phase.load(Ordering::Acquire) {
            p if p == Phase::Head as u8 => {
                let head = Duration::from_millis(now.saturating_sub(activity.head_ms.load(Ordering::Acquire)));
                if head >= limits.header_timeout {
                    return "header timeout";
                }
                wait = wait.min(limits.header_timeout.saturating_sub(head));
            }
            // While a request is handled, its handler's own timeouts apply (a KMS call, a
            // body read): a handler that is working is not idle. Once its response body is
            // being sent (a stream's included), nothing moving either way is idleness.
            p if p == Phase::Busy as u8 => {}
            _ => {
                if quiet >= limits.idle_timeout {
                    return "idle timeout";
                }
                wait = wait.min(limits.idle_timeout.saturating_sub(quiet));
            }
        }
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for the first byte of the next request (keep-alive).
    Waiting = 0,
    /// A request's head is arriving.
    Head = 1,
    /// A request is being handled.
    Busy = 2,
    /// A response body is being sent (a stream's upload may still be arriving).
    Sending = 3,
}

/// Whether bytes moved on a connection, and which phase it is in. The stream only sets a
/// flag on each read or write (no clock read per call); the watchdog turns the flag into
/// "last seen moving" when it wakes, so the idle timeout is exact to one watchdog period.
struct Activity {
    start: Instant,
    moved: AtomicBool,
    last_ms: AtomicU64,
    head_ms: AtomicU64,
    phase: AtomicU8,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes moved; bytes read while waiting start a request's head.
    fn touch(&self, read: bool) {
        self.moved.store(true, Ordering::Relaxed);
        // The head's start is written before the phase that makes it count, so the
        // watchdog never reads a head phase with the previous request's start. (All of a
        // connection's parties run in its one task; the atomics only share the state.)
        if read && self.phase.load(Ordering::Acquire) == Phase::Waiting as u8 {
            self.head_ms.store(self.now_ms(), Ordering::Release);
            self.phase.store(Phase::Head as u8, Ordering::Release);
        }
    }

    /// When bytes were last seen moving (ms since the connection opened).
    fn last_moved_ms(&self, now_ms: u64) -> u64 {
        if self.moved.swap(false, Ordering::Relaxed) {
            self.last_ms.store(now_ms, Ordering::Relaxed);
        }
        self.last_ms.load(Ordering::Relaxed)
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
}

/// A response body that marks its connection as sending once hyper asks for its first
/// bytes, and as waiting for the next request once it has been sent (or dropped).
struct Served {
    body: Body,
    activity: Arc<Activity>,
    sending: bool,
}

impl hyper::body::Body for Served {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if !self.sending {
            self.sending = true;
            // The idle clock starts now, not when bytes last moved before a long handler.
            self.activity.moved.store(true, Ordering::Relaxed);
            self.activity.set_phase(Phase::Sending);
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.activity.set_phase(Phase::Waiting);
    }
}

/// A stream that records when bytes last moved through it.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    /// hyper's own answer to a request it could not parse, rewritten as keyhold's JSON
    /// error and being written (with how much of it was written).
    rewritten: Option<(Vec<u8>, usize)>,
}

impl<I> Watched<I> {
    fn new(inner: I) -> Self {
        // A new connection waits for its first request like a kept-alive one: clients open
        // connections ahead of need (a pool's connect racing an idle connection's reuse),
        // and closing those after the header timeout would race their first request.
        let activity = Activity {
            start: Instant::now(),
            moved: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Waiting as u8),
        };
        Self { inner, activity: Arc::new(activity), rewritten: None }
    }
}

/// keyhold's JSON answer in place of hyper's own empty one, when hyper answers a request
/// it could not parse (a malformed request line or header, a URI or head over the
/// limits) before any handler saw it: `None` for anything else.
fn rewrite_parse_error(written: &[u8]) -> Option<Vec<u8>> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    let status = std::str::from_utf8(head.get(..3)?).ok()?.parse::<u16>().ok()?;
    let has = |needle: &[u8]| written.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    // hyper's own refusals: no body, and the connection closed after them.
    if status < 400 || !has(b"\r\ncontent-length: 0\r") || !has(b"\r\nconnection: close\r") {
        return None;
    }
    let (reason, code, message) = match status {
        414 => ("URI Too Long", "uri_too_long", format!("the request line is over {MAX_HEAD_BYTES} bytes")),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            format!("a request head holds at most {MAX_HEAD_BYTES} bytes and {MAX_HEADERS} headers"),
        ),
        _ => (
            "Bad Request",
            "invalid_request",
            "the request is not valid HTTP/1.1: check its request line, headers and Content-Length".to_owned(),
        ),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let status = if matches!(status, 414 | 431) { status } else { 400 };
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch(true);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// Writes what remains of a rewritten answer; ready once all of it is written.
    fn drain_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = &mut self.rewritten {
            if *at >= bytes.len() {
                return Poll::Ready(Ok(()));
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, bytes.get(*at..).unwrap_or_default()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
            self.activity.touch(false);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // No handler is serving a request: what hyper writes now is its own answer to a
        // request it could not parse, sent instead in keyhold's error format.
        let serving = matches!(self.activity.phase.load(Ordering::Relaxed), p if p == Phase::Busy as u8 || p == Phase::Sending as u8);
        if self.rewritten.is_none()
            && !serving
            && let Some(answer) = rewrite_parse_error(buf)
        {
            self.rewritten = Some((answer, 0));
        }
        if self.rewritten.is_some() {
            // The replacement stands for everything hyper writes on this connection (it
            // closes it after such an answer).
            std::task::ready!(self.drain_rewritten(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let serving = matches!(self.activity.phase.load(Ordering::Relaxed), p if p == Phase::Busy as u8 || p == Phase::Sending as u8);
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        // Outside a request, an error answer (one hyper may have made itself) goes one
        // slice at a time, so `poll_write` sees it whole. Anything else keeps its single
        // vectored write: hyper often flushes a response after its body was dropped, and
        // splitting head and body would cost a system call and a packet per request.
        if self.rewritten.is_some()
            || (!serving && (first.starts_with(b"HTTP/1.1 4") || first.starts_with(b"HTTP/1.1 5")))
        {
            return self.poll_write(cx, first);
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_rewritten(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_rewritten(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
