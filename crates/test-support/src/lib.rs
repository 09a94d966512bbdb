//! Helpers shared by the seckill test suites: names no other test (or earlier run) uses,
//! non-zero numbers, and waits with a deadline that fail with a message instead of hanging.
//!
//! # Example
//! ```
//! let a = seckill_test_support::unique("orders");
//! let b = seckill_test_support::unique("orders");
//! assert_ne!(a, b);
//! assert!(a.starts_with("orders_"));
//! assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
//! ```

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// A name of `what` no other test uses, in this run or another: letters, digits and `_` only
/// (when `what` is), so it is a valid Redis key prefix, PostgreSQL schema, RabbitMQ name and
/// Kafka topic prefix alike.
pub fn unique(what: &str) -> String {
    format!(
        "{what}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// A port nothing listens on right now, on 127.0.0.1.
///
/// # Panics
/// When no local port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `program` (a server binary under test) without the test's own `SECKILL_*` variables nor
/// `RUST_LOG`: only what the test sets configures it.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SECKILL_") {
            c.env_remove(key);
        }
    }
    c.env_remove("RUST_LOG");
    c
}

/// `v` as a [`NonZeroU32`].
///
/// # Panics
/// When `v` is zero.
pub fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

/// Awaits `f`, failing the test with `what` if it takes longer than `limit`.
///
/// # Panics
/// When `limit` passes first.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Calls `check` every `step` until it returns `Some`, failing the test with `what` after
/// `limit`.
///
/// # Panics
/// When `limit` passes first.
pub async fn eventually<T, F, Fut>(limit: Duration, step: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(step).await;
    }
}

/// A redis-server of the test's own on a free port, in a directory of its own, killed and
/// removed when dropped: for tests that stop, restart or break Redis without touching the
/// shared one.
pub struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub dir: std::path::PathBuf,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` with `args` (e.g. `["--appendonly", "yes"]`) and waits until it
    /// answers.
    ///
    /// # Panics
    /// When `redis-server` cannot be started or does not answer within 10 s.
    pub async fn start(args: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("redis"));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let mut r = Self {
            port,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (apt package redis-server)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            "the private redis-server answers",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// Sends it a signal by name (`STOP`, `CONT`, `KILL`).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    /// Runs `redis-cli` against it and returns what it printed.
    ///
    /// # Panics
    /// When `redis-cli` cannot run.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (apt package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops it (`SHUTDOWN`, saving when it persists) and starts it again on the same port and
    /// directory.
    pub async fn restart(&mut self) {
        let _ = self.cli(&["shutdown"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy a test can take down and bring back, to cut a service off from the server
/// under test without stopping the shared service itself.
pub struct Proxy {
    /// Where the server under test connects.
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Forwards a new local port to `target`.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused while down
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            up,
            conns,
            accept,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
