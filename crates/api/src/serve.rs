//! The HTTP/1 connection loop: a connection cap, per-connection timeouts and a bounded graceful stop.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::{ApiError, ServerConfig};

/// Serves `router` on `listener` until `shutdown` is cancelled, under the limits of `limits`
/// (`header_read_timeout`, `body_read_timeout`, `idle_timeout`, `max_connections`).
///
/// Every connection runs in one task under a watchdog with a single timer, re-armed when the
/// connection changes phase:
///
/// | phase | ends when | deadline |
/// |---|---|---|
/// | waiting for the first head | its head is parsed | accept + `header_read_timeout` |
/// | idle between requests | a byte arrives | last response + `idle_timeout` |
/// | reading a later head | its head is parsed | first byte + `header_read_timeout` |
/// | reading the body | its last byte is read | head + `body_read_timeout` |
/// | in the handler | its response is ready | none |
///
/// Handlers see the peer as the request extension `ConnectInfo<SocketAddr>`. Once `shutdown`
/// is cancelled the listener is closed, idle connections are closed, requests in flight
/// finish, and whatever is still open after `limits.shutdown_timeout` is dropped; then this
/// returns. Several listeners can share one token.
///
/// # Errors
/// None today: accept errors (a full file table, say) are logged and retried rather than
/// ending the server; the `Result` leaves room for start-up errors.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut server = Acceptor::new(listener, router, limits);
    server.accept_until(&shutdown).await;
    server.stop(limits.shutdown_timeout).await;
    Ok(())
}

/// The timeouts each connection enforces.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    header: Duration,
    body: Duration,
    idle: Duration,
}

/// What the accept loop wakes up for.
enum Event {
    Stop,
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Finished(Result<(), JoinError>),
}

/// The accept loop of one listener and the connections it started.
struct Acceptor {
    listener: TcpListener,
    service: TowerToHyperService<Router>,
    http: http1::Builder,
    timeouts: Timeouts,
    max_connections: usize,
    permits: Arc<Semaphore>,
    /// Whether the last connection was turned away, to log a full house once, not per refusal.
    full: bool,
    graceful: GracefulShutdown,
    connections: JoinSet<()>,
}

impl Acceptor {
    fn new(listener: TcpListener, router: Router, limits: &ServerConfig) -> Self {
        let mut http = http1::Builder::new();
        // Off: it would also cut the keep-alive wait short (see `Watchdog`), which times the
        // head instead.
        http.keep_alive(true).header_read_timeout(None);
        let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener,
            service: TowerToHyperService::new(router),
            http,
            timeouts: Timeouts {
                header: limits.header_read_timeout,
                body: limits.body_read_timeout,
                idle: limits.idle_timeout,
            },
            max_connections,
            permits: Arc::new(Semaphore::new(max_connections)),
            full: false,
            graceful: GracefulShutdown::new(),
            connections: JoinSet::new(),
        }
    }

    /// Accepts connections until `shutdown` is cancelled, reaping finished ones on the way.
    async fn accept_until(&mut self, shutdown: &CancellationToken) {
        let mut stop = pin!(shutdown.cancelled());
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let event = tokio::select! {
                biased;
                () = &mut stop => Event::Stop,
                Some(done) = self.connections.join_next() => Event::Finished(done),
                accepted = self.listener.accept() => Event::Accepted(accepted),
            };
            match event {
                Event::Stop => return,
                Event::Finished(done) => reaped(done),
                Event::Accepted(Ok((stream, peer))) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    self.admit(stream, peer);
                }
                Event::Accepted(Err(e)) if is_connection_error(&e) => {}
                Event::Accepted(Err(e)) => {
                    // Out of file descriptors, typically: wait for some to close instead of
                    // spinning, and instead of giving up serving.
                    tracing::error!(error = %e, retry_in = ?backoff, "accepting a connection failed");
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Serves `stream` in its own task, or closes it at once when the cap is reached.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    max_connections = self.max_connections,
                    "connection limit reached: closing new connections until some close"
                );
            }
            tracing::debug!(%peer, "over the connection limit: closed");
            return;
        };
        if self.full {
            self.full = false;
            tracing::info!("below the connection limit again");
        }
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(TrackedIo {
            stream,
            activity: activity.clone(),
        });
        let service = ConnService {
            router: self.service.clone(),
            peer,
            activity: activity.clone(),
        };
        let conn = self.graceful.watch(self.http.serve_connection(io, service));
        let watchdog = Watchdog::new(activity, self.timeouts);
        self.connections.spawn(async move {
            let _permit = permit;
            match watchdog.run(conn).await {
                Closed::Done(Ok(())) => {}
                Closed::Done(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed"),
                Closed::TimedOut(why) => tracing::debug!(%peer, "connection closed: {why}"),
            }
        });
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish for up to
    /// `timeout`, then drops what is left.
    async fn stop(self, timeout: Duration) {
        let Self {
            listener,
            graceful,
            mut connections,
            ..
        } = self;
        drop(listener);
        if tokio::time::timeout(timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                ?timeout,
                "connections still open after server.shutdown_timeout: dropping them"
            );
        }
        connections.shutdown().await;
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors of one connection that leave the listener usable.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn reaped(done: Result<(), JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a connection task panicked");
        }
    }
}

