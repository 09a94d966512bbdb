//! Sliding-window counter made of sub-buckets.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Counter, Earlier, Packing, Params, Position, quota_width, window_nanos};
use crate::clock::{Clock, SystemClock, now_nanos};
use crate::error::ConfigError;
use crate::limiter::{Quota, RateLimited, RateLimiter};

/// A rolling counter over `buckets` sub-buckets that never admits more than
/// `limit` permits in any interval of length `window`.
///
/// Time is cut into sub-buckets of `ceil(window / buckets)`. A request is
/// admitted when the current sub-bucket plus the `buckets` before it
/// (which together cover every interval of length `window` ending now)
/// hold fewer than `limit - n` permits. Counting whole sub-buckets is
/// conservative: a permit is forgotten between `window` and
/// `window + window / buckets` after it was taken, never sooner.
///
/// The current sub-bucket is one `AtomicU64` (index and count) updated by
/// compare-and-swap; finished sub-buckets are frozen into a ring of
/// `buckets + 1` atomics before the current one moves on, so the check is
/// exact under concurrency. Their sum is cached once per sub-bucket, so a
/// check usually reads two atomics. No lock, no allocation after
/// construction.
///
/// # Example
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use seckill_flowcontrol::{ManualClock, RateLimiter, SlidingWindow};
///
/// let nz = |v| NonZeroU32::new(v).unwrap();
/// let clock = ManualClock::new();
/// // At most 4 permits in any second, counted in 4 sub-buckets of 250 ms.
/// let window = SlidingWindow::with_clock(nz(4), Duration::from_secs(1), nz(4), clock.clone());
/// assert!(window.try_acquire(4).is_ok());
/// // A fixed window would start afresh after one second; this one still
/// // counts the 4 permits until their sub-bucket slides out.
/// clock.advance(Duration::from_secs(1));
/// let limited = window.try_acquire(1).unwrap_err();
/// assert_eq!(limited.retry_after, Duration::from_millis(250));
/// clock.advance(limited.retry_after);
/// assert!(window.try_acquire(4).is_ok());
/// ```
pub struct SlidingWindow<C: Clock = SystemClock> {
    counter: Counter,
    ring: Ring,
    clock: C,
}

/// The finished sub-buckets.
struct Ring {
    /// (sub-bucket, sum of the sub-buckets before it, clamped at `limit`).
    prev_cache: Cached,
    /// `buckets + 1` frozen (sub-bucket, count) pairs.
    history: Box<[AtomicU64]>,
    buckets: u64,
}

#[repr(align(64))]
struct Cached(AtomicU64);

impl Ring {
    fn new(buckets: u64, p: Packing) -> Self {
        Self {
            prev_cache: Cached(AtomicU64::new(p.pack(u64::MAX, 0))),
            history: (0..=buckets)
                .map(|_| AtomicU64::new(p.pack(0, 0)))
                .collect(),
            buckets,
        }
    }

    #[inline]
    fn slot(&self, idx: u64) -> &AtomicU64 {
        // The ring has buckets + 1 slots, so `idx % len` is in bounds.
        &self.history[(idx % (self.buckets + 1)) as usize]
    }

    /// The frozen count of finished bucket `idx` (0 if unknown).
    #[inline]
    fn frozen(&self, p: Packing, idx: u64) -> u64 {
        let v = self.slot(idx).load(Ordering::Acquire);
        if p.same_bucket(v, idx) { p.count(v) } else { 0 }
    }

    /// Freezes the final `count` of bucket `idx` before it stops being
    /// current. Never lowers a count and never overwrites a newer bucket.
    fn archive(&self, p: Packing, idx: u64, count: u64) {
        let slot = self.slot(idx);
        let mut v = slot.load(Ordering::Acquire);
        loop {
            if p.same_bucket(v, idx) {
                if p.count(v) >= count {
                    return;
                }
            } else if p.resolve(v, idx) > idx {
                return;
            }
            match slot.compare_exchange_weak(
                v,
                p.pack(idx, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => v = actual,
            }
        }
    }

    /// The count of bucket `k`: the live count for the one bucket a peek
    /// sees unarchived, else its frozen count.
    #[inline]
    fn bucket_count(&self, p: Packing, k: u64, live: Option<(u64, u64)>) -> u64 {
        match live {
            Some((idx, count)) if idx == k => count,
            _ => self.frozen(p, k),
        }
    }

    /// Permits counted in the `buckets` sub-buckets before `idx`.
    fn history_sum(&self, p: Packing, idx: u64, live: Option<(u64, u64)>) -> u64 {
        (idx.saturating_sub(self.buckets)..idx)
            .map(|k| self.bucket_count(p, k, live))
            .sum()
    }
}

impl Earlier for Ring {
    fn span(&self) -> u64 {
        self.buckets
    }

