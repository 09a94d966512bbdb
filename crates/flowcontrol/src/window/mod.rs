//! Window counters: [`FixedWindow`] and [`SlidingWindow`], over one shared [`Counter`].
//!
//! Both keep the current window's (or sub-bucket's) index and count packed in one
//! `AtomicU64`, the *cell*. The count takes as many bits as the limit needs; the index keeps
//! the rest (at least 31 bits) as a wrapping tag; the top bit locks the cell while
//! `set_quota` swaps the parameters.

mod fixed;
mod sliding;

pub use fixed::FixedWindow;
pub use sliding::SlidingWindow;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::error::ConfigError;
use crate::limiter::{Gcra, Quota, RateLimited};
use crate::spin::{LOCK, load_unlocked, lock};

/// How a (bucket index, count) pair is packed into the 63 bits below [`LOCK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packing {
    count_bits: u32,
    count_mask: u64,
    tag_mask: u64,
}

impl Packing {
    /// A packing whose count field holds `0..=limit`.
    pub(crate) const fn for_limit(limit: u32) -> Self {
        Self::with_bits(32 - limit.leading_zeros())
    }

    const fn with_bits(count_bits: u32) -> Self {
        Self {
            count_bits,
            count_mask: (1u64 << count_bits) - 1,
            tag_mask: (!LOCK) >> count_bits,
        }
    }

    /// The packing that holds both this one's counts and `0..=limit`. Count fields only
    /// grow: a value packed under an earlier packing then reads as an older bucket (see
    /// [`Counter::replace`]).
    const fn widened(self, limit: u32) -> Self {
        let bits = 32 - limit.leading_zeros();
        if bits > self.count_bits {
            Self::with_bits(bits)
        } else {
            self
        }
    }

    #[inline]
    pub(crate) const fn pack(self, idx: u64, count: u64) -> u64 {
        ((idx & self.tag_mask) << self.count_bits) | count
    }

    #[inline]
    pub(crate) const fn count(self, v: u64) -> u64 {
        v & self.count_mask
    }

    #[inline]
    pub(crate) const fn tag(self, v: u64) -> u64 {
        (v & !LOCK) >> self.count_bits
    }

    #[inline]
    pub(crate) const fn same_bucket(self, v: u64, idx: u64) -> bool {
        self.tag(v) == idx & self.tag_mask
    }

    /// The full bucket index of the tag stored in `v`, taken as the index
    /// nearest to `near` (tags wrap; live indices are never more than half
    /// the tag space apart).
    #[inline]
    pub(crate) const fn resolve(self, v: u64, near: u64) -> u64 {
        let d = self.tag(v).wrapping_sub(near) & self.tag_mask;
        if d <= self.tag_mask >> 1 {
            near.saturating_add(d)
        } else {
            near.saturating_sub((self.tag_mask - d) + 1)
        }
    }
}

/// The parameters in force, as read together after an unlocked cell.
///
/// Bucket `base` starts at clock time `origin`; bucket `base + k` at `origin + k·width`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) packing: Packing,
    pub(crate) limit: u32,
    pub(crate) width: u64,
    origin: u64,
    base: u64,
}

impl Params {
    /// The bucket `now` falls in.
    #[inline]
    fn index(&self, now: u64) -> u64 {
        self.base + now.saturating_sub(self.origin) / self.width
    }

    /// The clock time at which bucket `idx` starts.
    #[inline]
    fn start(&self, idx: u64) -> u64 {
        (idx.saturating_sub(self.base))
            .saturating_mul(self.width)
            .saturating_add(self.origin)
    }
}

/// Where a decision stands: the current bucket and its count, and the bucket the cell still
/// holds when time has moved past it (`rolled`, with its count).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    pub(crate) idx: u64,
    pub(crate) count: u64,
    pub(crate) rolled: Option<(u64, u64)>,
}

/// What a window remembers before the current bucket: nothing for a fixed window, the
/// finished sub-buckets for a sliding one.
pub(crate) trait Earlier {
    /// Finished buckets counted with the current one (0 for a fixed window).
    fn span(&self) -> u64;

    /// Permits counted in the buckets before `at.idx` (at most what the decision needs). With
    /// `commit`, a rolled bucket is frozen before the cell moves on.
    fn before(&self, p: &Params, at: &Position, commit: bool) -> u64;

    /// The first bucket from whose start `n` more permits fit (`None`: never).
    fn fits_from(&self, p: &Params, at: &Position, commit: bool, n: u64) -> Option<u64>;

