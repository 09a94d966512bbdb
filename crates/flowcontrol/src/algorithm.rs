//! [`Limiter`]: one rate limit from an [`Algorithm`] and a [`Quota`], both changeable at run
//! time without handing out a fresh burst.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;

use crate::chain::ChainLevel;
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::limiter::{Quota, RateLimited, RateLimiter};
use crate::token_bucket::TokenBucket;
use crate::window::{FixedWindow, SlidingWindow};

/// The sub-buckets of a [`Limiter`]'s sliding window.
const SLIDING_BUCKETS: NonZeroU32 = NonZeroU32::new(10).unwrap();

/// How a [`Limiter`] counts. Every algorithm reads a [`Quota`] the same way: `burst` permits
/// at once, `rate` permits per second sustained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Algorithm {
    /// A [`TokenBucket`]: exact, at most `rate·t + burst` over any interval `t`.
    TokenBucket,
    /// A [`SlidingWindow`] of 10 sub-buckets, each permit counted for `burst / rate` seconds:
    /// never more than `burst` in any interval of `10/11 · burst / rate`.
    SlidingWindow,
    /// A [`FixedWindow`] of `burst` permits per `burst / rate` seconds (up to `2·burst`
    /// around a window boundary).
    FixedWindow,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Self; 3] = [Self::TokenBucket, Self::SlidingWindow, Self::FixedWindow];

    const fn index(self) -> u8 {
        match self {
            Self::TokenBucket => 0,
            Self::SlidingWindow => 1,
            Self::FixedWindow => 2,
        }
    }

    /// The configuration name (`token_bucket`, `sliding_window`, `fixed_window`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TokenBucket => "token_bucket",
            Self::SlidingWindow => "sliding_window",
            Self::FixedWindow => "fixed_window",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a configuration name ([`Algorithm::as_str`]).
impl FromStr for Algorithm {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(ConfigError::Invalid {
                name: "algorithm",
                reason: "must be token_bucket, sliding_window or fixed_window",
            })
    }
}

/// A rate limit built from an [`Algorithm`] and a [`Quota`]; both can be changed in place
/// with [`set`](Self::set), through a shared reference, while requests go on.
///
/// The same quota means the same limit under every algorithm: the same largest burst at once
/// (`burst`) and the same sustained rate (`rate` per second); the windows count `burst`
/// permits per `burst / rate` seconds. The limiter holds one primitive of each algorithm and
/// an atomic saying which one decides, so [`try_acquire`](RateLimiter::try_acquire) is the
/// primitive's own lock-free path after one atomic load and one `match`. Only `set` takes a
/// (short) lock, to serialise changes.
///
/// # Example
/// ```
/// use std::num::NonZeroU32;
/// use seckill_flowcontrol::{Algorithm, Limiter, ManualClock, Quota, RateLimiter};
///
/// let nz = |v| NonZeroU32::new(v).unwrap();
/// let clock = ManualClock::new();
/// let quota = Quota::per_second(nz(100)).with_burst(nz(10));
/// let limiter = Limiter::with_clock(Algorithm::TokenBucket, quota, clock.clone());
/// assert!(limiter.try_acquire(8).is_ok()); // 2 left
/// // Another algorithm and a larger burst: still the 2 that were left, not a fresh burst.
/// limiter.set(Algorithm::SlidingWindow, quota.with_burst(nz(50)));
/// assert_eq!(limiter.algorithm(), Algorithm::SlidingWindow);
/// assert!(limiter.try_acquire(3).is_err());
/// assert!(limiter.try_acquire(2).is_ok());
/// ```
pub struct Limiter<C: Clock = SystemClock> {
    /// [`Algorithm::index`] of the primitive that decides.
    active: AtomicU8,
    token_bucket: TokenBucket<C>,
    sliding_window: SlidingWindow<C>,
    fixed_window: FixedWindow<C>,
    /// What is in force; held while it changes.
    settings: Mutex<(Algorithm, Quota)>,
}

