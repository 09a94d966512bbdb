//! Window counters: [`FixedWindow`] and [`SlidingWindow`].
//!
//! Both keep a bucket index and a count packed in one `AtomicU64`. The
//! count takes as many bits as the limit needs; the index keeps the rest
//! (at least 32 bits) as a wrapping tag.

pub mod fixed;
pub mod sliding;

pub use fixed::FixedWindow;
pub use sliding::SlidingWindow;

use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::error::Error;

/// How a (bucket index, count) pair is packed into a `u64`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packing {
    count_bits: u32,
    count_mask: u64,
    tag_mask: u64,
}

impl Packing {
    /// A packing whose count field holds `0..=limit`.
    pub(crate) const fn for_limit(limit: u32) -> Self {
        let count_bits = 32 - limit.leading_zeros();
        Self {
            count_bits,
            count_mask: (1u64 << count_bits) - 1,
            tag_mask: u64::MAX >> count_bits,
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
        v >> self.count_bits
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

/// A window length in nanoseconds, or an error when zero.
pub(crate) fn window_nanos(window: Duration) -> Result<u64, Error> {
    match duration_to_nanos(window) {
        0 => Err(Error::ZeroDuration { name: "window" }),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_roundtrip_and_resolve() {
        let p = Packing::for_limit(1);
        assert_eq!(p.count(p.pack(7, 1)), 1);
        assert!(p.same_bucket(p.pack(7, 1), 7));
        let p = Packing::for_limit(u32::MAX);
        let v = p.pack(u64::from(u32::MAX) + 5, u64::from(u32::MAX));
        assert_eq!(p.count(v), u64::from(u32::MAX));
        // The tag wrapped to 4; resolved near the true index it comes back.
        assert_eq!(
            p.resolve(v, u64::from(u32::MAX) + 3),
            u64::from(u32::MAX) + 5
        );
        assert_eq!(p.resolve(p.pack(10, 0), 12), 10);
        assert_eq!(p.resolve(p.pack(12, 0), 10), 12);
    }
}
