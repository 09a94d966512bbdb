//! Connection hygiene over real sockets: the header, body and idle timeouts, the connection
//! cap and the bounded graceful stop (`server.*` limits).
//!
//! Each test waits for the server to close a socket by reading it to the end, with a generous
//! bound, then checks when that happened against the configured timeout.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::{Faulty, with};
use common::{Server, Setup, activity, settings};
use seckill_api::ServerConfig;
use seckill_service::Components;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Slack on top of a timeout, for a loaded two-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// The longest any single wait may take before the test fails.
const BOUND: Duration = Duration::from_secs(20);
/// A timeout that no test reaches.
const LONG: Duration = Duration::from_secs(600);

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: seckill\r\n\r\n";

fn limits(header: Duration, body: Duration, idle: Duration) -> ServerConfig {
    ServerConfig {
        header_read_timeout: header,
        body_read_timeout: body,
        idle_timeout: idle,
        ..ServerConfig::default()
    }
}

async fn start(server: ServerConfig, components: Components) -> Server {
    let setup = Setup {
        server,
        ..Setup::default()
    };
    Server::start_with(settings(), setup, components).await
}

fn addr(s: &Server) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().unwrap()
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(addr(s)).await.unwrap()
}

/// A purchase of one unit of `product_id`, whole.
fn purchase(product_id: u64, user_id: u64) -> Vec<u8> {
    let body = format!(r#"{{"product_id":{product_id},"user_id":{user_id},"quantity":1}}"#);
    format!(
        "POST /api/v1/seckill/purchase HTTP/1.1\r\nHost: seckill\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads until the server closes the connection (end of stream or reset); returns what it
/// sent and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    (got, Instant::now())
}

/// Reads one response (head and `Content-Length` body); `None` when the connection closes
/// first.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).into_owned();
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                let body = end + 4;
                while data.len() < body + len {
                    let n = stream.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                return Some((
                    status,
                    String::from_utf8_lossy(&data[body..body + len]).into_owned(),
                ));
            }
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response in time")
}

/// `GET /health` on a kept-alive connection.
async fn health(stream: &mut TcpStream) -> u16 {
    stream.write_all(HEALTH).await.unwrap();
    read_response(stream).await.expect("a response").0
}

/// `what` happened `elapsed` after its timer started: not before `timeout` (give or take the
/// clock's granularity), and not much after.
fn assert_timed(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout.mul_f64(0.9),
        "{what}: closed after {elapsed:?}, before its timeout of {timeout:?}"
    );
    assert!(
        elapsed < timeout + MARGIN,
        "{what}: closed after {elapsed:?}, well past its timeout of {timeout:?}"
    );
}

