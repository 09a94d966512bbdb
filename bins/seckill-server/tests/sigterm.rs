//! The real binary stops on SIGTERM within `server.shutdown_timeout` (plus the pipeline's
//! drain) even with a slow and an idle client connected.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use seckill_test_support::{clean_command, free_port};

/// The grace period given to the server.
const GRACE: Duration = Duration::from_secs(1);
/// Slack on top of the grace period and the pipeline's drain, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(4);

/// Kills the server if the test fails before it exits.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `GET /health` on `stream` and reads the whole response; its status.
fn health(stream: &mut TcpStream) -> std::io::Result<u16> {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: seckill\r\n\r\n")?;
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
            while data.len() < end + 4 + len {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                data.extend_from_slice(&buf[..n]);
            }
            return head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::ErrorKind::InvalidData.into());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Collects the server's log lines and says when it is listening.
fn follow(stdout: impl Read + Send + 'static) -> (mpsc::Receiver<()>, Arc<Mutex<String>>) {
    let (up_tx, up_rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("seckill-server listening") {
                let _ = up_tx.send(());
            }
            let mut log = kept.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (up_rx, log)
}

#[test]
fn sigterm_stops_the_server_within_its_shutdown_timeout_despite_slow_clients() {
    // An empty working directory: no config/seckill.yaml, only these variables apply.
    let dir = std::env::temp_dir().join(format!("seckill-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let grpc_port = loop {
        let p = free_port();
        if p != port {
            break p;
        }
    };
    // The "listening" line below is logged at info (RUST_LOG is removed).
    let child = clean_command(env!("CARGO_BIN_EXE_seckill-server"))
        .current_dir(&dir)
        .env("SECKILL_SERVER__HOST", "127.0.0.1")
        .env("SECKILL_SERVER__PORT", port.to_string())
        .env("SECKILL_SERVER__GRPC_PORT", grpc_port.to_string())
        .env("SECKILL_SERVER__SHUTDOWN_TIMEOUT", "1s")
        // Far beyond the test's bound: only the shutdown timeout can end the slow clients.
        .env("SECKILL_SERVER__HEADER_READ_TIMEOUT", "60s")
        .env("SECKILL_SERVER__IDLE_TIMEOUT", "60s")
        .env("SECKILL_TELEMETRY__LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts");
    let pid = child.id();
    let mut running = Running(Some(child));
    let (up, log) = follow(running.0.as_mut().unwrap().stdout.take().unwrap());
    let shown = || log.lock().unwrap().clone();
    up.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the server did not start; its log:\n{}", shown()));

    // The gRPC front answers on its own port.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let serving = rt.block_on(async {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .unwrap()
                .connect()
                .await
                .expect("the gRPC port answers");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "seckill.v1.Seckill".into(),
            })
            .await
            .expect("the health service answers")
            .into_inner()
            .status()
    });
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    drop(rt);
    // An idle kept-alive client, and one that never finishes its request head.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(health(&mut idle).unwrap(), 200);
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: seckill\r\n")
        .unwrap();

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid} failed");

    // Wait on another thread, so the wait has a deadline.
    let mut child = running.0.take().unwrap();
    let (exited_tx, exited_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = exited_tx.send(status);
        child
    });
    let exited = exited_rx.recv_timeout(GRACE * 2 + MARGIN);
    let took = signalled.elapsed();
    let status = match exited {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // Still running: the waiter thread holds the child; kill it through `kill`.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = waiter.join();
            panic!(
                "the server was still running {took:?} after SIGTERM; its log:\n{}",
                shown()
            );
        }
    };
    let _ = waiter.join();
    assert!(
        status.success(),
        "the server exited with {status}; its log:\n{}",
        shown()
    );
    // The slow client held the HTTP side until the grace period ran out.
    assert!(
        took >= GRACE.mul_f64(0.9),
        "exited {took:?} after SIGTERM, before the grace period"
    );
    drop((idle, slow));
    let _ = std::fs::remove_dir_all(&dir);
}
