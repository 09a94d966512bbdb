//! Property tests: admission bounds of every limiter over arbitrary request
//! sequences, exact `retry_after`, and the circuit breaker's guarantees.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use seckill_flowcontrol::{
    Algorithm, BreakerConfig, BreakerState, CallOutcome, CircuitBreaker, FixedWindow, Limiter,
    ManualClock, Quota, RateLimited, RateLimiter, SlidingWindow, TokenBucket,
};

use seckill_test_support::nz;

/// Runs `(advance, n)` steps; returns admitted `(time_ns, n)`.
fn run(limiter: &dyn RateLimiter, clock: &ManualClock, steps: &[(u64, u32)]) -> Vec<(u64, u64)> {
    let mut t = 0u64;
    let mut admitted = Vec::new();
    for &(dt, n) in steps {
        clock.advance(Duration::from_nanos(dt));
        t += dt;
        if limiter.try_acquire(n).is_ok() {
            admitted.push((t, u64::from(n)));
        }
    }
    admitted
}

/// Permits admitted with times in `[from, from + len)`.
fn admitted_in(admitted: &[(u64, u64)], from: u64, len: u64) -> u64 {
    admitted
        .iter()
        .filter(|&&(t, _)| t >= from && t - from < len)
        .map(|&(_, n)| n)
        .sum()
}

/// After a rejection, waiting `retry_after` minus 1 ns still fails and
/// waiting exactly `retry_after` succeeds.
fn check_retry_after(limiter: &dyn RateLimiter, clock: &ManualClock, steps: &[(u64, u32)]) {
    for &(dt, n) in steps {
        clock.advance(Duration::from_nanos(dt));
        match limiter.try_acquire(n) {
            Ok(()) => {}
            Err(RateLimited { retry_after }) if retry_after == Duration::MAX => {}
            Err(RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO);
                clock.advance(retry_after - Duration::from_nanos(1));
                assert!(
                    limiter.try_acquire(n).is_err(),
                    "admitted before retry_after"
                );
                clock.advance(Duration::from_nanos(1));
                assert!(limiter.try_acquire(n).is_ok(), "rejected at retry_after");
            }
        }
    }
}