    #[inline]
    fn before(&self, p: &Params, at: &Position, commit: bool) -> u64 {
        let pk = p.packing;
        match at.rolled {
            None => {
                // The current sub-bucket is `at.idx`: every earlier one is frozen, so their
                // sum is cached per sub-bucket (clamped at the limit, which is all a decision
                // needs).
                let cached = self.prev_cache.0.load(Ordering::Acquire);
                if pk.same_bucket(cached, at.idx) {
                    pk.count(cached)
                } else {
                    let prev = self.history_sum(pk, at.idx, None).min(u64::from(p.limit));
                    self.prev_cache
                        .0
                        .store(pk.pack(at.idx, prev), Ordering::Release);
                    prev
                }
            }
            Some((cidx, count)) if commit => {
                self.archive(pk, cidx, count);
                self.history_sum(pk, at.idx, None)
            }
            // A peek does not archive: it reads the live count instead.
            live => self.history_sum(pk, at.idx, live),
        }
    }

    /// The first sub-bucket by which enough old sub-buckets have slid out.
    #[cold]
    fn fits_from(&self, p: &Params, at: &Position, commit: bool, n: u64) -> Option<u64> {
        let pk = p.packing;
        let live = if commit { None } else { at.rolled };
        let (idx, count) = (at.idx, at.count);
        let mut used = self.history_sum(pk, idx, live) + count;
        for j in 1..=self.buckets + 1 {
            let dropped = match (idx + j - 1).checked_sub(self.buckets) {
                Some(k) if k == idx => count,
                Some(k) => self.bucket_count(pk, k, live),
                None => 0,
            };
            used = used.saturating_sub(dropped);
            if used + n <= u64::from(p.limit) {
                return Some(idx + j);
            }
        }
        // Unreachable for n <= limit: everything has slid out by then.
        None
    }

    fn restarted(&self, p: &Params) {
        self.prev_cache
            .0
            .store(p.packing.pack(u64::MAX, 0), Ordering::Release);
    }
}

impl SlidingWindow<SystemClock> {
    /// `limit` permits per rolling `window` of `buckets` sub-buckets, on the
    /// system clock.
    ///
    /// # Panics
    /// If `window` is zero; see [`SlidingWindow::try_new`].
    pub fn new(limit: NonZeroU32, window: Duration, buckets: NonZeroU32) -> Self {
        Self::with_clock(limit, window, buckets, SystemClock)
    }

    /// Like [`SlidingWindow::new`], but returns an error for a zero window.
    ///
    /// # Errors
    /// [`ConfigError::ZeroDuration`] for a zero `window`.
    pub fn try_new(
        limit: NonZeroU32,
        window: Duration,
        buckets: NonZeroU32,
    ) -> Result<Self, ConfigError> {
        Self::try_with_clock(limit, window, buckets, SystemClock)
    }
}

impl<C: Clock> SlidingWindow<C> {
    /// `limit` permits per rolling `window` of `buckets` sub-buckets,
    /// reading time from `clock`.
    ///
    /// # Panics
    /// If `window` is zero; see [`SlidingWindow::try_with_clock`].
    pub fn with_clock(limit: NonZeroU32, window: Duration, buckets: NonZeroU32, clock: C) -> Self {
        match Self::try_with_clock(limit, window, buckets, clock) {
            Ok(w) => w,
            Err(e) => panic!("invalid SlidingWindow: {e}"),
        }
    }

    /// Like [`SlidingWindow::with_clock`], but returns an error for a zero
    /// window.
    ///
    /// # Errors
    /// [`ConfigError::ZeroDuration`] for a zero `window`.
    pub fn try_with_clock(
        limit: NonZeroU32,
        window: Duration,
        buckets: NonZeroU32,
        clock: C,
    ) -> Result<Self, ConfigError> {
        let window = window_nanos(window)?;
        let buckets = u64::from(buckets.get());
        Ok(Self::build(
            limit.get(),
            window.div_ceil(buckets),
            buckets,
            clock,
        ))
    }

