//! `seckill-bench memory`: the resident memory embedded mode keeps per sale.
//!
//! Runs the real service on `Components::embedded()` in this process, prewarms one product,
//! sells to a new buyer per purchase from concurrent tasks, lets the pipeline drain (every sale
//! relayed, consumed and stored as an order), and reads the resident set from
//! `/proc/self/status` at checkpoints along the way. It also reports the purchases' latency in
//! process (no HTTP): a structure that stops the world to grow shows as the largest.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use seckill_service::{ActivityInput, Components, PurchaseInput, Service, ServiceConfig};

pub(crate) struct MemoryArgs {
    stock: u64,
    sales: u64,
    tasks: usize,
    threads: usize,
    checkpoints: u64,
}

pub(crate) fn parse(args: &[String]) -> anyhow::Result<MemoryArgs> {
    let mut out = MemoryArgs {
        stock: 1_000_000_000,
        sales: 1_000_000,
        tasks: 64,
        threads: 2,
        checkpoints: 4,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context("missing value");
        match a.as_str() {
            "--stock" => out.stock = val()?.parse()?,
            "--sales" => out.sales = val()?.parse()?,
            "--tasks" => out.tasks = val()?.parse()?,
            "--threads" => out.threads = val()?.parse()?,
            "--checkpoints" => out.checkpoints = val()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        out.sales > 0 && out.sales <= out.stock,
        "--sales must be in 1..=--stock"
    );
    ensure!(
        out.tasks > 0 && out.threads > 0 && out.checkpoints > 0,
        "counts must be positive"
    );
    Ok(out)
}

/// The resident set of this process, in bytes.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

/// Purchase latencies: microseconds below 1 ms, then milliseconds up to 10 s. Small and
/// allocated before the first reading, so it adds nothing to the growth measured.
struct Latencies(Vec<AtomicU64>);

impl Latencies {
    const US: usize = 1000;
    const MS: usize = 10_000;

    fn new() -> Self {
        Self(
            (0..Self::US + Self::MS + 1)
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }

    fn record(&self, d: Duration) {
        let us = d.as_micros() as usize;
        let i = if us < Self::US {
            us
        } else {
            (Self::US + us / 1000 - 1).min(Self::US + Self::MS)
        };
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of bucket `i`, in microseconds.
    fn bound(i: usize) -> u64 {
        if i < Self::US {
            i as u64
        } else {
            (i - Self::US + 1) as u64 * 1000
        }
    }

    /// Purchases that took `ms` milliseconds or more.
    fn at_least_ms(&self, ms: usize) -> u64 {
        self.0[Self::US + ms - 1..]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// `p` in [0, 1] and the largest, in microseconds.
    fn percentile(&self, p: f64) -> u64 {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bound(i);
            }
        }
        0
    }
}

pub(crate) fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(measure(args))
}

async fn measure(args: MemoryArgs) -> anyhow::Result<()> {
    const PRODUCT: u64 = 1;
    let mut config = ServiceConfig::default();
    // As benches/run.sh starts the server: every protection on, the global limit out of the way.
    let unlimited = NonZeroU32::new(100_000_000).expect("non-zero");
    config.seckill.rate_limit.requests_per_second = unlimited;
    config.seckill.rate_limit.burst_size = unlimited;
    let (service, pipeline) = Service::start(config, Components::embedded()).await?;
    let operator = service.authenticate(None, Some([127, 0, 0, 1].into()))?;
    let buyer = service.authenticate(None, Some([203, 0, 113, 7].into()))?;
    let latencies = Arc::new(Latencies::new());
    let started = rss()?;
    service
        .prewarm(
            &operator,
            ActivityInput {
                product_id: PRODUCT,
                product_name: "memory".into(),
                price: 1.0,
                stock: args.stock,
                start_time: "2024-01-01T00:00:00Z".into(),
                end_time: "2099-01-01T00:00:00Z".into(),
                ..Default::default()
            },
        )
        .await?;
    let prewarmed = rss()?;

    let mut rows = Vec::new();
    for c in 1..=args.checkpoints {
        let from = args.sales * (c - 1) / args.checkpoints;
        let until = args.sales * c / args.checkpoints;
        // Users of this stretch: one new buyer per purchase, numbered on from the last.
        let next_user = Arc::new(AtomicU64::new(from + 1));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..args.tasks)
            .map(|_| {
                let (service, buyer, next_user) =
                    (service.clone(), buyer.clone(), next_user.clone());
                let latencies = latencies.clone();
                tokio::spawn(async move {
                    loop {
                        let user_id = next_user.fetch_add(1, Ordering::Relaxed);
                        if user_id > until {
                            return Ok::<_, anyhow::Error>(());
                        }
                        let input = PurchaseInput {
                            product_id: PRODUCT,
                            user_id: Some(user_id),
                            ..Default::default()
                        };
                        let t = Instant::now();
                        let purchase = service.purchase_request(&buyer, input)?;
                        let outcome = service.purchase(&purchase, &buyer).await?;
                        latencies.record(t.elapsed());
                        ensure!(outcome.is_success(), "user {user_id}: {outcome:?}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let selling = t0.elapsed();
        ensure!(
            pipeline.wait_drained(Duration::from_secs(600)).await,
            "the pipeline did not drain in 10 minutes"
        );
        let stats = service.product_stats(PRODUCT).await?;
        ensure!(
            stats.sold == until && stats.orders_created == until,
            "sold {} and stored {} orders, expected {until}",
            stats.sold,
            stats.orders_created
        );
        let now = rss()?;
        rows.push(serde_json::json!({
            "sales": until,
            "rss_mib": now as f64 / 1048576.0,
            "bytes_per_sale": (now.saturating_sub(prewarmed)) as f64 / until as f64,
            "sales_per_s": ((until - from) as f64 / selling.as_secs_f64()).round(),
        }));
    }
    let drained = pipeline.shutdown(Duration::from_secs(60)).await;
    let last = rows.last().cloned().unwrap_or_default();
    let out = serde_json::json!({
        "stock": args.stock,
        "sales": args.sales,
        "tasks": args.tasks,
        "threads": args.threads,
        "rss_start_mib": started as f64 / 1048576.0,
        "prewarm_mib": prewarmed.saturating_sub(started) as f64 / 1048576.0,
        "bytes_per_sale": last["bytes_per_sale"],
        "purchase_p50_us": latencies.percentile(0.5),
        "purchase_p99_us": latencies.percentile(0.99),
        "purchase_max_us": latencies.percentile(1.0),
        "purchases_over_1ms": latencies.at_least_ms(1),
        "purchases_over_10ms": latencies.at_least_ms(10),
        "checkpoints": rows,
        "drained": drained,
    });
    println!("{out}");
    Ok(())
}
