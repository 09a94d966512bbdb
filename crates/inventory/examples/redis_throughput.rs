//! Purchases per second through `RedisInventory`, against `redis-benchmark` running the same
//! purchase script by EVALSHA on the same keys at the same concurrency, interleaved in one run.
//!
//! ```text
//! cargo run --release -p seckill-inventory --features redis --example redis_throughput -- [CONCURRENCY] [REQUESTS] [ROUNDS]
//! ```
//! Needs Redis on 127.0.0.1:6379 and `redis-benchmark` (Debian: redis-tools) on the PATH.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, Inventory, PurchaseOutcome, PurchaseRequest, RedisConfig,
    RedisInventory,
};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn redis_benchmark(sha: &str, prefix: &str, clients: u64, requests: u64) -> f64 {
    let k = |s: &str| format!("{prefix}:{{1}}:{s}");
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", "6379", "-q"])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-r",
            "1000000000",
        ])
        .args(["EVALSHA", sha, "6"])
        .args([
            k("activity"),
            k("buyers"),
            k("orders"),
            k("seq"),
            k("outbox"),
            k("idem"),
        ])
        .args(["__rand_int__", "1", "", "1"])
        .output()
        .expect("redis-benchmark runs (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA ...: 61349.69 requests per second, p50=..." (possibly after \r progress lines)
    text.rsplit('\r')
        .flat_map(|l| l.lines())
        .find_map(|l| {
            let (_, rest) = l.rsplit_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("unreadable redis-benchmark output: {text}"))
}

async fn ours(inv: Arc<RedisInventory>, clients: u64, requests: u64, user_base: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (inv, next) = (inv.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let out = inv
                        .purchase(&PurchaseRequest {
                            product_id: 1,
                            user_id: user_base + i,
                            quantity: 1,
                            idempotency_key: None,
                        })
                        .await
                        .expect("purchase");
                    assert!(matches!(out, PurchaseOutcome::Success { .. }), "{out:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    requests as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = arg(1, 50);
    let requests = arg(2, 100_000);
    let rounds = arg(3, 3);
    let prefix = format!("bench-{:08x}", rand::random::<u32>());
    let config = RedisConfig {
        host: "127.0.0.1".into(),
        pool_size: 4,
        key_prefix: prefix.clone(),
        ..RedisConfig::default()
    };
    let inv = Arc::new(RedisInventory::connect(config).await?);
    let now = Utc::now();
    inv.prewarm(
        &Activity {
            product_id: 1,
            product_name: "bench".into(),
            price_cents: 100,
            stock: 1_000_000_000,
            start_time: now - Span::minutes(1),
            end_time: now + Span::hours(1),
            status: ActivityStatus::Active,
            per_user_limit: 1,
        },
        true,
    )
    .await?;
    let script = include_str!("../lua/purchase.lua");
    let sha = String::from_utf8(
        Command::new("redis-cli")
            .args(["SCRIPT", "LOAD", script])
            .output()?
            .stdout,
    )?
    .trim()
    .to_owned();

    let (mut base, mut mine) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        base.push(redis_benchmark(&sha, &prefix, clients, requests));
        mine.push(
            ours(
                inv.clone(),
                clients,
                requests,
                10_000_000_000 + r * requests,
            )
            .await,
        );
        println!(
            "round {}: redis-benchmark {:.0}/s, RedisInventory {:.0}/s",
            r + 1,
            base[r as usize],
            mine[r as usize]
        );
    }
    let (b, m) = (median(base), median(mine));
    println!(
        "median over {rounds} rounds, {clients} concurrent, {requests} purchases each: \
         redis-benchmark {b:.0}/s, RedisInventory {m:.0}/s, ratio {:.2}",
        m / b
    );
    inv.purge().await?;
    Ok(())
}