/// Waits until `n` purchases have reached the inventory (held there by its gate).
async fn until_in_inventory(inv: &Faulty, n: u64) {
    let deadline = Instant::now() + BOUND;
    while inv.calls.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the purchase never reached the inventory"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_complete_head_is_closed_after_header_read_timeout() {
    let header = Duration::from_millis(300);
    let s = start(limits(header, LONG, LONG), Components::embedded()).await;
    let started = Instant::now();
    let mut silent = connect(&s).await;
    let mut partial = connect(&s).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: seckill\r\n")
        .await
        .unwrap();
    let ((_, silent_closed), (sent, partial_closed)) =
        tokio::join!(until_closed(&mut silent), until_closed(&mut partial));
    assert_timed("a silent connection", silent_closed - started, header);
    assert_timed("a partial head", partial_closed - started, header);
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    // A whole request on a new connection is served.
    assert_eq!(health(&mut connect(&s).await).await, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_head_has_header_read_timeout_from_its_first_byte() {
    // The idle timeout is out of reach: only the head's own deadline can close it.
    let header = Duration::from_millis(300);
    let s = start(limits(header, LONG, LONG), Components::embedded()).await;
    let mut c = connect(&s).await;
    assert_eq!(health(&mut c).await, 200);
    c.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let sent = Instant::now();
    let (_, closed) = until_closed(&mut c).await;
    assert_timed("a partial second head", closed - sent, header);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_idle_timeout() {
    // The header timeout is shorter: it must not apply to the wait between requests.
    let header = Duration::from_millis(200);
    let idle = Duration::from_millis(1000);
    let s = start(limits(header, LONG, idle), Components::embedded()).await;
    let mut c = connect(&s).await;
    assert_eq!(health(&mut c).await, 200);
    // Kept alive: a second request on the same connection.
    assert_eq!(health(&mut c).await, 200);
    let answered = Instant::now();
    let (_, closed) = until_closed(&mut c).await;
    assert_timed("an idle connection", closed - answered, idle);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_body_is_answered_408_after_body_read_timeout() {
    let body = Duration::from_millis(300);
    let s = start(limits(LONG, body, LONG), Components::embedded()).await;
    let mut c = connect(&s).await;
    c.write_all(
        b"POST /api/v1/seckill/purchase HTTP/1.1\r\nHost: seckill\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"product_id\":",
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let (answer, closed) = until_closed(&mut c).await;
    assert_timed("a late body", closed - sent, body);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let (_, json) = text.split_once("\r\n\r\n").expect("a body");
    let v: Value = serde_json::from_str(json).expect("the JSON envelope");
    assert_eq!(v["code"], 40801, "{v}");
    assert_eq!(v["data"], Value::Null, "{v}");
    assert!(v["message"].is_string(), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_busy_in_its_handler_is_not_closed() {
    let t = Duration::from_millis(200);
    let inv = Faulty::new();
    let s = start(limits(t, t, t), with(inv.clone())).await;
    assert_eq!(s.prewarm(activity(7101, 10)).await.0, 200);
    inv.gated.store(true, Ordering::SeqCst);
    let mut busy = connect(&s).await;
    busy.write_all(&purchase(7101, 1)).await.unwrap();
    until_in_inventory(&inv, 1).await;
    // Another connection idling out shows that every timeout has passed meanwhile.
    let mut witness = connect(&s).await;
    assert_eq!(health(&mut witness).await, 200);
    until_closed(&mut witness).await;
    inv.gate.add_permits(1);
    let (status, body) = read_response(&mut busy)
        .await
        .expect("the busy connection was closed");
    assert_eq!(status, 200, "{body}");
    // Then it idles out like any other.
    let answered = Instant::now();
    let (_, closed) = until_closed(&mut busy).await;
    assert_timed("the connection once idle", closed - answered, t);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_at_once() {
    const CAP: usize = 8;
    const OPENED: usize = 50;
    let s = start(
        ServerConfig {
            max_connections: CAP,
            ..limits(LONG, LONG, LONG)
        },
        Components::embedded(),
    )
    .await;
    let started = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..OPENED {
        streams.push(Arc::new(connect(&s).await));
    }
    // Watch every connection for the server closing it.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let watchers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| {
            let (stream, closed_tx) = (stream.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    stream.readable().await.unwrap();
                    match stream.try_read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        _ => break,
                    }
                }
                let _ = closed_tx.send(i);
            })
        })
        .collect();
    let mut closed = HashSet::new();
    while closed.len() < OPENED - CAP {
        let i = tokio::time::timeout(BOUND, closed_rx.recv())
            .await
            .expect("the connections past the cap were not closed")
            .unwrap();
        closed.insert(i);
    }
    let took = started.elapsed();
    assert!(took < MARGIN, "closing the excess took {took:?}");
    for w in &watchers {
        w.abort();
    }
    for w in watchers {
        let _ = w.await;
    }
    assert!(
        closed_rx.try_recv().is_err(),
        "more than the excess was closed"
    );
    let mut held: Vec<TcpStream> = streams
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !closed.contains(i))
        .map(|(_, stream)| Arc::into_inner(stream).unwrap())
        .collect();
    assert_eq!(held.len(), CAP);
    // The connections within the cap are served, and stay open.
    for c in &mut held {
        assert_eq!(health(c).await, 200);
    }
    // While they are open, one more is closed without an answer.
    let mut extra = connect(&s).await;
    let _ = extra.write_all(HEALTH).await;
    let (sent, _) = until_closed(&mut extra).await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    // Once they close, the server takes new connections again.
    drop(held);
    let deadline = Instant::now() + BOUND;
    loop {
        let mut c = connect(&s).await;
        if c.write_all(HEALTH).await.is_ok() {
            if let Some((status, _)) = read_response(&mut c).await {
                assert_eq!(status, 200);
                break;
            }
        }
        assert!(Instant::now() < deadline, "/health never answered again");
        tokio::task::yield_now().await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_is_bounded_by_shutdown_timeout() {
    let grace = Duration::from_millis(500);
    let inv = Faulty::new();
    let s = start(
        ServerConfig {
            shutdown_timeout: grace,
            ..limits(LONG, LONG, LONG)
        },
        with(inv.clone()),
    )
    .await;
    assert_eq!(s.prewarm(activity(7102, 10)).await.0, 200);
    let address = addr(&s);
    let mut idle = connect(&s).await;
    assert_eq!(health(&mut idle).await, 200);
    let mut slow_head = connect(&s).await;
    slow_head
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut slow_body = connect(&s).await;
    slow_body
        .write_all(b"POST /api/v1/seckill/purchase HTTP/1.1\r\nHost: seckill\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{")
        .await
        .unwrap();
    // A request held in its handler for good.
    inv.gated.store(true, Ordering::SeqCst);
    let mut busy = connect(&s).await;
    busy.write_all(&purchase(7102, 1)).await.unwrap();
    until_in_inventory(&inv, 1).await;

    let stopping = Instant::now();
    let stop = tokio::spawn(s.shutdown());
    let (_, idle_closed) = until_closed(&mut idle).await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "still accepting connections"
    );
    for (what, c) in [
        ("a partial head", &mut slow_head),
        ("a partial body", &mut slow_body),
        ("a request in its handler", &mut busy),
    ] {
        let (_, closed) = until_closed(c).await;
        assert_timed(what, closed - stopping, grace);
    }
    assert!(
        idle_closed - stopping < grace + MARGIN,
        "the idle connection closed after {:?}",
        idle_closed - stopping
    );
    tokio::time::timeout(BOUND, stop)
        .await
        .expect("serve did not return")
        .unwrap();
    // The HTTP side, then the pipeline's drain, each bounded by the grace period.
    let stopped = stopping.elapsed();
    assert!(stopped < grace * 2 + MARGIN, "stopping took {stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_requests_in_flight_finish() {
    let grace = Duration::from_secs(10);
    let inv = Faulty::new();
    let s = start(
        ServerConfig {
            shutdown_timeout: grace,
            ..limits(LONG, LONG, LONG)
        },
        with(inv.clone()),
    )
    .await;
    assert_eq!(s.prewarm(activity(7103, 10)).await.0, 200);
    let mut idle = connect(&s).await;
    assert_eq!(health(&mut idle).await, 200);
    inv.gated.store(true, Ordering::SeqCst);
    let mut busy = connect(&s).await;
    busy.write_all(&purchase(7103, 1)).await.unwrap();
    until_in_inventory(&inv, 1).await;

    let stopping = Instant::now();
    let stop = tokio::spawn(s.shutdown());
    // The idle connection closing shows the stop has begun.
    until_closed(&mut idle).await;
    inv.gate.add_permits(1);
    let (status, body) = read_response(&mut busy)
        .await
        .expect("the request in flight was cut off");
    assert_eq!(status, 200, "{body}");
    // No keep-alive during a stop.
    until_closed(&mut busy).await;
    tokio::time::timeout(BOUND, stop)
        .await
        .expect("serve did not return")
        .unwrap();
    let stopped = stopping.elapsed();
    assert!(stopped < grace, "stopping waited {stopped:?}");
}

#[test]
fn zero_timeouts_and_no_connections_are_invalid() {
    assert_eq!(ServerConfig::default().validate(), Ok(()));
    let cases = [
        (
            "header_read_timeout",
            ServerConfig {
                header_read_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
        ),
        (
            "body_read_timeout",
            ServerConfig {
                body_read_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
        ),
        (
            "idle_timeout",
            ServerConfig {
                idle_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
        ),
        (
            "max_connections",
            ServerConfig {
                max_connections: 0,
                ..ServerConfig::default()
            },
        ),
    ];
    for (key, config) in cases {
        assert_eq!(config.validate().map_err(|e| e.key), Err(key));
    }
}