    /// The parameters changed to `p`; forget any cached sums.
    fn restarted(&self, p: &Params);
}

/// The current window (or sub-bucket) of a window counter: the cell and the parameters, on
/// one cache line. Lock-free: decisions are a compare-and-swap loop on the cell.
#[repr(align(64))]
pub(crate) struct Counter {
    cell: AtomicU64,
    /// `limit | count_bits << 32`.
    shape: AtomicU64,
    width: AtomicU64,
    origin: AtomicU64,
    base: AtomicU64,
}

impl Counter {
    /// `limit` permits per bucket of `width` nanoseconds, bucket 0 starting at `now`.
    pub(crate) fn new(limit: u32, width: u64, now: u64) -> Self {
        let packing = Packing::for_limit(limit);
        Self {
            cell: AtomicU64::new(packing.pack(0, 0)),
            shape: AtomicU64::new(u64::from(limit) | u64::from(packing.count_bits) << 32),
            width: AtomicU64::new(width.max(1)),
            origin: AtomicU64::new(now),
            base: AtomicU64::new(0),
        }
    }

    /// The parameters. Consistent with a cell value loaded (Acquire) just before, unlocked.
    #[inline]
    pub(crate) fn params(&self) -> Params {
        let shape = self.shape.load(Ordering::Relaxed);
        Params {
            packing: Packing::with_bits((shape >> 32) as u32),
            limit: shape as u32,
            width: self.width.load(Ordering::Relaxed),
            origin: self.origin.load(Ordering::Relaxed),
            base: self.base.load(Ordering::Relaxed),
        }
    }

    /// An unlocked cell value and the parameters that go with it.
    #[inline]
    fn load(&self) -> (u64, Params) {
        let mut cur = self.cell.load(Ordering::Acquire);
        if cur & LOCK != 0 {
            cur = load_unlocked(&self.cell);
        }
        (cur, self.params())
    }

    #[inline]
    fn position(p: &Params, cur: u64, now: u64) -> Position {
        let mine = p.index(now);
        let cidx = p.packing.resolve(cur, mine);
        if cidx >= mine {
            Position {
                idx: cidx,
                count: p.packing.count(cur),
                rolled: None,
            }
        } else {
            Position {
                idx: mine,
                count: 0,
                rolled: Some((cidx, p.packing.count(cur))),
            }
        }
    }

    /// Decides a request for `n` permits at `now`; with `commit` takes them. Returns the
    /// bucket index the permits were (or would be) counted in.
    #[inline]
    pub(crate) fn decide<E: Earlier>(
        &self,
        earlier: &E,
        now: u64,
        n: u32,
        commit: bool,
    ) -> Result<u64, RateLimited> {
        if n == 0 {
            return Ok(0);
        }
        let n = u64::from(n);
        loop {
            let (cur, p) = self.load();
            if n > u64::from(p.limit) {
                return Err(RateLimited::NEVER);
            }
            let at = Self::position(&p, cur, now);
            let before = earlier.before(&p, &at, commit);
            if before + at.count + n > u64::from(p.limit) {
                if self.cell.load(Ordering::Acquire) != cur {
                    // The parameters may have changed under this decision.
                    continue;
                }
                return Err(match earlier.fits_from(&p, &at, commit, n) {
                    Some(from) => RateLimited {
                        retry_after: Duration::from_nanos(p.start(from).saturating_sub(now)),
                    },
                    None => RateLimited::NEVER,
                });
            }
            if !commit {
                return Ok(at.idx);
            }
            let new = p.packing.pack(at.idx, at.count + n);
            if self
                .cell
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(at.idx);
            }
        }
    }

    /// Permits that could be taken at `now`.
    #[cfg(test)]
    pub(crate) fn available<E: Earlier>(&self, earlier: &E, now: u64) -> u32 {
        let (cur, p) = self.load();
        Self::available_at(earlier, &p, cur, now)
    }

    fn available_at<E: Earlier>(earlier: &E, p: &Params, cur: u64, now: u64) -> u32 {
        let at = Self::position(p, cur, now);
        let used = earlier.before(p, &at, false) + at.count;
        u32::try_from(u64::from(p.limit).saturating_sub(used)).unwrap_or(u32::MAX)
    }

    /// Gives back `n` permits counted in bucket `idx`, if it is still the current one.
    pub(crate) fn refund(&self, n: u32, idx: u64) {
        let n = u64::from(n);
        let (mut cur, mut p) = self.load();
        while p.packing.same_bucket(cur, idx) && p.packing.count(cur) >= n {
            let new = p.packing.pack(idx, p.packing.count(cur) - n);
            if self
                .cell
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            (cur, p) = self.load();
        }
    }

    /// Switches to `limit` permits per bucket of `width` nanoseconds at `now`, without
    /// making more permits available than before: the permits available now (or `carry`,
    /// when given) are kept, capped at the new limit, and counting restarts at `now` with the
    /// rest counted as taken. With the same limit and width and no `carry`, nothing changes.
    /// Returns the permits that were available just before. Concurrent decisions wait (spin)
    /// for the few nanoseconds it takes.
    ///
    /// Safe against decisions that read the old parameters: the new buckets are numbered
    /// after every bucket the old ones could still name (`base`), and count fields never
    /// shrink, so whatever a late writer stores under the old parameters reads as an old
    /// bucket.
    pub(crate) fn replace<E: Earlier>(
        &self,
        earlier: &E,
        now: u64,
        limit: u32,
        width: u64,
        carry: Option<u32>,
    ) -> u32 {
        let cur = lock(&self.cell);
        let p = self.params();
        let before = Self::available_at(earlier, &p, cur, now);
        let width = width.max(1);
        if carry.is_none() && limit == p.limit && width == p.width {
            self.cell.store(cur, Ordering::Release);
            return before;
        }
        let available = carry.unwrap_or(before).min(limit);
        let packing = p.packing.widened(limit);
        let base = p.index(now) + earlier.span() + 3;
        self.shape.store(
            u64::from(limit) | u64::from(packing.count_bits) << 32,
            Ordering::Relaxed,
        );
        self.width.store(width, Ordering::Relaxed);
        self.origin.store(now, Ordering::Relaxed);
        self.base.store(base, Ordering::Relaxed);
        earlier.restarted(&self.params());
        let spent = u64::from(limit - available);
        self.cell
            .store(packing.pack(base, spent), Ordering::Release);
        before
    }
}

