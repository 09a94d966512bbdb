//! Fixed-window counter.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use super::{Counter, Earlier, Params, Position, quota_width, window_nanos};
use crate::clock::{Clock, SystemClock, now_nanos};
use crate::error::ConfigError;
use crate::limiter::{Quota, RateLimited, RateLimiter};

/// Admits at most `limit` permits per window; windows are consecutive,
/// aligned on the limiter's creation time (or its last quota change).
///
/// The state (window index and count) is one `AtomicU64` updated by
/// compare-and-swap: no lock, no allocation.
///
/// Like every fixed window it can admit up to `2·limit` around a window
/// boundary: over any interval of length `t` it admits at most
/// `limit · (ceil(t / window) + 1)`. Use [`SlidingWindow`](crate::SlidingWindow)
/// or [`TokenBucket`](crate::TokenBucket) where that matters.
///
/// # Example
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use seckill_flowcontrol::{FixedWindow, ManualClock, RateLimiter};
///
/// let clock = ManualClock::new();
/// let three = NonZeroU32::new(3).unwrap();
/// let window = FixedWindow::with_clock(three, Duration::from_secs(1), clock.clone());
/// assert!(window.try_acquire(3).is_ok());
/// clock.advance(Duration::from_millis(400));
/// // Full until the window ends, 600 ms from now.
/// let limited = window.try_acquire(1).unwrap_err();
/// assert_eq!(limited.retry_after, Duration::from_millis(600));
/// clock.advance(limited.retry_after);
/// assert!(window.try_acquire(3).is_ok()); // a new window, a new count
/// ```
pub struct FixedWindow<C: Clock = SystemClock> {
    counter: Counter,
    clock: C,
}

/// A fixed window remembers nothing before the current window.
struct NoHistory;

impl Earlier for NoHistory {
    fn span(&self) -> u64 {
        0
    }

    #[inline]
    fn before(&self, _p: &Params, _at: &Position, _commit: bool) -> u64 {
        0
    }

    fn fits_from(&self, _p: &Params, at: &Position, _commit: bool, _n: u64) -> Option<u64> {
        Some(at.idx + 1)
    }

    fn restarted(&self, _p: &Params) {}
}

impl FixedWindow<SystemClock> {
    /// `limit` permits per `window` on the system clock.
    ///
    /// # Panics
    /// If `window` is zero; see [`FixedWindow::try_new`].
    pub fn new(limit: NonZeroU32, window: Duration) -> Self {
        Self::with_clock(limit, window, SystemClock)
    }

    /// Like [`FixedWindow::new`], but returns an error for a zero window.
    ///
    /// # Errors
    /// [`ConfigError::ZeroDuration`] for a zero `window`.
    pub fn try_new(limit: NonZeroU32, window: Duration) -> Result<Self, ConfigError> {
        Self::try_with_clock(limit, window, SystemClock)
    }
}

impl<C: Clock> FixedWindow<C> {
    /// `limit` permits per `window`, reading time from `clock`.
    ///
    /// # Panics
    /// If `window` is zero; see [`FixedWindow::try_with_clock`].
    pub fn with_clock(limit: NonZeroU32, window: Duration, clock: C) -> Self {
        match Self::try_with_clock(limit, window, clock) {
            Ok(w) => w,
            Err(e) => panic!("invalid FixedWindow: {e}"),
        }
    }

    /// Like [`FixedWindow::with_clock`], but returns an error for a zero window.
    ///
    /// # Errors
    /// [`ConfigError::ZeroDuration`] for a zero `window`.
    pub fn try_with_clock(
        limit: NonZeroU32,
        window: Duration,
        clock: C,
    ) -> Result<Self, ConfigError> {
        let width = window_nanos(window)?;
        Ok(Self::build(limit.get(), width, clock))
    }

    /// The window of `quota`: `burst` permits per `burst / rate` seconds, the same sustained
    /// rate and the same largest burst as a [`TokenBucket`](crate::TokenBucket) of `quota`.
    pub(crate) fn from_quota(quota: Quota, clock: C) -> Self {
        Self::build(quota.burst().get(), quota_width(quota, 1), clock)
    }

    fn build(limit: u32, width: u64, clock: C) -> Self {
        Self {
            counter: Counter::new(limit, width, now_nanos(&clock)),
            clock,
        }
    }

    /// The most permits per window.
    pub fn limit(&self) -> NonZeroU32 {
        NonZeroU32::new(self.counter.params().limit).unwrap_or(NonZeroU32::MIN)
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.counter.params().width)
    }

    /// Changes the limit to `quota`'s burst per window of `burst / rate` seconds (the
    /// sustained rate and the largest burst of a [`TokenBucket`](crate::TokenBucket) of
    /// `quota`), without letting a burst through.
    ///
    /// Like [`TokenBucket::set_quota`](crate::TokenBucket::set_quota), the change never makes
    /// more permits available than before it: the permits left in the current window are
    /// kept (capped at the new limit) and the permits spent stay counted, in a new window
    /// that starts at the change. Setting the quota already in force changes nothing.
    /// Requests racing with the change spin for the few nanoseconds it takes.
    pub fn set_quota(&self, quota: Quota) {
        let _ = self.replace(quota, None);
    }

    /// Switches to `quota` with `carry` permits available (or, with `None`, those available
    /// now), capped at the new limit; returns the permits available just before.
    pub(crate) fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        let now = now_nanos(&self.clock);
        let width = quota_width(quota, 1);
        self.counter
            .replace(&NoHistory, now, quota.burst().get(), width, carry)
    }

    /// Decides a request; with `commit` takes the permits. Returns the
    /// window index the permits were (or would be) taken from.
    #[inline]
    pub(crate) fn decide(&self, n: u32, commit: bool) -> Result<u64, RateLimited> {
        self.counter
            .decide(&NoHistory, now_nanos(&self.clock), n, commit)
    }

    /// Permits that could be taken right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> u32 {
        self.counter.available(&NoHistory, now_nanos(&self.clock))
    }

    /// Gives back `n` permits taken from window `idx`, if that window is
    /// still the current one (otherwise they have expired anyway).
    pub(crate) fn refund(&self, n: u32, idx: u64) {
        self.counter.refund(n, idx);
    }
}

