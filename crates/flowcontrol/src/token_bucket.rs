//! A lock-free token bucket: GCRA over one `AtomicU64`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, SystemClock, now_nanos};
use crate::limiter::{Gcra, Quota, RateLimited, RateLimiter, never};
use crate::spin::{LOCK, load_unlocked, lock};

/// The largest storable TAT (292 years of clock time).
const MAX_TAT: u64 = LOCK - 1;

/// A token bucket implemented as GCRA (the generic cell rate algorithm).
///
/// The whole state is one theoretical arrival time (TAT) in an
/// [`AtomicU64`]; [`try_acquire`](RateLimiter::try_acquire) is a
/// compare-and-swap loop with no lock and no allocation, and a rejection
/// writes nothing. Admissions are exact: over any interval of length `t`
/// at most `rate·t + burst` permits are granted.
///
/// A request for more than `burst` permits can never succeed and returns
/// [`RateLimited::NEVER`] (`retry_after == Duration::MAX`).
///
/// # Example
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use seckill_flowcontrol::{ManualClock, Quota, RateLimited, RateLimiter, TokenBucket};
///
/// let clock = ManualClock::new();
/// // 5 permits per second, burst 5: one permit every 200 ms.
/// let quota = Quota::per_second(NonZeroU32::new(5).unwrap());
/// let bucket = TokenBucket::with_clock(quota, clock.clone());
/// assert!(bucket.try_acquire(5).is_ok()); // the whole burst at once
/// let limited = bucket.try_acquire(1).unwrap_err();
/// assert_eq!(limited.retry_after, Duration::from_millis(200));
/// assert_eq!(bucket.try_acquire(6), Err(RateLimited::NEVER)); // more than the burst
/// clock.advance(Duration::from_secs(1));
/// assert!(bucket.try_acquire(5).is_ok()); // refilled, but never past the burst
/// assert!(bucket.try_acquire(1).is_err());
/// ```
pub struct TokenBucket<C: Clock = SystemClock> {
    state: State,
    /// `rate << 32 | burst`, for [`TokenBucket::quota`] only.
    quota: AtomicU64,
    clock: C,
}

/// The hot words, kept together on one cache line.
#[repr(align(64))]
struct State {
    tat: AtomicU64,
    /// Packed [`Gcra`] parameters.
    params: AtomicU64,
}

fn pack_quota(q: Quota) -> u64 {
    (u64::from(q.rate().get()) << 32) | u64::from(q.burst().get())
}

impl TokenBucket<SystemClock> {
    /// A full bucket on the system clock.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, SystemClock)
    }
}

