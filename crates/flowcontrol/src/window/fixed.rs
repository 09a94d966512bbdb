//! Fixed-window counter.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Packing, window_nanos};
use crate::clock::{Clock, SystemClock, now_nanos};
use crate::error::Error;
use crate::limiter::{RateLimited, RateLimiter, never};

/// Admits at most `limit` permits per window; windows are consecutive,
/// aligned on the limiter's creation time.
///
/// The state (window index and count) is one `AtomicU64` updated by
/// compare-and-swap: no lock, no allocation.
///
/// Like every fixed window it can admit up to `2·limit` around a window
/// boundary: over any interval of length `t` it admits at most
/// `limit · (ceil(t / window) + 1)`. Use [`SlidingWindow`](super::SlidingWindow)
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
    cell: Cell,
    packing: Packing,
    limit: u32,
    width: u64,
    origin: u64,
    clock: C,
}

#[repr(align(64))]
struct Cell(AtomicU64);

impl FixedWindow<SystemClock> {
    /// `limit` permits per `window` on the system clock.
    ///
    /// # Panics
    /// If `window` is zero; see [`FixedWindow::try_new`].
    pub fn new(limit: NonZeroU32, window: Duration) -> Self {
        Self::with_clock(limit, window, SystemClock)
    }

    /// Like [`FixedWindow::new`], but returns an error for a zero window.
    pub fn try_new(limit: NonZeroU32, window: Duration) -> Result<Self, Error> {
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
    pub fn try_with_clock(limit: NonZeroU32, window: Duration, clock: C) -> Result<Self, Error> {
        let width = window_nanos(window)?;
        let packing = Packing::for_limit(limit.get());
        Ok(Self {
            cell: Cell(AtomicU64::new(packing.pack(0, 0))),
            packing,
            limit: limit.get(),
            width,
            origin: now_nanos(&clock),
            clock,
        })
    }

    /// The most permits per window.
    pub fn limit(&self) -> NonZeroU32 {
        NonZeroU32::new(self.limit).unwrap_or(NonZeroU32::MIN)
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.width)
    }

    /// Decides a request; with `commit` takes the permits. Returns the
    /// window index the permits were (or would be) taken from.
    #[inline]
    pub(crate) fn decide(&self, n: u32, commit: bool) -> Result<u64, RateLimited> {
        let p = self.packing;
        let now = now_nanos(&self.clock).saturating_sub(self.origin);
        let mine = now / self.width;
        let mut cur = self.cell.0.load(Ordering::Acquire);
        loop {
            let cidx = p.resolve(cur, mine);
            let (idx, count) = if cidx >= mine {
                (cidx, p.count(cur))
            } else {
                (mine, 0)
            };
            if count + u64::from(n) > u64::from(self.limit) {
                let end = (idx + 1).saturating_mul(self.width);
                return Err(RateLimited {
                    retry_after: Duration::from_nanos(end.saturating_sub(now)),
                });
            }
            if !commit {
                return Ok(idx);
            }
            match self.cell.0.compare_exchange_weak(
                cur,
                p.pack(idx, count + u64::from(n)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(idx),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Checks for `n` permits without taking them.
    pub(crate) fn peek(&self, n: u32) -> Result<u64, RateLimited> {
        match n {
            0 => Ok(0),
            n if n > self.limit => Err(RateLimited::NEVER),
            n => self.decide(n, false),
        }
    }

    /// Takes `n` permits, returning the window they came from.
    pub(crate) fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        match n {
            0 => Ok(0),
            n if n > self.limit => Err(RateLimited::NEVER),
            n => self.decide(n, true),
        }
    }

    /// Gives back `n` permits taken from window `idx`, if that window is
    /// still the current one (otherwise they have expired anyway).
    pub(crate) fn refund(&self, n: u32, idx: u64) {
        let p = self.packing;
        let mut cur = self.cell.0.load(Ordering::Acquire);
        while p.same_bucket(cur, idx) && p.count(cur) >= u64::from(n) {
            let new = p.pack(idx, p.count(cur) - u64::from(n));
            match self
                .cell
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

impl<C: Clock> RateLimiter for FixedWindow<C> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        if n == 0 {
            return Ok(());
        }
        if n > self.limit {
            return never();
        }
        self.decide(n, true).map(drop)
    }
}

impl<C: Clock> fmt::Debug for FixedWindow<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedWindow")
            .field("limit", &self.limit)
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
            Error::ZeroDuration { name: "window" }
        );
    }

    #[test]
    fn refund_only_in_same_window() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(2), Duration::from_secs(1), clock.clone());
        let idx = w.commit(2).unwrap();
        assert!(w.peek(1).is_err());
        w.refund(1, idx);
        assert!(w.peek(1).is_ok());
        w.commit(1).unwrap();
        clock.advance(Duration::from_secs(1));
        w.refund(2, idx); // stale window: ignored
        assert!(w.commit(2).is_ok());
        assert!(w.peek(1).is_err());
    }

    #[test]
    fn large_limit_uses_full_count() {
        let clock = ManualClock::new();
        let w = FixedWindow::with_clock(nz(u32::MAX), Duration::from_secs(1), clock);
        assert!(w.try_acquire(u32::MAX).is_ok());
        assert!(w.try_acquire(1).is_err());
    }
}