impl<C: Clock> RateLimiter for FixedWindow<C> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        self.decide(n, true).map(drop)
    }
}

impl<C: Clock> fmt::Debug for FixedWindow<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedWindow")
            .field("limit", &self.limit())
            .field("window", &self.window())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn counts_per_window() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(3), Duration::from_secs(1), clock.clone());
        assert!(w.try_acquire(2).is_ok());
        assert!(w.try_acquire(1).is_ok());
        let err = w.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_secs(1));
        clock.advance(Duration::from_millis(999));
        assert_eq!(
            w.try_acquire(1).unwrap_err().retry_after,
            Duration::from_millis(1)
        );
        clock.advance(Duration::from_millis(1));
        assert!(w.try_acquire(3).is_ok());
        assert!(w.try_acquire(1).is_err());
        assert_eq!(w.try_acquire(4), Err(RateLimited::NEVER));
        assert_eq!(w.try_acquire(0), Ok(()));
        // Idle for many windows: a fresh window.
        clock.advance(Duration::from_secs(1000));
        assert!(w.try_acquire(3).is_ok());
    }

    #[test]
    fn zero_window_is_an_error() {
        assert_eq!(
            FixedWindow::try_new(nz(1), Duration::ZERO).unwrap_err(),
            ConfigError::ZeroDuration { name: "window" }
        );
    }

    #[test]
    fn refund_only_in_same_window() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(2), Duration::from_secs(1), clock.clone());
        let idx = w.decide(2, true).unwrap();
        assert!(w.decide(1, false).is_err());
        w.refund(1, idx);
        assert!(w.decide(1, false).is_ok());
        w.decide(1, true).unwrap();
        clock.advance(Duration::from_secs(1));
        w.refund(2, idx); // stale window: ignored
        assert!(w.decide(2, true).is_ok());
        assert!(w.decide(1, false).is_err());
    }

    #[test]
    fn large_limit_uses_full_count() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(u32::MAX), Duration::from_secs(1), clock);
        assert!(w.try_acquire(u32::MAX).is_ok());
        assert!(w.try_acquire(1).is_err());
    }

    #[test]
    fn from_quota_is_burst_per_burst_over_rate() {
        let clock = ManualClock::new();
        let q = Quota::per_second(nz(10)).with_burst(nz(5));
        let w = FixedWindow::from_quota(q, clock.clone());
        assert_eq!((w.limit(), w.window()), (nz(5), Duration::from_millis(500)));
        assert!(w.try_acquire(5).is_ok());
        assert_eq!(
            w.try_acquire(1).unwrap_err().retry_after,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn set_quota_keeps_the_spent_permits_counted() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(10), Duration::from_secs(1), clock.clone());
        w.try_acquire(6).unwrap(); // 4 left
        clock.advance(Duration::from_millis(300));
        // Raised: still only the 4 that were left, in a window starting now.
        w.set_quota(Quota::per_second(nz(100)).with_burst(nz(100)));
        assert_eq!((w.limit(), w.window()), (nz(100), Duration::from_secs(1)));
        assert!(w.try_acquire(5).is_err());
        assert!(w.try_acquire(4).is_ok());
        let err = w.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_secs(1));
        clock.advance(err.retry_after);
        assert!(
            w.try_acquire(100).is_ok(),
            "the next window has the new limit"
        );

        // Lowered below what is left: capped at the new limit.
        let w = FixedWindow::with_clock(nz(10), Duration::from_secs(1), clock.clone());
        w.try_acquire(2).unwrap();
        w.set_quota(Quota::per_second(nz(3)).with_burst(nz(3)));
        assert!(w.try_acquire(4).is_err());
        assert!(w.try_acquire(3).is_ok());
        assert!(w.try_acquire(1).is_err());
    }

    #[test]
    fn set_quota_with_the_same_quota_changes_nothing() {
        let clock = ManualClock::new();
        let q = Quota::per_second(nz(10)).with_burst(nz(10));
        let w = FixedWindow::from_quota(q, clock.clone());
        w.try_acquire(10).unwrap();
        clock.advance(Duration::from_millis(600));
        w.set_quota(q);
        // The window still ends where it did, 400 ms from now.
        assert_eq!(
            w.try_acquire(1).unwrap_err().retry_after,
            Duration::from_millis(400)
        );
    }

    #[test]
    fn refunds_of_a_replaced_window_are_ignored() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(4), Duration::from_secs(1), clock.clone());
        let idx = w.decide(4, true).unwrap();
        w.set_quota(Quota::per_second(nz(8)).with_burst(nz(8)));
        w.refund(4, idx);
        assert_eq!(w.available(), 0, "nothing was left before the change");
    }
}