/// A window length in nanoseconds, or an error when zero.
pub(crate) fn window_nanos(window: Duration) -> Result<u64, ConfigError> {
    match duration_to_nanos(window) {
        0 => Err(ConfigError::ZeroDuration { name: "window" }),
        n => Ok(n),
    }
}

/// The window of `quota`: `burst / rate` seconds (the time a full token bucket is worth),
/// in nanoseconds, split into `parts`.
pub(crate) fn quota_width(quota: Quota, parts: u64) -> u64 {
    Gcra::from_quota(quota).tau().div_ceil(parts.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_roundtrip_and_resolve() {
        let p = Packing::for_limit(1);
        assert_eq!(p.count(p.pack(7, 1)), 1);
        assert!(p.same_bucket(p.pack(7, 1), 7));
        assert!(
            p.same_bucket(p.pack(7, 1) | LOCK, 7),
            "the lock bit is no part of the tag"
        );
        let p = Packing::for_limit(u32::MAX);
        let v = p.pack(u64::from(u32::MAX >> 1) + 5, u64::from(u32::MAX));
        assert_eq!(p.count(v), u64::from(u32::MAX));
        assert_eq!(v & LOCK, 0);
        // The tag wrapped to 4; resolved near the true index it comes back.
        assert_eq!(
            p.resolve(v, u64::from(u32::MAX >> 1) + 3),
            u64::from(u32::MAX >> 1) + 5
        );
        assert_eq!(p.resolve(p.pack(10, 0), 12), 10);
        assert_eq!(p.resolve(p.pack(12, 0), 10), 12);
    }

    #[test]
    fn a_widened_packing_reads_old_values_as_older_buckets() {
        let old = Packing::for_limit(3);
        let new = old.widened(1000);
        assert_eq!(old.widened(2), old, "count fields never shrink");
        for idx in [0u64, 1, 7, 1 << 20] {
            for count in 0..=3 {
                let v = old.pack(idx, count);
                assert!(new.tag(v) <= idx);
                assert!(new.resolve(v, idx + 3) < idx + 3);
            }
        }
    }

    #[test]
    fn quota_widths() {
        let nz = |v| std::num::NonZeroU32::new(v).unwrap();
        let q = Quota::per_second(nz(100)).with_burst(nz(20));
        assert_eq!(quota_width(q, 1), 200_000_000);
        assert_eq!(quota_width(q, 11), 18_181_819);
    }
}