/// What [`Limiter::set`] needs of each primitive: switch to a quota with `carry` permits
/// available (`None`: those available now), returning those available just before.
trait Primitive {
    fn replace(&self, quota: Quota, carry: Option<u32>) -> u32;
}

impl<C: Clock> Primitive for TokenBucket<C> {
    fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        TokenBucket::replace(self, quota, carry)
    }
}

impl<C: Clock> Primitive for SlidingWindow<C> {
    fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        SlidingWindow::replace(self, quota, carry)
    }
}

impl<C: Clock> Primitive for FixedWindow<C> {
    fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        FixedWindow::replace(self, quota, carry)
    }
}

impl Limiter<SystemClock> {
    /// `algorithm` over `quota`, full, on the system clock.
    pub fn new(algorithm: Algorithm, quota: Quota) -> Self {
        Self::with_clock(algorithm, quota, SystemClock)
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// `algorithm` over `quota`, full, reading time from `clock`.
    pub fn with_clock(algorithm: Algorithm, quota: Quota, clock: C) -> Self {
        Self {
            active: AtomicU8::new(algorithm.index()),
            token_bucket: TokenBucket::with_clock(quota, clock.clone()),
            sliding_window: SlidingWindow::from_quota(quota, SLIDING_BUCKETS, clock.clone()),
            fixed_window: FixedWindow::from_quota(quota, clock),
            settings: Mutex::new((algorithm, quota)),
        }
    }
}

impl<C: Clock> Limiter<C> {
    /// The algorithm in force.
    pub fn algorithm(&self) -> Algorithm {
        self.settings.lock().0
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.settings.lock().1
    }

    /// Changes the algorithm and the quota in place, never making more permits available
    /// than before the change.
    ///
    /// With the same algorithm this is the primitive's own `set_quota`
    /// ([`TokenBucket::set_quota`], [`SlidingWindow::set_quota`], [`FixedWindow::set_quota`]):
    /// the spent permits stay spent, and the same quota again changes nothing. With another
    /// algorithm, the new one starts with as many permits available as the old one had
    /// (capped at the new burst), the rest counted as taken at the change. The old one is
    /// emptied in the same step, so a request racing with the switch is counted once or
    /// refused, never admitted twice.
    pub fn set(&self, algorithm: Algorithm, quota: Quota) {
        let mut settings = self.settings.lock();
        let (old, old_quota) = *settings;
        if algorithm == old {
            let _ = self.primitive(algorithm).replace(quota, None);
        } else {
            let available = self.primitive(old).replace(old_quota, Some(0));
            let _ = self.primitive(algorithm).replace(quota, Some(available));
            self.active.store(algorithm.index(), Ordering::Release);
        }
        *settings = (algorithm, quota);
    }

    fn primitive(&self, algorithm: Algorithm) -> &dyn Primitive {
        match algorithm {
            Algorithm::TokenBucket => &self.token_bucket,
            Algorithm::SlidingWindow => &self.sliding_window,
            Algorithm::FixedWindow => &self.fixed_window,
        }
    }

    #[inline]
    fn active(&self) -> Algorithm {
        match self.active.load(Ordering::Acquire) {
            0 => Algorithm::TokenBucket,
            1 => Algorithm::SlidingWindow,
            _ => Algorithm::FixedWindow,
        }
    }
}

impl<C: Clock> RateLimiter for Limiter<C> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        match self.active() {
            Algorithm::TokenBucket => self.token_bucket.try_acquire(n),
            Algorithm::SlidingWindow => self.sliding_window.try_acquire(n),
            Algorithm::FixedWindow => self.fixed_window.try_acquire(n),
        }
    }
}

/// Tickets carry the algorithm that issued them in their two low bits, so a refund after a
/// switch is ignored rather than given to the wrong primitive.
impl<C: Clock> ChainLevel for Limiter<C> {
    fn peek(&self, n: u32) -> Result<(), RateLimited> {
        match self.active() {
            Algorithm::TokenBucket => self.token_bucket.peek(n),
            Algorithm::SlidingWindow => ChainLevel::peek(&self.sliding_window, n),
            Algorithm::FixedWindow => ChainLevel::peek(&self.fixed_window, n),
        }
    }

    fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        let algorithm = self.active();
        let ticket = match algorithm {
            Algorithm::TokenBucket => ChainLevel::commit(&self.token_bucket, n),
            Algorithm::SlidingWindow => ChainLevel::commit(&self.sliding_window, n),
            Algorithm::FixedWindow => ChainLevel::commit(&self.fixed_window, n),
        }?;
        Ok(ticket << 2 | u64::from(algorithm.index()))
    }

    fn refund(&self, n: u32, ticket: u64) {
        let algorithm = self.active();
        if ticket & 0b11 != u64::from(algorithm.index()) {
            return;
        }
        let ticket = ticket >> 2;
        match algorithm {
            Algorithm::TokenBucket => ChainLevel::refund(&self.token_bucket, n, ticket),
            Algorithm::SlidingWindow => ChainLevel::refund(&self.sliding_window, n, ticket),
            Algorithm::FixedWindow => ChainLevel::refund(&self.fixed_window, n, ticket),
        }
    }
}

impl<C: Clock> fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (algorithm, quota) = *self.settings.lock();
        f.debug_struct("Limiter")
            .field("algorithm", &algorithm)
            .field("quota", &quota)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::check_chain;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn drain(l: &impl RateLimiter) -> u32 {
        let mut k = 0;
        while l.try_acquire(1).is_ok() {
            k += 1;
        }
        k
    }

    fn limiter(algorithm: Algorithm, quota: Quota) -> (Limiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (Limiter::with_clock(algorithm, quota, clock.clone()), clock)
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Limiter>();
        check::<Limiter<ManualClock>>();
    }

    #[test]
    fn names_and_accessors() {
        let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.to_string()).collect();
        assert_eq!(names, ["token_bucket", "sliding_window", "fixed_window"]);
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        let err = "leaky_bucket".parse::<Algorithm>().unwrap_err();
        assert_eq!(err.name(), "algorithm");
        let q = Quota::per_second(nz(5));
        let (l, _clock) = limiter(Algorithm::FixedWindow, q);
        assert_eq!((l.algorithm(), l.quota()), (Algorithm::FixedWindow, q));
        let q2 = q.with_burst(nz(9));
        l.set(Algorithm::TokenBucket, q2);
        assert_eq!((l.algorithm(), l.quota()), (Algorithm::TokenBucket, q2));
        assert!(format!("{l:?}").contains("TokenBucket"));
    }

    #[test]
    fn every_algorithm_admits_the_same_burst_at_once() {
        let q = Quota::per_second(nz(100)).with_burst(nz(20));
        for a in Algorithm::ALL {
            let (l, _clock) = limiter(a, q);
            assert_eq!(drain(&l), 20, "{a}");
            assert_eq!(l.try_acquire(21), Err(RateLimited::NEVER), "{a}");
            assert_eq!(l.try_acquire(0), Ok(()), "{a}");
        }
    }

    #[test]
    fn every_algorithm_sustains_the_same_rate() {
        // A client taking every permit it can, every millisecond for 100 s: rate·t + burst
        // under each algorithm, within 1%.
        let q = Quota::per_second(nz(100)).with_burst(nz(20));
        let expected = 100.0 * 100.0 + 20.0;
        for a in Algorithm::ALL {
            let (l, clock) = limiter(a, q);
            let mut admitted = 0u32;
            for _ in 0..=100_000 {
                admitted += drain(&l);
                clock.advance(Duration::from_millis(1));
            }
            let off = (f64::from(admitted) - expected).abs() / expected;
            assert!(off < 0.01, "{a}: {admitted} admitted, {expected} expected");
        }
    }

    #[test]
    fn setting_the_same_quota_after_the_burst_hands_out_nothing() {
        let q = Quota::per_second(nz(10)).with_burst(nz(10));
        for a in Algorithm::ALL {
            for b in Algorithm::ALL {
                let (l, _clock) = limiter(a, q);
                assert_eq!(drain(&l), 10);
                l.set(b, q);
                assert!(l.try_acquire(1).is_err(), "{a} then {b}: a fresh burst");
            }
        }
    }

    #[test]
    fn a_new_quota_keeps_what_is_left() {
        let q = Quota::per_second(nz(100)).with_burst(nz(20));
        let larger = Quota::per_second(nz(100)).with_burst(nz(40));
        let smaller = Quota::per_second(nz(100)).with_burst(nz(3));
        for a in Algorithm::ALL {
            for b in Algorithm::ALL {
                let (l, _clock) = limiter(a, q);
                l.try_acquire(15).unwrap(); // 5 left
                l.set(b, larger);
                assert_eq!(drain(&l), 5, "{a} then {b}, raised");

                let (l, _clock) = limiter(a, q);
                l.try_acquire(15).unwrap();
                l.set(b, smaller);
                assert_eq!(drain(&l), 3, "{a} then {b}, lowered");
            }
        }
    }

    #[test]
    fn after_a_switch_the_new_algorithm_refills_at_the_new_rate() {
        let q = Quota::per_second(nz(10)).with_burst(nz(10));
        let (l, clock) = limiter(Algorithm::TokenBucket, q);
        assert_eq!(drain(&l), 10);
        l.set(Algorithm::FixedWindow, q);
        clock.advance(Duration::from_millis(999));
        assert!(
            l.try_acquire(1).is_err(),
            "the window of the change still counts"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(drain(&l), 10);
        l.set(Algorithm::SlidingWindow, q);
        assert!(l.try_acquire(1).is_err());
        // Counted for one window (11 sub-buckets of ceil(1 s / 11)) from the change.
        clock.advance(Duration::from_millis(1001));
        assert_eq!(drain(&l), 10);
    }

    #[test]
    fn chains_refund_only_the_algorithm_that_took() {
        let q = Quota::per_second(nz(10)).with_burst(nz(4));
        for a in Algorithm::ALL {
            let (l, _clock) = limiter(a, q);
            // A later level that refuses: the limiter keeps nothing.
            let refuse = Limiter::with_clock(a, q, ManualClock::new());
            refuse.try_acquire(4).unwrap();
            assert!(check_chain(&[&l, &refuse], 2).is_err());
            assert_eq!(drain(&l), 4, "{a}: refunded");

            let (l, _clock) = limiter(a, q);
            let ticket = l.commit(2).unwrap();
            l.refund(2, ticket);
            assert!(l.peek(4).is_ok(), "{a}: refunded");
            let ticket = l.commit(2).unwrap();
            let other = Algorithm::ALL[(usize::from(a.index()) + 1) % 3];
            l.set(other, q); // 2 left, carried
            l.refund(2, ticket); // issued by the old algorithm: ignored
            assert_eq!(drain(&l), 2, "{a} then {other}");
        }
    }

    #[test]
    fn concurrent_sets_never_add_permits() {
        let q = Quota::per_second(nz(1)).with_burst(nz(1000));
        let l = std::sync::Arc::new(Limiter::with_clock(
            Algorithm::TokenBucket,
            q,
            ManualClock::new(),
        ));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || (0..3000).filter(|_| l.try_acquire(1).is_ok()).count())
            })
            .collect();
        for i in 0..300 {
            let burst = if i % 2 == 0 { 500 } else { 2000 };
            l.set(Algorithm::ALL[i % 3], q.with_burst(nz(burst)));
        }
        let total: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
        // The clock is frozen: whatever the switches, no more than the first burst.
        assert!(total <= 1000, "{total}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_names() {
        for a in Algorithm::ALL {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
        }
        assert!(serde_json::from_str::<Algorithm>("\"leaky_bucket\"").is_err());
    }
}
