//! The server refuses, at start, a Redis that persists nothing — whose restart would forget
//! every sale — unless `redis.allow_volatile` accepts it.

use std::process::{Command, Stdio};
use std::time::Duration;

use seckill_test_support::{PrivateRedis, clean_command, free_port};

fn server(redis_port: u16, allow_volatile: bool) -> Command {
    let mut c = clean_command(env!("CARGO_BIN_EXE_seckill-server"));
    c.env("SECKILL_SERVER__HOST", "127.0.0.1")
        .env("SECKILL_SERVER__PORT", free_port().to_string())
        .env("SECKILL_SERVER__GRPC_PORT", free_port().to_string())
        .env("SECKILL_INVENTORY__BACKEND", "redis")
        .env("SECKILL_REDIS__HOST", "127.0.0.1")
        .env("SECKILL_REDIS__PORT", redis_port.to_string())
        .env(
            "SECKILL_REDIS__KEY_PREFIX",
            seckill_test_support::unique("dur"),
        )
        .env("SECKILL_REDIS__ALLOW_VOLATILE", allow_volatile.to_string())
        .env("SECKILL_TELEMETRY__LOG_LEVEL", "info")
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_persists_nothing_is_refused_at_start_unless_allowed() {
    let redis = PrivateRedis::start(&["--appendonly", "no"]).await;
    let out = server(redis.port, false).output().expect("the server runs");
    assert!(!out.status.success(), "a volatile Redis was accepted");
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("allow_volatile"), "{err}");
    assert!(err.contains("persists nothing"), "{err}");
    // Accepted when allowed: the server starts and serves (stopped here with SIGTERM).
    let mut child = server(redis.port, true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    let up = rx.recv_timeout(Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    up.expect("the server started with redis.allow_volatile: true");
}