/// The connection is waiting for a request head and has read nothing of it.
const IDLE: u32 = 0;
/// Part of a request head has arrived.
const HEAD: u32 = 1;
/// The handler runs and the request body has not all arrived.
const BODY: u32 = 2;
/// The handler runs with the whole body (or none).
const BUSY: u32 = 3;
const PHASE: u32 = 0b11;
/// The state counts requests above the phase bits.
const ONE_REQUEST: u32 = 0b100;

/// What one connection is doing: its phase and how many requests it has started, plus the
/// body deadline's flags.
///
/// Written by the connection's IO, service and request body, read by its watchdog; they all
/// run in the connection's task, so relaxed ordering is enough (a task moving between threads
/// synchronises).
#[derive(Default)]
struct Activity {
    /// `requests << 2 | phase`.
    state: AtomicU32,
    /// Set by the watchdog when the current request's body is late.
    body_expired: AtomicBool,
    /// Set by the body when it failed a read for being late: the response becomes a 408.
    body_timed_out: AtomicBool,
}

impl Activity {
    fn set_phase(&self, state: u32, phase: u32) {
        self.state.store(state & !PHASE | phase, Relaxed);
    }

    /// Bytes arrived: a request head has started if the connection was idle.
    fn bytes_read(&self) {
        let state = self.state.load(Relaxed);
        if state & PHASE == IDLE {
            self.set_phase(state, HEAD);
        }
    }

    /// A request head was parsed.
    fn request_started(&self, has_body: bool) {
        let state = self.state.load(Relaxed).wrapping_add(ONE_REQUEST);
        self.set_phase(state, if has_body { BODY } else { BUSY });
        self.body_expired.store(false, Relaxed);
        self.body_timed_out.store(false, Relaxed);
    }

    /// The request body has all arrived.
    fn body_finished(&self) {
        let state = self.state.load(Relaxed);
        if state & PHASE == BODY {
            self.set_phase(state, BUSY);
        }
    }

    /// The handler answered: the idle clock starts (it also covers writing the response).
    fn response_ready(&self) {
        self.set_phase(self.state.load(Relaxed), IDLE);
    }
}

/// How a connection ended.
enum Closed {
    /// hyper finished it: the client closed it, keep-alive ended, or it failed.
    Done(Result<(), hyper::Error>),
    /// The watchdog closed it, for the reason given.
    TimedOut(&'static str),
}

/// Drives one connection and enforces its phase's deadline.
///
/// hyper's own `header_read_timeout` is left off: in the hyper we build on (1.12, since
/// hyperium/hyper#3828) it is armed whenever the connection starts waiting for a request head —
/// at the accept and again right after each response — so it also bounds the keep-alive gap,
/// and a 5 s header timeout would close every idle connection after 5 s whatever
/// `idle_timeout` says.
///
/// The phase lives in a few relaxed atomics shared by the connection's IO, service, request
/// body and watchdog, all of which run in the connection's task. Per request that costs two
/// reference counts, a few plain stores, two clock reads and moving the timer later, which
/// tokio does without a lock: no allocation and no lock beyond what `axum::serve` spends.
///
/// The timer may ring before the deadline, never after: each idle period sets it to the
/// shortest of the three timeouts, so that a request starting never has to move it earlier.
/// Moving a tokio timer later is a lock-free store, moving it earlier takes the timer wheel's
/// lock; a request on a kept-alive connection only ever moves it later.
struct Watchdog {
    activity: Arc<Activity>,
    timeouts: Timeouts,
    /// The shortest of the three timeouts.
    soonest: Duration,
    /// The state `deadline` was computed for.
    seen: u32,
    /// When the current phase's time is up; none while the handler runs.
    deadline: Option<Instant>,
}

impl Watchdog {
    fn new(activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            activity,
            timeouts,
            soonest: timeouts.header.min(timeouts.body).min(timeouts.idle),
            seen: IDLE,
            // The first request's head is due `header` after the accept.
            deadline: Some(Instant::now() + timeouts.header),
        }
    }

