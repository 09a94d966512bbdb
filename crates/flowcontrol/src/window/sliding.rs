//! Sliding-window counter made of sub-buckets.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Packing, window_nanos};
use crate::clock::{Clock, SystemClock, now_nanos};
use crate::error::Error;
use crate::limiter::{RateLimited, RateLimiter, never};

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
    current: Cell,
    /// (sub-bucket, sum of the sub-buckets before it, clamped at `limit`).
    prev_cache: Cell,
    history: Box<[AtomicU64]>,
    packing: Packing,
    limit: u32,
    buckets: u64,
    width: u64,
    origin: u64,
    clock: C,
}

#[repr(align(64))]
struct Cell(AtomicU64);

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
    pub fn try_new(
        limit: NonZeroU32,
        window: Duration,
        buckets: NonZeroU32,
    ) -> Result<Self, Error> {
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
    pub fn try_with_clock(
        limit: NonZeroU32,
        window: Duration,
        buckets: NonZeroU32,
        clock: C,
    ) -> Result<Self, Error> {
        let window = window_nanos(window)?;
        let buckets = u64::from(buckets.get());
        let packing = Packing::for_limit(limit.get());
        let history = (0..=buckets)
            .map(|_| AtomicU64::new(packing.pack(0, 0)))
            .collect();
        Ok(Self {
            current: Cell(AtomicU64::new(packing.pack(0, 0))),
            prev_cache: Cell(AtomicU64::new(packing.pack(u64::MAX, 0))),
            history,
            packing,
            limit: limit.get(),
            buckets,
            width: window.div_ceil(buckets),
            origin: now_nanos(&clock),
            clock,
        })
    }

    /// The most permits in any window.
    pub fn limit(&self) -> NonZeroU32 {
        NonZeroU32::new(self.limit).unwrap_or(NonZeroU32::MIN)
    }

    /// The width of one sub-bucket.
    pub fn bucket_width(&self) -> Duration {
        Duration::from_nanos(self.width)
    }

    #[inline]
    fn slot(&self, idx: u64) -> &AtomicU64 {
        // The ring has buckets + 1 slots, so `idx % len` is in bounds.
        &self.history[(idx % (self.buckets + 1)) as usize]
    }

    /// The frozen count of finished bucket `idx` (0 if unknown).
    #[inline]
    fn frozen(&self, idx: u64) -> u64 {
        let v = self.slot(idx).load(Ordering::Acquire);
        if self.packing.same_bucket(v, idx) {
            self.packing.count(v)
        } else {
            0
        }
    }

    /// Freezes the final `count` of bucket `idx` before it stops being
    /// current. Never lowers a count and never overwrites a newer bucket.
    fn archive(&self, idx: u64, count: u64) {
        let p = self.packing;
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
    fn bucket_count(&self, k: u64, live: Option<(u64, u64)>) -> u64 {
        match live {
            Some((idx, count)) if idx == k => count,
            _ => self.frozen(k),
        }
    }

    /// Permits counted in the `buckets` sub-buckets before `idx`.
    fn history_sum(&self, idx: u64, live: Option<(u64, u64)>) -> u64 {
        (idx.saturating_sub(self.buckets)..idx)
            .map(|k| self.bucket_count(k, live))
            .sum()
    }

    /// Decides a request for `1..=limit` permits; with `commit` takes them.
    /// Returns the sub-bucket index the permits were (or would be) taken in.
    #[inline]
    pub(crate) fn decide(&self, n: u32, commit: bool) -> Result<u64, RateLimited> {
        let p = self.packing;
        let n = u64::from(n);
        let limit = u64::from(self.limit);
        let now = now_nanos(&self.clock).saturating_sub(self.origin);
        let mine = now / self.width;
        let mut cur = self.current.0.load(Ordering::Acquire);
        loop {
            let cidx = p.resolve(cur, mine);
            let (idx, count, prev, live) = if cidx >= mine {
                // The current sub-bucket is `cidx`: every earlier one is
                // frozen, so their sum is cached per sub-bucket (clamped at
                // the limit, which is all a decision needs).
                let cached = self.prev_cache.0.load(Ordering::Acquire);
                let prev = if p.same_bucket(cached, cidx) {
                    p.count(cached)
                } else {
                    let prev = self.history_sum(cidx, None).min(limit);
                    self.prev_cache
                        .0
                        .store(p.pack(cidx, prev), Ordering::Release);
                    prev
                };
                (cidx, p.count(cur), prev, None)
            } else if commit {
                self.archive(cidx, p.count(cur));
                (mine, 0, self.history_sum(mine, None), None)
            } else {
                // A peek does not archive: it reads the live count instead.
                let live = Some((cidx, p.count(cur)));
                (mine, 0, self.history_sum(mine, live), live)
            };
            if prev + count + n > limit {
                return Err(self.rejection(idx, count, n, now, live));
            }
            if !commit {
                return Ok(idx);
            }
            match self.current.0.compare_exchange_weak(
                cur,
                p.pack(idx, count + n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(idx),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The wait until enough old sub-buckets have slid out.
    #[cold]
    fn rejection(
        &self,
        idx: u64,
        count: u64,
        n: u64,
        now: u64,
        live: Option<(u64, u64)>,
    ) -> RateLimited {
        let limit = u64::from(self.limit);
        let mut used = self.history_sum(idx, live) + count;
        for j in 1..=self.buckets + 1 {
            let dropped = match (idx + j - 1).checked_sub(self.buckets) {
                Some(k) if k == idx => count,
                Some(k) => self.bucket_count(k, live),
                None => 0,
            };
            used = used.saturating_sub(dropped);
            if used + n <= limit {
                let at = (idx + j).saturating_mul(self.width);
                return RateLimited {
                    retry_after: Duration::from_nanos(at.saturating_sub(now)),
                };
            }
        }
        // Unreachable for n <= limit: everything has slid out by then.
        RateLimited::NEVER
    }

    /// Checks for `n` permits without taking them.
    pub(crate) fn peek(&self, n: u32) -> Result<u64, RateLimited> {
        match n {
            0 => Ok(0),
            n if n > self.limit => Err(RateLimited::NEVER),
            n => self.decide(n, false),
        }
    }

    /// Takes `n` permits, returning the sub-bucket they were counted in.
    pub(crate) fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        match n {
            0 => Ok(0),
            n if n > self.limit => Err(RateLimited::NEVER),
            n => self.decide(n, true),
        }
    }

    /// Gives back `n` permits counted in sub-bucket `idx` if it is still
    /// the current one (finished sub-buckets stay frozen: conservative).
    pub(crate) fn refund(&self, n: u32, idx: u64) {
        let p = self.packing;
        let mut cur = self.current.0.load(Ordering::Acquire);
        while p.same_bucket(cur, idx) && p.count(cur) >= u64::from(n) {
            let new = p.pack(idx, p.count(cur) - u64::from(n));
            match self.current.0.compare_exchange_weak(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

impl<C: Clock> RateLimiter for SlidingWindow<C> {
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

impl<C: Clock> fmt::Debug for SlidingWindow<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlidingWindow")
            .field("limit", &self.limit)
            .field("buckets", &self.buckets)
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
        assert!(w.peek(1).is_err());
        clock.advance(Duration::from_millis(1000));
        assert!(w.peek(2).is_ok());
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
}