impl<C: Clock> TokenBucket<C> {
    /// A full bucket reading time from `clock`.
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        let tat = now_nanos(&clock).min(MAX_TAT);
        Self {
            state: State {
                tat: AtomicU64::new(tat),
                params: AtomicU64::new(Gcra::from_quota(quota).pack()),
            },
            quota: AtomicU64::new(pack_quota(quota)),
            clock,
        }
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        let v = self.quota.load(Ordering::Acquire);
        let nz = |x: u32| std::num::NonZeroU32::new(x).unwrap_or(std::num::NonZeroU32::MIN);
        Quota::per_second(nz((v >> 32) as u32)).with_burst(nz(v as u32))
    }

    /// Changes the quota at runtime without letting a burst through.
    ///
    /// The permits available right now are preserved (converted to the new
    /// rate) and capped at the new burst: the change itself never makes
    /// more permits immediately available than before it. The bucket then
    /// refills at the new rate up to the new burst. Requests racing with
    /// the change spin for the few nanoseconds it takes.
    pub fn set_quota(&self, quota: Quota) {
        let _ = self.replace(quota, None);
    }

    /// Switches to `quota` with `carry` permits available (or, with `None`, the permits
    /// available now, converted to the new rate), capped at the new burst. Returns the whole
    /// permits that were available just before.
    pub(crate) fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        let new = Gcra::from_quota(quota);
        let tat = lock(&self.state.tat);
        let now = now_nanos(&self.clock).min(MAX_TAT);
        let old = Gcra::unpack(self.state.params.load(Ordering::Relaxed));
        let before = now.saturating_add(old.tau()).saturating_sub(tat.max(now));
        let available = match carry {
            Some(permits) => u64::from(permits).saturating_mul(new.interval),
            None => {
                let converted =
                    u128::from(before) * u128::from(new.interval) / u128::from(old.interval);
                u64::try_from(converted).unwrap_or(u64::MAX)
            }
        };
        let available = available.min(new.tau());
        let new_tat = (now.saturating_add(new.tau()) - available).min(MAX_TAT);
        self.state.params.store(new.pack(), Ordering::Relaxed);
        self.quota.store(pack_quota(quota), Ordering::Relaxed);
        self.state.tat.store(new_tat, Ordering::Release);
        u32::try_from(before / old.interval).unwrap_or(u32::MAX)
    }

    /// Whole permits available right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> u32 {
        let now = now_nanos(&self.clock);
        let tat = load_unlocked(&self.state.tat);
        let g = Gcra::unpack(self.state.params.load(Ordering::Acquire));
        let ns = now.saturating_add(g.tau()).saturating_sub(tat.max(now));
        u32::try_from(ns / g.interval).unwrap_or(u32::MAX)
    }

    /// Checks whether `n` permits are available without taking them.
    pub(crate) fn peek(&self, n: u32) -> Result<(), RateLimited> {
        if n == 0 {
            return Ok(());
        }
        let now = now_nanos(&self.clock);
        let tat = load_unlocked(&self.state.tat);
        let g = Gcra::unpack(self.state.params.load(Ordering::Acquire));
        if n > g.burst {
            return never();
        }
        g.check(tat, now, n).map(drop).map_err(|wait| RateLimited {
            retry_after: Duration::from_nanos(wait),
        })
    }

    /// Gives back `n` permits taken earlier by a successful acquire.
    pub(crate) fn refund(&self, n: u32) {
        let mut tat = self.state.tat.load(Ordering::Acquire);
        loop {
            if tat & LOCK != 0 {
                tat = load_unlocked(&self.state.tat);
            }
            let g = Gcra::unpack(self.state.params.load(Ordering::Acquire));
            match self.state.tat.compare_exchange_weak(
                tat,
                g.refund(tat, n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => tat = actual,
            }
        }
    }
}

impl<C: Clock> RateLimiter for TokenBucket<C> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        if n == 0 {
            return Ok(());
        }
        let now = now_nanos(&self.clock);
        let mut tat = self.state.tat.load(Ordering::Acquire);
        loop {
            if tat & LOCK != 0 {
                tat = load_unlocked(&self.state.tat);
            }
            let g = Gcra::unpack(self.state.params.load(Ordering::Acquire));
            if n > g.burst {
                return never();
            }
            match g.check(tat, now, n) {
                Ok(new_tat) => match self.state.tat.compare_exchange_weak(
                    tat,
                    new_tat.min(MAX_TAT),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(()),
                    Err(actual) => tat = actual,
                },
                Err(wait) => {
                    return Err(RateLimited {
                        retry_after: Duration::from_nanos(wait),
                    });
                }
            }
        }
    }
}