    async fn run<C>(mut self, conn: C) -> Closed
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let mut conn = pin!(conn);
        let mut timer = pin!(tokio::time::sleep(self.soonest));
        poll_fn(|cx| self.poll(conn.as_mut(), timer.as_mut(), cx)).await
    }

    fn poll<C>(
        &mut self,
        mut conn: Pin<&mut C>,
        mut timer: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<Closed>
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        loop {
            if let Poll::Ready(done) = conn.as_mut().poll(cx) {
                return Poll::Ready(Closed::Done(done));
            }
            let state = self.activity.state.load(Relaxed);
            if state != self.seen {
                self.seen = state;
                self.entered(state, timer.as_mut());
            }
            let Some(deadline) = self.deadline else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() < deadline {
                // Rang early (see above): wait for the real deadline.
                timer.as_mut().reset(deadline);
                continue;
            }
            self.deadline = None;
            match state & PHASE {
                // The handler's next read of the body fails (and the answer becomes a 408):
                // poll the connection again so that it happens now.
                BODY => self.activity.body_expired.store(true, Relaxed),
                HEAD => return Poll::Ready(Closed::TimedOut("request head not received in time")),
                _ if state < ONE_REQUEST => {
                    return Poll::Ready(Closed::TimedOut("no request head in time"));
                }
                _ => return Poll::Ready(Closed::TimedOut("idle")),
            }
        }
    }

    /// Sets the deadline of the phase `state` entered, and the timer to ring by then.
    fn entered(&mut self, state: u32, mut timer: Pin<&mut Sleep>) {
        let now = Instant::now();
        self.deadline = match state & PHASE {
            // The first head keeps the deadline counted from the accept.
            IDLE | HEAD if state < ONE_REQUEST => return,
            IDLE => {
                timer.as_mut().reset(now + self.soonest);
                Some(now + self.timeouts.idle)
            }
            HEAD => Some(now + self.timeouts.header),
            BODY => Some(now + self.timeouts.body),
            // The handler may take its time; the timer is left to ring unheeded.
            _ => None,
        };
        if let Some(deadline) = self.deadline {
            if timer.deadline() > deadline {
                timer.reset(deadline);
            }
        }
    }
}

/// The hyper service of one connection: the router, with the peer address and the phase
/// tracking around each request.
struct ConnService {
    router: TowerToHyperService<Router>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        // What `into_make_service_with_connect_info::<SocketAddr>()` gave the handlers.
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = if http_body::Body::is_end_stream(&body) {
            self.activity.request_started(false);
            Body::new(body)
        } else {
            self.activity.request_started(true);
            Body::new(TimedBody {
                inner: body,
                activity: self.activity.clone(),
            })
        };
        ResponseFuture {
            inner: self.router.call(Request::from_parts(parts, body)),
            activity: self.activity.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer; a 408 instead when the request body was late.
    struct ResponseFuture {
        #[pin]
        inner: TowerToHyperServiceFuture<Router, Request<Body>>,
        activity: Arc<Activity>,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        this.activity.response_ready();
        if this.activity.body_timed_out.load(Relaxed) {
            // The handler saw a failed read and answered for it; the client should learn why.
            let mut timeout = ApiError::RequestTimeout.into_response();
            timeout
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Poll::Ready(Ok(timeout));
        }
        Poll::Ready(Ok(response))
    }
}

/// A request body that fails its reads once `body_read_timeout` has passed.
struct TimedBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body not received within server.body_read_timeout")]
    TimedOut,
    #[error(transparent)]
    Read(hyper::Error),
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.activity.body_expired.load(Relaxed) {
                    this.activity.body_timed_out.store(true, Relaxed);
                    return Poll::Ready(Some(Err(BodyError::TimedOut)));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.activity.body_finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.activity.body_finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive on an idle connection.
struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { serve_router(listener, router, &ServerConfig::default(), stop).await }
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"GET /peer HTTP/1.1\r\nHost: seckill\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with(&me.to_string()), "{answer}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