    /// The window of `quota` in `buckets` sub-buckets: `burst` permits, each remembered for
    /// `burst / rate` seconds (sub-buckets of `burst / rate / (buckets + 1)`, since a permit
    /// counts in its own sub-bucket and the `buckets` after it). The same sustained rate and
    /// the same largest burst as a [`TokenBucket`](crate::TokenBucket) of `quota`.
    pub(crate) fn from_quota(quota: Quota, buckets: NonZeroU32, clock: C) -> Self {
        let buckets = u64::from(buckets.get());
        let width = quota_width(quota, buckets + 1);
        Self::build(quota.burst().get(), width, buckets, clock)
    }

    fn build(limit: u32, width: u64, buckets: u64, clock: C) -> Self {
        let counter = Counter::new(limit, width, now_nanos(&clock));
        Self {
            ring: Ring::new(buckets, counter.params().packing),
            counter,
            clock,
        }
    }

    /// The most permits in any window.
    pub fn limit(&self) -> NonZeroU32 {
        NonZeroU32::new(self.counter.params().limit).unwrap_or(NonZeroU32::MIN)
    }

    /// The width of one sub-bucket.
    pub fn bucket_width(&self) -> Duration {
        Duration::from_nanos(self.counter.params().width)
    }

    /// Changes the limit to `quota`'s burst, each permit remembered for `burst / rate`
    /// seconds over the same number of sub-buckets (the sustained rate and the largest burst
    /// of a [`TokenBucket`](crate::TokenBucket) of `quota`), without letting a burst through.
    ///
    /// Like [`TokenBucket::set_quota`](crate::TokenBucket::set_quota), the change never makes
    /// more permits available than before it: the permits available in the window are kept
    /// (capped at the new limit) and the permits spent stay counted, as if taken at the
    /// change, until they slide out of the new window. Setting the quota already in force
    /// changes nothing. Requests racing with the change spin for the few nanoseconds it
    /// takes.
    pub fn set_quota(&self, quota: Quota) {
        let _ = self.replace(quota, None);
    }

    /// Switches to `quota` with `carry` permits available (or, with `None`, those available
    /// now), capped at the new limit; returns the permits available just before.
    pub(crate) fn replace(&self, quota: Quota, carry: Option<u32>) -> u32 {
        let now = now_nanos(&self.clock);
        let width = quota_width(quota, self.ring.buckets + 1);
        self.counter
            .replace(&self.ring, now, quota.burst().get(), width, carry)
    }

    /// Decides a request; with `commit` takes the permits. Returns the sub-bucket index the
    /// permits were (or would be) taken in.
    #[inline]
    pub(crate) fn decide(&self, n: u32, commit: bool) -> Result<u64, RateLimited> {
        self.counter
            .decide(&self.ring, now_nanos(&self.clock), n, commit)
    }

    /// Permits that could be taken right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> u32 {
        self.counter.available(&self.ring, now_nanos(&self.clock))
    }

    /// Gives back `n` permits counted in sub-bucket `idx` if it is still
    /// the current one (finished sub-buckets stay frozen: conservative).
    pub(crate) fn refund(&self, n: u32, idx: u64) {
        self.counter.refund(n, idx);
    }
}

impl<C: Clock> RateLimiter for SlidingWindow<C> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        self.decide(n, true).map(drop)
    }
}

