//! Hot-path costs of the limiters and the breaker, side by side with the
//! `governor` crate. Manual/fake clocks keep runs deterministic.

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use governor::clock::FakeRelativeClock;
use seckill_flowcontrol::{
    Algorithm, BreakerConfig, CircuitBreaker, FixedWindow, KeyedLimiter, Limiter, ManualClock,
    Quota, RateLimiter, SlidingWindow, TokenBucket,
};

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// One permit per nanosecond and a burst of u32::MAX: with a clock that
/// does not move, every acquire in a run is admitted (the hot path).
fn our_quota() -> Quota {
    Quota::per_second(nz(1_000_000_000)).with_burst(nz(u32::MAX))
}

fn governor_quota() -> governor::Quota {
    governor::Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .allow_burst(nz(u32::MAX))
}

/// Runs `f` on two threads, `iters` calls in total; returns the wall time.
fn two_threads(iters: u64, f: &(impl Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..iters / 2 {
                    f();
                }
            });
        }
    });
    start.elapsed()
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g
}

fn token_bucket(c: &mut Criterion) {
    let mut g = group(c, "token_bucket");
    let ours = TokenBucket::with_clock(our_quota(), ManualClock::new());
    g.bench_function("single/ours_manual_clock", |b| {
        b.iter(|| black_box(ours.try_acquire(1)))
    });
    let gov =
        governor::RateLimiter::direct_with_clock(governor_quota(), FakeRelativeClock::default());
    g.bench_function("single/governor_fake_clock", |b| {
        b.iter(|| black_box(gov.check()))
    });

    let ours = TokenBucket::new(our_quota());
    g.bench_function("single/ours_system_clock", |b| {
        b.iter(|| black_box(ours.try_acquire(1)))
    });
    let gov = governor::RateLimiter::direct(governor_quota());
    g.bench_function("single/governor_default_clock", |b| {
        b.iter(|| black_box(gov.check()))
    });

    let ours = TokenBucket::with_clock(Quota::per_second(nz(1)), ManualClock::new());
    let _ = ours.try_acquire(1);
    g.bench_function("reject/ours_manual_clock", |b| {
        b.iter(|| black_box(ours.try_acquire(1)))
    });
    let gov = governor::RateLimiter::direct_with_clock(
        governor::Quota::per_second(nz(1)),
        FakeRelativeClock::default(),
    );
    let _ = gov.check();
    g.bench_function("reject/governor_fake_clock", |b| {
        b.iter(|| black_box(gov.check()))
    });

    let ours = TokenBucket::with_clock(our_quota(), ManualClock::new());
    g.bench_function("contended_2_threads/ours_manual_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(ours.try_acquire(1)).ok();
            })
        })
    });
    let gov =
        governor::RateLimiter::direct_with_clock(governor_quota(), FakeRelativeClock::default());
    g.bench_function("contended_2_threads/governor_fake_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(gov.check()).ok();
            })
        })
    });
    g.finish();
}

fn fixed_window(c: &mut Criterion) {
    let mut g = group(c, "fixed_window");
    let ours = FixedWindow::with_clock(nz(u32::MAX), Duration::from_secs(3600), ManualClock::new());
    g.bench_function("single/ours_manual_clock", |b| {
        b.iter(|| black_box(ours.try_acquire(1)))
    });
    let ours = FixedWindow::with_clock(nz(u32::MAX), Duration::from_secs(3600), ManualClock::new());
    g.bench_function("contended_2_threads/ours_manual_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(ours.try_acquire(1)).ok();
            })
        })
    });
    g.finish();
}

fn sliding_window(c: &mut Criterion) {
    let mut g = group(c, "sliding_window");
    let clock = ManualClock::new();
    let ours = SlidingWindow::with_clock(
        nz(u32::MAX),
        Duration::from_secs(3600),
        nz(10),
        clock.clone(),
    );
    // Put the current sub-bucket in the middle of the ring so a check reads
    // a full window of history.
    clock.advance(Duration::from_secs(3600 * 5 / 2));
    g.bench_function("single_10_buckets/ours_manual_clock", |b| {
        b.iter(|| black_box(ours.try_acquire(1)))
    });
    g.bench_function("contended_2_threads_10_buckets/ours_manual_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(ours.try_acquire(1)).ok();
            })
        })
    });
    g.finish();
}

/// `Limiter` over each algorithm: the primitive's cost plus one load and one `match`.
fn limiter(c: &mut Criterion) {
    let mut g = group(c, "limiter");
    for algorithm in Algorithm::ALL {
        let ours = Limiter::with_clock(algorithm, our_quota(), ManualClock::new());
        g.bench_function(format!("single/{algorithm}_manual_clock"), |b| {
            b.iter(|| black_box(ours.try_acquire(1)))
        });
    }
    g.finish();
}

fn keyed(c: &mut Criterion) {
    const KEYS: u64 = 10_000;
    let mut g = group(c, "keyed_10k_keys");
    let ours = KeyedLimiter::with_clock(
        our_quota(),
        NonZeroUsize::new(100_000).unwrap(),
        ManualClock::new(),
    );
    let mut k = 0u64;
    g.bench_function("ours_manual_clock", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(ours.try_acquire(black_box(&k), 1))
        })
    });
    let gov =
        governor::RateLimiter::dashmap_with_clock(governor_quota(), FakeRelativeClock::default());
    let mut k = 0u64;
    g.bench_function("governor_dashmap_fake_clock", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(gov.check_key(black_box(&k)))
        })
    });
    g.bench_function("contended_2_threads/ours_manual_clock", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let ours = &ours;
                    s.spawn(move || {
                        for i in 0..iters / 2 {
                            black_box(ours.try_acquire(&((i * 2 + t) % KEYS), 1)).ok();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.bench_function("contended_2_threads/governor_dashmap_fake_clock", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let gov = &gov;
                    s.spawn(move || {
                        for i in 0..iters / 2 {
                            black_box(gov.check_key(&((i * 2 + t) % KEYS))).ok();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

fn breaker(c: &mut Criterion) {
    let mut g = group(c, "breaker");
    let b1 = CircuitBreaker::with_clock(BreakerConfig::default(), ManualClock::new());
    g.bench_function("closed_call_default_config", |b| {
        b.iter(|| {
            if let Ok(p) = b1.try_acquire() {
                p.success();
            }
        })
    });
    let b2 = CircuitBreaker::with_clock(
        BreakerConfig {
            failure_ratio: Some(0.5),
            slow_call_duration: Some(Duration::from_secs(1)),
            slow_call_ratio: Some(0.5),
            ..BreakerConfig::default()
        },
        ManualClock::new(),
    );
    g.bench_function("closed_call_ratio_strategies", |b| {
        b.iter(|| {
            if let Ok(p) = b2.try_acquire() {
                p.success();
            }
        })
    });
    g.bench_function("contended_2_threads_default_config", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                if let Ok(p) = b1.try_acquire() {
                    p.success();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    token_bucket,
    fixed_window,
    sliding_window,
    limiter,
    keyed,
    breaker
);
criterion_main!(benches);
