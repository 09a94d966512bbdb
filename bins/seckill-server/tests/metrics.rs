//! `/metrics` of the real binary on Redis, PostgreSQL and RabbitMQ: the families operators
//! need are there from the start (process, Redis pool, breaker, rejections by level, stock,
//! sale → order latency), and `promtool check metrics` accepts the exposition when promtool
//! is installed (Debian's `prometheus` package); `promtool test rules` runs the alert tests.

#![cfg(unix)]

#[path = "faults/fleet.rs"]
mod fleet;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use fleet::{Fleet, Mq};
use seckill_test_support::eventually;

fn promtool() -> Option<std::path::PathBuf> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("promtool is not installed (apt-get install prometheus): its checks are skipped");
    }
    found.then(|| "promtool".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_hold_what_operators_need_and_pass_promtool() {
    let mut f = Fleet::new(Mq::Rabbit, false, &[]).await;
    f.start().await;
    let f = Arc::new(f);
    // From the start, before any purchase.
    let first = f.metrics(0).await;
    for family in [
        "seckill_circuit_breaker_state 0",
        "seckill_rejections_total{level=\"global\"} 0",
        "seckill_rejections_total{level=\"user\"} 0",
        "seckill_rejections_total{level=\"ip\"} 0",
        "seckill_rejections_total{level=\"queue\"} 0",
        "seckill_rejections_total{level=\"breaker\"} 0",
        "seckill_rejections_total{level=\"degraded\"} 0",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(first.contains(family), "no {family} in:\n{first}");
    }
    f.prewarm(0, 11, 5).await;
    let answers = f
        .burst(0, 11, (1..=8).collect(), Arc::new(AtomicUsize::new(0)))
        .await;
    assert_eq!(answers.iter().filter(|a| a.sold()).count(), 5);
    f.settled(0, 11, Duration::from_secs(60)).await;
    let text = eventually(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "the gauges of the sale",
        || async {
            let t = f.metrics(0).await;
            (t.contains("seckill_stock_remaining{product_id=\"11\"} 0")
                && t.contains("seckill_redis_pool_connections{state=\"connected\"}"))
            .then_some(t)
        },
    )
    .await;
    for family in [
        "seckill_redis_pool_connections{state=\"configured\"} 20",
        "seckill_order_pipeline_lag_seconds_count 5",
        "seckill_purchase_requests_total{outcome=\"sold_out\"} 3",
    ] {
        assert!(text.contains(family), "no {family} in:\n{text}");
    }
    if let Some(promtool) = promtool() {
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
        let rules = Command::new(&promtool)
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            rules.status.success(),
            "promtool test rules: {}{}",
            String::from_utf8_lossy(&rules.stdout),
            String::from_utf8_lossy(&rules.stderr)
        );
    }
    Arc::into_inner(f).unwrap().cleanup().await;
}
