//! The [`RateLimiter`] trait, its rejection value [`RateLimited`], the
//! [`Quota`] type and the GCRA arithmetic shared by the token-bucket
//! limiters.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A rejection from a rate limiter. Every limiter of the crate rejects with this one type,
/// and so do the tower layers `RateLimitLayer` and `KeyedRateLimitLayer` (feature `tower`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The earliest time from now after which a retry of the same `n` can
    /// succeed, assuming no other caller takes permits in between.
    /// [`Duration::MAX`] means the request can never succeed (for example
    /// `n` is larger than the burst).
    pub retry_after: Duration,
}

impl RateLimited {
    /// The rejection for a request that no amount of waiting can admit.
    pub const NEVER: Self = Self {
        retry_after: Duration::MAX,
    };
}

/// Something that admits or rejects requests for `n` permits.
///
/// A rejection is a value ([`RateLimited`]), not an error: it is the
/// limiter working as intended.
pub trait RateLimiter: Send + Sync {
    /// Takes `n` permits if they are available right now, without waiting.
    /// `n == 0` always succeeds and changes nothing.
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited>;
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit exceeded")
    }
}

impl std::error::Error for RateLimited {}

impl<L: RateLimiter + ?Sized> RateLimiter for &L {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        (**self).try_acquire(n)
    }
}

impl<L: RateLimiter + ?Sized> RateLimiter for Arc<L> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        (**self).try_acquire(n)
    }
}

impl<L: RateLimiter + ?Sized> RateLimiter for Box<L> {
    #[inline]
    fn try_acquire(&self, n: u32) -> Result<(), RateLimited> {
        (**self).try_acquire(n)
    }
}

/// A sustained rate (permits per second) and a burst (the most permits that
/// can be taken at once after an idle period).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    rate: NonZeroU32,
    burst: NonZeroU32,
}

impl Quota {
    /// `rate` permits per second, with a burst equal to `rate`.
    ///
    /// Internally one permit is emitted every `ceil(1e9 / rate)`
    /// nanoseconds, so rates that do not divide one second are rounded
    /// down by less than a nanosecond per permit (never up), and rates above
    /// 10⁹/s behave as 10⁹/s.
    pub const fn per_second(rate: NonZeroU32) -> Self {
        Self { rate, burst: rate }
    }

    /// The same rate with a different burst.
    #[must_use]
    pub const fn with_burst(self, burst: NonZeroU32) -> Self {
        Self { burst, ..self }
    }

    /// Permits per second.
    pub const fn rate(&self) -> NonZeroU32 {
        self.rate
    }

    /// The largest number of permits available at once.
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The time between two permits at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(Gcra::from_quota(*self).interval)
    }
}

/// GCRA parameters in nanoseconds, copyable and packable in one `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds per permit, in `1..=1e9`.
    pub(crate) interval: u64,
    /// The burst, in permits.
    pub(crate) burst: u32,
}

impl Gcra {
    pub(crate) const fn from_quota(q: Quota) -> Self {
        let rate = q.rate.get() as u64;
        Self {
            interval: 1_000_000_000u64.div_ceil(rate),
            burst: q.burst.get(),
        }
    }

    #[inline]
    pub(crate) const fn pack(self) -> u64 {
        (self.interval << 32) | self.burst as u64
    }

    #[inline]
    pub(crate) const fn unpack(v: u64) -> Self {
        Self {
            interval: v >> 32,
            burst: v as u32,
        }
    }

    /// Burst tolerance: the time a full bucket is worth.
    #[inline]
    pub(crate) const fn tau(self) -> u64 {
        self.burst as u64 * self.interval
    }

    /// Decides a request for `n` permits (`1 <= n <= burst`) at `now`
    /// against the theoretical arrival time `tat`. Returns the new TAT, or
    /// the wait after which the same request would be admitted.
    #[inline]
    pub(crate) const fn check(self, tat: u64, now: u64, n: u32) -> Result<u64, u64> {
        let base = if tat > now { tat } else { now };
        let new_tat = base.saturating_add(n as u64 * self.interval);
        let allow_until = now.saturating_add(self.tau());
        if new_tat <= allow_until {
            Ok(new_tat)
        } else {
            Err(new_tat - allow_until)
        }
    }

    /// The TAT after giving back `n` permits taken earlier.
    #[inline]
    pub(crate) const fn refund(self, tat: u64, n: u32) -> u64 {
        tat.saturating_sub(n as u64 * self.interval)
    }
}

/// Shorthand used by the limiters for "n is larger than the burst".
#[inline]
pub(crate) fn never() -> Result<(), RateLimited> {
    Err(RateLimited::NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn quota_accessors() {
        let q = Quota::per_second(nz(10));
        assert_eq!(q.rate().get(), 10);
        assert_eq!(q.burst().get(), 10);
        let q = q.with_burst(nz(3));
        assert_eq!(q.burst().get(), 3);
        assert_eq!(q.interval(), Duration::from_millis(100));
        assert_eq!(
            Quota::per_second(nz(3)).interval(),
            Duration::from_nanos(333_333_334)
        );
    }

    #[test]
    fn gcra_pack_roundtrip() {
        let g = Gcra::from_quota(Quota::per_second(nz(1)).with_burst(nz(u32::MAX)));
        assert_eq!(Gcra::unpack(g.pack()), g);
        let g = Gcra::from_quota(Quota::per_second(nz(u32::MAX)));
        assert_eq!(g.interval, 1);
        assert_eq!(Gcra::unpack(g.pack()), g);
    }

    #[test]
    fn gcra_check_and_refund() {
        let g = Gcra::from_quota(Quota::per_second(nz(10)).with_burst(nz(2)));
        let t = g.check(0, 0, 2).unwrap();
        assert_eq!(t, 200_000_000);
        assert_eq!(g.check(t, 0, 1), Err(100_000_000));
        assert_eq!(g.refund(t, 1), 100_000_000);
    }
}