impl<C: Clock> fmt::Debug for TokenBucket<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("quota", &self.quota())
            .field(
                "tat_nanos",
                &(self.state.tat.load(Ordering::Relaxed) & !LOCK),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::num::NonZeroU32;
    use std::sync::Arc;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn bucket(rate: u32, burst: u32) -> (TokenBucket<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let q = Quota::per_second(nz(rate)).with_burst(nz(burst));
        (TokenBucket::with_clock(q, clock.clone()), clock)
    }

    fn drain(b: &TokenBucket<ManualClock>) -> u32 {
        let mut k = 0;
        while b.try_acquire(1).is_ok() {
            k += 1;
        }
        k
    }

    #[test]
    fn burst_then_refill() {
        let (b, clock) = bucket(10, 5);
        assert_eq!(drain(&b), 5);
        let err = b.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_millis(100));
        clock.advance(Duration::from_millis(99));
        assert!(b.try_acquire(1).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(b.try_acquire(1).is_ok());
        assert!(b.try_acquire(1).is_err());
        clock.advance(Duration::from_secs(10));
        assert_eq!(drain(&b), 5, "refill caps at the burst");
    }

    #[test]
    fn retry_after_is_exact_for_n() {
        let (b, clock) = bucket(10, 5);
        b.try_acquire(4).unwrap();
        let err = b.try_acquire(3).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_millis(200));
        clock.advance(err.retry_after - Duration::from_nanos(1));
        assert!(b.try_acquire(3).is_err());
        clock.advance(Duration::from_nanos(1));
        assert!(b.try_acquire(3).is_ok());
    }

    #[test]
    fn n_above_burst_never_succeeds_and_zero_is_free() {
        let (b, _clock) = bucket(10, 5);
        assert_eq!(b.try_acquire(6), Err(RateLimited::NEVER));
        assert_eq!(b.try_acquire(0), Ok(()));
        assert_eq!(drain(&b), 5);
        assert_eq!(b.try_acquire(0), Ok(()));
    }

    #[test]
    fn set_quota_raising_does_not_burst() {
        let (b, clock) = bucket(10, 10);
        assert_eq!(drain(&b), 10);
        b.set_quota(Quota::per_second(nz(100)));
        assert_eq!(b.quota(), Quota::per_second(nz(100)));
        assert!(b.try_acquire(1).is_err(), "empty bucket stays empty");
        clock.advance(Duration::from_millis(10));
        assert_eq!(drain(&b), 1, "refills at the new rate");

        // A full bucket keeps what it had, not the new larger burst.
        let (b, clock) = bucket(10, 10);
        b.set_quota(Quota::per_second(nz(100)).with_burst(nz(1000)));
        assert_eq!(drain(&b), 10);
        clock.advance(Duration::from_secs(10));
        assert_eq!(drain(&b), 1000);
    }

    #[test]
    fn set_quota_lowering_caps_at_new_burst() {
        let (b, clock) = bucket(100, 100);
        b.try_acquire(50).unwrap();
        b.set_quota(Quota::per_second(nz(10)).with_burst(nz(5)));
        assert_eq!(drain(&b), 5);
        let err = b.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_millis(100));
        clock.advance(Duration::from_millis(100));
        assert_eq!(drain(&b), 1);
    }

    #[test]
    fn set_quota_keeps_partial_budget() {
        let (b, _clock) = bucket(10, 10);
        b.try_acquire(6).unwrap(); // 4 left
        b.set_quota(Quota::per_second(nz(20)).with_burst(nz(20)));
        assert_eq!(drain(&b), 4);
    }

    #[test]
    fn threads_share_exactly_the_burst() {
        let (b, _clock) = bucket(1, 1000);
        let b = Arc::new(b);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || (0..1000).filter(|_| b.try_acquire(1).is_ok()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn available_and_carried_permits() {
        let (b, clock) = bucket(10, 5);
        assert_eq!(b.available(), 5);
        b.try_acquire(4).unwrap();
        assert_eq!(b.available(), 1);
        clock.advance(Duration::from_millis(150));
        assert_eq!(b.available(), 2, "whole permits only");
        let q = Quota::per_second(nz(100)).with_burst(nz(50));
        assert_eq!(b.replace(q, Some(3)), 2, "returns what was available");
        assert_eq!(b.available(), 3);
        b.replace(Quota::per_second(nz(100)).with_burst(nz(2)), Some(3));
        assert_eq!(b.available(), 2, "capped at the burst");
    }

    #[test]
    fn peek_and_refund() {
        let (b, _clock) = bucket(10, 2);
        assert!(b.peek(2).is_ok());
        b.try_acquire(2).unwrap();
        assert!(b.peek(1).is_err());
        b.refund(1);
        assert!(b.peek(1).is_ok());
        assert!(b.peek(2).is_err());
        assert_eq!(b.peek(3), Err(RateLimited::NEVER));
    }
}