impl<C: Clock> fmt::Debug for SlidingWindow<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlidingWindow")
            .field("limit", &self.limit())
            .field("buckets", &self.ring.buckets)
            .field("bucket_width", &self.bucket_width())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn window(limit: u32, buckets: u32) -> (SlidingWindow<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let w = SlidingWindow::with_clock(
            nz(limit),
            Duration::from_secs(1),
            nz(buckets),
            clock.clone(),
        );
        (w, clock)
    }

    #[test]
    fn slides_bucket_by_bucket() {
        let (w, clock) = window(10, 10); // 100 ms sub-buckets
        w.try_acquire(4).unwrap(); // bucket 0
        clock.advance(Duration::from_millis(500));
        w.try_acquire(6).unwrap(); // bucket 5
        let err = w.try_acquire(1).unwrap_err();
        // Bucket 0 is forgotten once the window is buckets 1..=11: at 1.1 s.
        assert_eq!(err.retry_after, Duration::from_millis(600));
        clock.advance(Duration::from_millis(599));
        assert!(w.try_acquire(1).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(w.try_acquire(4).is_ok());
        assert!(w.try_acquire(1).is_err());
    }

    #[test]
    fn never_more_than_limit_in_any_window() {
        let (w, clock) = window(5, 2); // 500 ms sub-buckets
        let mut admitted = Vec::new();
        for step in 0..200u64 {
            if w.try_acquire(1).is_ok() {
                admitted.push(step * 37);
            }
            clock.advance(Duration::from_millis(37));
        }
        for (i, &t) in admitted.iter().enumerate() {
            let inside = admitted[i..].iter().take_while(|&&u| u < t + 1000).count();
            assert!(inside <= 5, "{inside} admitted in [{t}, {t}+1000)");
        }
        assert!(admitted.len() > 20);
    }

    #[test]
    fn limits_and_zero() {
        let (w, _clock) = window(3, 3);
        assert_eq!(w.try_acquire(4), Err(RateLimited::NEVER));
        assert_eq!(w.try_acquire(0), Ok(()));
        assert!(w.try_acquire(3).is_ok());
        assert!(w.try_acquire(1).is_err());
        assert_eq!(w.bucket_width(), Duration::from_nanos(333_333_334));
    }

    #[test]
    fn peek_sees_unarchived_bucket() {
        let (w, clock) = window(2, 2);
        w.try_acquire(2).unwrap();
        clock.advance(Duration::from_millis(500)); // next bucket, not yet archived
        assert!(w.decide(1, false).is_err());
        assert_eq!(w.available(), 0);
        clock.advance(Duration::from_millis(1000));
        assert!(w.decide(2, false).is_ok());
        assert_eq!(w.available(), 2);
    }

    #[test]
    fn threads_share_exactly_the_limit() {
        let (w, _clock) = window(1000, 4);
        let w = Arc::new(w);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || (0..1000).filter(|_| w.try_acquire(1).is_ok()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn from_quota_remembers_a_permit_for_burst_over_rate() {
        let clock = ManualClock::new();
        // 10/s, burst 5: each permit counts for 500 ms, in 11 sub-buckets of 500/11 ms.
        let q = Quota::per_second(nz(10)).with_burst(nz(5));
        let w = SlidingWindow::from_quota(q, nz(10), clock.clone());
        assert_eq!(w.limit(), nz(5));
        assert_eq!(w.bucket_width(), Duration::from_nanos(45_454_546));
        assert!(w.try_acquire(5).is_ok());
        let err = w.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_nanos(11 * 45_454_546));
    }

    #[test]
    fn set_quota_keeps_what_was_spent_in_the_window() {
        let (w, clock) = window(10, 10); // 100 ms sub-buckets
        w.try_acquire(3).unwrap();
        clock.advance(Duration::from_millis(250));
        w.try_acquire(3).unwrap(); // 4 left
        // Raised: the 4 that were left, no more.
        let q = Quota::per_second(nz(100)).with_burst(nz(100)); // 1 s, 11 sub-buckets
        w.set_quota(q);
        assert_eq!(w.limit(), nz(100));
        assert_eq!(w.available(), 4);
        assert!(w.try_acquire(5).is_err());
        assert!(w.try_acquire(4).is_ok());
        // The spent ones slide out one window after the change.
        let err = w.try_acquire(1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_nanos(11 * 90_909_091));
        clock.advance(err.retry_after);
        assert!(w.try_acquire(100).is_ok());
        // The quota in force again: nothing changes.
        w.set_quota(q);
        assert!(w.try_acquire(1).is_err());
    }

    #[test]
    fn set_quota_races_admit_no_more_than_either_limit() {
        // Threads acquire while another lowers and raises the limit: every permit is
        // counted, so over the (frozen) window no more than the largest limit and what was
        // left at each change is admitted.
        let (w, _clock) = window(1000, 4);
        let w = Arc::new(w);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || (0..5000).filter(|_| w.try_acquire(1).is_ok()).count())
            })
            .collect();
        for i in 0..200u32 {
            let burst = if i % 2 == 0 { 500 } else { 2000 };
            w.set_quota(Quota::per_second(nz(1)).with_burst(nz(burst)));
        }
        let total: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(
            total <= 1000,
            "{total} admitted, 1000 available at the start"
        );
    }
}
