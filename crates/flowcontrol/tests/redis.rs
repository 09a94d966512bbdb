//! `RedisLimiter` against the real Redis at 127.0.0.1:6379 (each test under its own key
//! prefix, deleted at the end). These tests fail, never skip, when Redis is not running.
#![cfg(feature = "redis")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use seckill_flowcontrol::{
    ManualClock, Quota, RateLimited, RedisLimitError, RedisLimiter, RedisLimiterConfig,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use seckill_test_support::{nz, unique};

const NEED_REDIS: &str = "these tests need Redis at 127.0.0.1:6379: start it with \
    `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`";

fn unique_prefix(test: &str) -> String {
    unique(&format!("test_fc_{test}"))
}

fn config(prefix: &str, rate: u32, burst: u32) -> RedisLimiterConfig {
    RedisLimiterConfig::new(prefix, Quota::per_second(nz(rate)).with_burst(nz(burst)))
}

/// The two throughput tests measure rates on two shared cores: they run one at a time, so
/// neither steals the other's driver time.
static THROUGHPUT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(config: RedisLimiterConfig) -> RedisLimiter {
    RedisLimiter::connect(config).await.expect(NEED_REDIS)
}

/// What a [`drive`] run saw.
struct Run {
    /// Permits granted.
    admitted: u64,
    /// Calls refused.
    rejected: u64,
    /// Permits asked for, granted or not.
    attempted: u64,
    elapsed: Duration,
}