fn steps(max_dt_ns: u64, max_n: u32) -> impl Strategy<Value = Vec<(u64, u32)>> {
    prop::collection::vec((prop_oneof![Just(0u64), 0..max_dt_ns], 1..=max_n), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Token bucket: any closed interval [a, b] holds at most
    /// burst + rate·(b − a) permits.
    #[test]
    fn token_bucket_admits_at_most_rate_t_plus_burst(
        rate in 1u32..2000,
        burst in 1u32..50,
        steps in steps(50_000_000, 8),
    ) {
        let clock = ManualClock::new();
        let b = TokenBucket::with_clock(Quota::per_second(nz(rate)).with_burst(nz(burst)), clock.clone());
        let admitted = run(&b, &clock, &steps);
        for i in 0..admitted.len() {
            let mut sum = 0u128;
            for j in i..admitted.len() {
                sum += u128::from(admitted[j].1);
                let span = u128::from(admitted[j].0 - admitted[i].0);
                prop_assert!(
                    sum * 1_000_000_000 <= u128::from(burst) * 1_000_000_000 + u128::from(rate) * span,
                    "{sum} permits in {span} ns (rate {rate}, burst {burst})"
                );
            }
        }
    }

    #[test]
    fn token_bucket_retry_after_is_exact(
        rate in 1u32..2000,
        burst in 1u32..20,
        steps in steps(20_000_000, 25),
    ) {
        let clock = ManualClock::new();
        let b = TokenBucket::with_clock(Quota::per_second(nz(rate)).with_burst(nz(burst)), clock.clone());
        check_retry_after(&b, &clock, &steps);
    }

    /// Fixed window: at most `limit` per aligned window, and at most
    /// limit·(ceil(t/window) + 1) in any interval of length t.
    #[test]
    fn fixed_window_bound(
        limit in 1u32..30,
        window_ms in 1u64..500,
        t_ms in 1u64..2000,
        steps in steps(30_000_000, 5),
    ) {
        let clock = ManualClock::new();
        let window = window_ms * 1_000_000;
        let w = FixedWindow::with_clock(nz(limit), Duration::from_nanos(window), clock.clone());
        let admitted = run(&w, &clock, &steps);
        let t = t_ms * 1_000_000;
        let bound = u64::from(limit) * (t.div_ceil(window) + 1);
        for &(start, _) in &admitted {
            prop_assert!(admitted_in(&admitted, start, t) <= bound);
            let aligned = start / window * window;
            prop_assert!(admitted_in(&admitted, aligned, window) <= u64::from(limit));
        }
    }

    #[test]
    fn fixed_window_retry_after_is_exact(
        limit in 1u32..30,
        window_ms in 1u64..500,
        steps in steps(30_000_000, 40),
    ) {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(limit), Duration::from_millis(window_ms), clock.clone());
        check_retry_after(&w, &clock, &steps);
    }

    /// Sliding window: never more than `limit` in any interval of length
    /// `window`.
    #[test]
    fn sliding_window_never_exceeds_limit_in_any_window(
        limit in 1u32..30,
        window_ns in 1u64..1_000_000_000,
        buckets in 1u32..20,
        steps in steps(100_000_000, 5),
    ) {
        let clock = ManualClock::new();
        let w = SlidingWindow::with_clock(nz(limit), Duration::from_nanos(window_ns), nz(buckets), clock.clone());
        let admitted = run(&w, &clock, &steps);
        for &(start, _) in &admitted {
            let inside = admitted_in(&admitted, start, window_ns);
            prop_assert!(inside <= u64::from(limit), "{inside} in [{start}, +{window_ns})");
        }
    }

    #[test]
    fn sliding_window_retry_after_is_exact(
        limit in 1u32..30,
        window_ms in 1u64..1000,
        buckets in 1u32..20,
        steps in steps(50_000_000, 40),
    ) {
        let clock = ManualClock::new();
        let w = SlidingWindow::with_clock(nz(limit), Duration::from_millis(window_ms), nz(buckets), clock.clone());
        check_retry_after(&w, &clock, &steps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The lever never hands out a fresh burst: on a clock that does not move, whatever
    /// algorithms and quotas are set in between, no more than the first burst is admitted.
    #[test]
    fn limiter_levers_never_add_permits(
        first in 0usize..3,
        burst in 1u32..50,
        ops in prop::collection::vec((0usize..3, 1u32..1000, 1u32..100, 1u32..8), 1..100),
    ) {
        let quota = |rate, burst| Quota::per_second(nz(rate)).with_burst(nz(burst));
        let clock = ManualClock::new();
        let l = Limiter::with_clock(Algorithm::ALL[first], quota(10, burst), clock);
        let mut admitted = 0u32;
        for (algorithm, rate, new_burst, n) in ops {
            if l.try_acquire(n).is_ok() {
                admitted += n;
            }
            l.set(Algorithm::ALL[algorithm], quota(rate, new_burst));
        }
        while l.try_acquire(1).is_ok() {
            admitted += 1;
        }
        prop_assert!(admitted <= burst, "{admitted} admitted, burst {burst}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    Record(usize, u8),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        3 => (any::<usize>(), 0u8..3).prop_map(|(i, o)| Op::Record(i, o)),
        2 => (0u64..40).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Default)]
struct Model {
    open_at: Option<Duration>,
    half_open_era: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The breaker never admits a call while open before the recovery
    /// timeout, reports the exact wait, and never has more concurrent
    /// half-open probes than its cap.
    #[test]
    fn breaker_guarantees(
        failure_threshold in 0u32..4,
        ratio in prop::option::of(0.1f64..=1.0),
        timeout_ms in 1u64..60,
        probes_cap in 1u32..4,
        success_threshold in 1u32..4,
        ops in prop::collection::vec(op(), 1..400),
    ) {
        let clock = ManualClock::new();
        let b = CircuitBreaker::with_clock(
            BreakerConfig {
                failure_threshold,
                recovery_timeout: Duration::from_millis(timeout_ms),
                half_open_max_probes: probes_cap,
                success_threshold,
                window: Duration::from_millis(100),
                minimum_calls: 3,
                failure_ratio: ratio,
                ..BreakerConfig::default()
            },
            clock.clone(),
        );
        let model = Arc::new(Mutex::new(Model::default()));
        let (m, c) = (Arc::clone(&model), clock.clone());
        b.on_state_change(move |_from, to| {
            let mut m = m.lock();
            match to {
                BreakerState::Open => m.open_at = Some(c.now_for_test()),
                BreakerState::HalfOpen => {
                    m.open_at = None;
                    m.half_open_era += 1;
                }
                BreakerState::Closed => m.open_at = None,
            }
        });
        let timeout = Duration::from_millis(timeout_ms);
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let open_at = model.lock().open_at;
                    let now = clock.now_for_test();
                    match b.try_acquire() {
                        Ok(p) => {
                            if let Some(at) = open_at {
                                prop_assert!(now >= at + timeout, "admitted while open");
                            }
                            let era = model.lock().half_open_era;
                            held.push((p.is_probe(), era, p));
                        }
                        Err(e) => {
                            if let Some(at) = open_at {
                                prop_assert_eq!(e.retry_after, at + timeout - now);
                            }
                        }
                    }
                }
                Op::Record(i, o) if !held.is_empty() => {
                    let (_, _, p) = held.swap_remove(i % held.len());
                    p.record([CallOutcome::Success, CallOutcome::Failure, CallOutcome::Ignored][o as usize]);
                }
                Op::Record(..) => {}
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            }
            let m = model.lock();
            if b.state() == BreakerState::HalfOpen {
                let live = held.iter().filter(|(probe, era, _)| *probe && *era == m.half_open_era).count();
                prop_assert!(live <= probes_cap as usize, "{live} probes > {probes_cap}");
            }
            prop_assert_eq!(m.open_at.is_some(), b.state() == BreakerState::Open);
        }
    }
}

/// `Clock::now` through the trait, for the callback closure.
trait NowForTest {
    fn now_for_test(&self) -> Duration;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> Duration {
        seckill_flowcontrol::Clock::now(self)
    }
}