/// Drives `limiter` from `tasks` tasks for `run`, `n` permits per call, as fast as they go.
async fn drive(limiter: &RedisLimiter, key: &str, tasks: usize, n: u32, run: Duration) -> Run {
    let admitted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (l, a, r, key) = (
            limiter.clone(),
            admitted.clone(),
            rejected.clone(),
            key.to_owned(),
        );
        set.spawn(async move {
            while Instant::now() < deadline {
                match l.try_acquire_redis(&key, n).await.expect("redis answers") {
                    Ok(()) => a.fetch_add(u64::from(n), Ordering::Relaxed),
                    Err(_) => r.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let elapsed = start.elapsed();
    let (admitted, rejected) = (
        admitted.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed),
    );
    Run {
        admitted,
        rejected,
        attempted: admitted + rejected * u64::from(n),
        elapsed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_limit_rejects_nothing() {
    let _serial = THROUGHPUT.lock().await;
    let prefix = unique_prefix("high");
    let limiter = connect(config(&prefix, 100_000, 100_000)).await;
    let run = drive(&limiter, "global", 8, 1, Duration::from_secs(1)).await;
    let rate = run.admitted as f64 / run.elapsed.as_secs_f64();
    println!(
        "100,000/s limit: {} admitted in {:?} ({rate:.0}/s), {} rejected",
        run.admitted, run.elapsed, run.rejected
    );
    assert!(
        run.admitted > 1000,
        "the driver barely ran: {}",
        run.admitted
    );
    assert_eq!(run.rejected, 0);
    assert_eq!(limiter.fallback_decisions(), 0);
    limiter.purge().await.unwrap();
    limiter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_the_rate_within_one_percent() {
    let _serial = THROUGHPUT.lock().await;
    let prefix = unique_prefix("rate");
    // A burst of 1,000 (100 ms at the rate) lets the limiter absorb the driver's scheduling
    // stalls on a loaded machine; a smaller one loses capacity whenever the driver pauses longer
    // than the burst lasts, which is the driver's fault, not the limiter's.
    let (rate, burst) = (10_000u32, 1_000u32);
    let limiter = connect(config(&prefix, rate, burst)).await;
    // Five permits per call: a debug build on two shared cores manages 5–10k calls/s, so
    // this asks for 25–50k permits/s, well above the limit.
    let n = 5;
    let run = drive(&limiter, "global", 32, n, Duration::from_secs(2)).await;
    let secs = run.elapsed.as_secs_f64();
    let expected = f64::from(rate) * secs;
    let asked = run.attempted as f64 / secs;
    let admitted = run.admitted as f64;
    println!(
        "10,000/s limit, burst {burst}: {} permits admitted in {:?} = {:.1}/s (target {expected:.0} \
         + burst {burst}), {} calls rejected, driver asked {asked:.0} permits/s",
        run.admitted,
        run.elapsed,
        admitted / secs,
        run.rejected,
    );
    // GCRA never admits more than rate * t + burst over any interval t, and every decision
    // happened inside the measured interval.
    assert!(
        admitted <= expected * 1.01 + f64::from(burst),
        "over-admitted: {admitted} > 1.01 * {expected:.0} + {burst}"
    );
    // The lower bound only means something when the driver outran the limit all along.
    assert!(
        run.rejected > 0,
        "the driver never reached the limit ({asked:.0} permits/s)"
    );
    if asked >= 1.5 * f64::from(rate) {
        assert!(
            admitted >= expected * 0.99,
            "under-admitted: {admitted} < 0.99 * {expected:.0}"
        );
    } else {
        println!("driver too slow for the lower bound ({asked:.0} permits/s): not asserted");
    }
    limiter.purge().await.unwrap();
    limiter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_exact_and_keys_are_separate() {
    let prefix = unique_prefix("exact");
    let limiter = connect(config(&prefix, 1, 3)).await;
    for _ in 0..3 {
        assert_eq!(limiter.try_acquire("a", 1).await, Ok(()));
    }
    let err = limiter.try_acquire("a", 1).await.unwrap_err();
    // Redis's clock: about one second, never more.
    assert!(
        err.retry_after <= Duration::from_secs(1) && err.retry_after > Duration::from_millis(900),
        "{err:?}"
    );
    assert_eq!(limiter.try_acquire("b", 3).await, Ok(()));
    assert_eq!(limiter.try_acquire("b", 4).await, Err(RateLimited::NEVER));
    assert_eq!(limiter.try_acquire("b", 0).await, Ok(()));
    assert!(!limiter.is_fallback());
    assert_eq!(limiter.live_instances(), 1);
    // Buckets are hash-tagged per key; heartbeats live beside them.
    let removed = limiter.purge().await.unwrap();
    assert_eq!(
        removed, 3,
        "{{prefix:a}}, {{prefix:b}} and {{prefix}}:instances"
    );
    limiter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_a_flush() {
    let prefix = unique_prefix("noscript");
    let limiter = connect(config(&prefix, 10, 10)).await;
    // SCRIPT FLUSH through a second limiter's connection would need fred; use redis-cli's
    // protocol instead: a raw RESP command on a plain socket.
    let mut s = TcpStream::connect("127.0.0.1:6379")
        .await
        .expect(NEED_REDIS);
    tokio::io::AsyncWriteExt::write_all(&mut s, b"*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
        .await
        .unwrap();
    assert_eq!(&buf, b"+OK\r\n");
    assert_eq!(limiter.try_acquire_redis("k", 1).await.unwrap(), Ok(()));
    assert_eq!(limiter.heartbeat().await.unwrap(), 1);
    limiter.purge().await.unwrap();
    limiter.shutdown().await;
}

/// A TCP proxy to Redis that can be killed: its port then refuses connections, as a dead
/// Redis would.
struct Proxy {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                conns.spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect("127.0.0.1:6379").await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self { addr, tasks }
    }

    /// Closes the listener and every proxied connection.
    async fn kill(mut self) {
        self.tasks.shutdown().await;
    }
}

fn counter(snapshot: &Snapshotter, name: &str, prefix: &str) -> (u64, Option<f64>) {
    let mut total = 0;
    let mut gauge = None;
    for (key, _, _, value) in snapshot.snapshot().into_vec() {
        let k = key.key();
        if !k
            .labels()
            .any(|l| l.key() == "limiter" && l.value() == prefix)
        {
            continue;
        }
        match value {
            DebugValue::Counter(c) if k.name() == name => total += c,
            DebugValue::Gauge(g) if k.name() == "seckill_ratelimit_fallback" => {
                gauge = Some(g.into_inner());
            }
            _ => {}
        }
    }
    (total, gauge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fall_back_to_a_third_of_the_rate_each() {
    let prefix = unique_prefix("fallback");
    let (rate, burst) = (300u32, 30u32);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let proxy = Proxy::start().await;
    let clock = ManualClock::new();
    let mut limiters = Vec::new();
    {
        // Metric handles are bound when a limiter is built: build them under the recorder.
        let _guard = metrics::set_default_local_recorder(&recorder);
        for i in 0..3 {
            let mut c = config(&prefix, rate, burst);
            c.port = proxy.addr.port();
            c.instance_id = Some(format!("instance-{i}"));
            c.heartbeat_interval = Duration::from_secs(3600);
            c.heartbeat_ttl = Duration::from_secs(7200);
            c.command_timeout = Duration::from_millis(500);
            let l = RedisLimiter::connect_with_clock(c, clock.clone())
                .await
                .expect(NEED_REDIS);
            limiters.push(l);
        }
    }
    // Every instance has registered; a second round lets each see all three.
    for l in &limiters {
        assert_eq!(l.heartbeat().await.unwrap(), 3);
        assert_eq!(l.live_instances(), 3);
        assert_eq!(
            l.fallback_quota(),
            Quota::per_second(nz(100)).with_burst(nz(10))
        );
    }
    // While Redis is up, decisions are global.
    assert_eq!(limiters[0].try_acquire("global", 1).await, Ok(()));
    assert!(!limiters[0].is_fallback());

    proxy.kill().await;
    // Frozen-then-stepped manual clock: 10 rounds 100 ms apart, 200 attempts per instance
    // per round, far above the limit.
    let mut admitted = [0u64; 3];
    for round in 0..10 {
        if round > 0 {
            clock.advance(Duration::from_millis(100));
        }
        for (i, l) in limiters.iter().enumerate() {
            for _ in 0..200 {
                if l.try_acquire("global", 1).await.is_ok() {
                    admitted[i] += 1;
                }
            }
        }
    }
    let total: u64 = admitted.iter().sum();
    let elapsed = 0.9; // seconds of the manual clock between the first and last decision
    let bound = 1.1 * f64::from(rate) * elapsed + f64::from(burst) + 3.0;
    println!(
        "fallback: admitted {admitted:?} = {total} (bound {bound:.0}; without the division: 900)"
    );
    // Each instance: its burst of 10, then 100/s for 0.9 s.
    assert_eq!(admitted, [100, 100, 100]);
    assert!((total as f64) <= bound);
    for l in &limiters {
        assert!(l.is_fallback());
        assert!(
            l.try_acquire_redis("global", 1).await.is_err(),
            "redis is gone"
        );
        assert_eq!(l.live_instances(), 3, "the last count seen is kept");
        assert!(l.heartbeat().await.is_err());
        assert_eq!(l.live_instances(), 3);
    }
    let decisions: u64 = limiters.iter().map(RedisLimiter::fallback_decisions).sum();
    assert_eq!(decisions, 3 * 10 * 200);
    let (counted, gauge) = counter(
        &snapshotter,
        "seckill_ratelimit_fallback_decisions_total",
        &prefix,
    );
    assert_eq!(counted, decisions);
    assert_eq!(gauge, Some(1.0));

    for l in &limiters {
        l.shutdown().await;
    }
    // Clean up through a direct connection.
    let cleaner = connect(config(&prefix, rate, burst)).await;
    cleaner.purge().await.unwrap();
    cleaner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_falls_back_from_the_start() {
    let mut c = config("test-fc-unreachable", 300, 30);
    c.port = 1; // nothing listens there: connection refused
    c.connect_timeout = Duration::from_millis(300);
    let err = RedisLimiter::connect(c.clone()).await.unwrap_err();
    assert!(matches!(err, RedisLimitError::Unreachable { .. }), "{err}");

    c.assumed_instances = nz(3);
    let clock = ManualClock::new();
    let limiter = RedisLimiter::connect_lazy_with_clock(c, clock.clone()).unwrap();
    assert!(matches!(
        limiter.try_acquire_redis("k", 1).await,
        Err(RedisLimitError::NotConnected)
    ));
    let mut admitted = 0;
    for _ in 0..100 {
        admitted += u32::from(limiter.try_acquire("k", 1).await.is_ok());
    }
    assert_eq!(admitted, 10, "a third of the burst");
    let err = limiter.try_acquire("k", 1).await.unwrap_err();
    assert_eq!(err.retry_after, Duration::from_millis(10), "100/s");
    clock.advance(Duration::from_millis(10));
    assert_eq!(limiter.try_acquire("k", 1).await, Ok(()));
    assert!(limiter.is_fallback());
    assert_eq!(limiter.fallback_decisions(), 102);
    limiter.shutdown().await;
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let err = RedisLimiter::connect(config("", 1, 1)).await.unwrap_err();
    assert!(matches!(err, RedisLimitError::Config(_)), "{err}");
}
