//! Time sources: a monotonic [`SystemClock`] for production and a
//! [`ManualClock`] for deterministic tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A monotonic time source.
///
/// `now` returns the time elapsed since the clock's own origin; only
/// differences between readings are meaningful.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since the clock's origin.
    fn now(&self) -> Duration;

    /// The same reading in whole nanoseconds, saturating at `u64::MAX`.
    /// The limiters call this on their hot path; override it when the clock
    /// can answer without building a [`Duration`].
    #[inline]
    fn now_nanos(&self) -> u64 {
        duration_to_nanos(self.now())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Duration {
        (**self).now()
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now(&self) -> Duration {
        (**self).now()
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

/// The process's monotonic clock ([`Instant`]); its origin is the first
/// time any `SystemClock` is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        let origin = *ORIGIN.get_or_init(Instant::now);
        Instant::now().saturating_duration_since(origin)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `d` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, d: Duration) {
        let by = duration_to_nanos(d);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `d` since its origin. Callers are responsible for
    /// never moving it backwards while a limiter reads it.
    pub fn set(&self, d: Duration) {
        self.nanos.store(duration_to_nanos(d), Ordering::Release);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

/// Whole nanoseconds in `d`, saturating at `u64::MAX` (about 584 years).
#[inline]
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The clock's reading in nanoseconds.
#[inline]
pub(crate) fn now_nanos<C: Clock + ?Sized>(clock: &C) -> u64 {
    clock.now_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        assert_eq!(a.now(), Duration::ZERO);
        a.advance(Duration::from_millis(5));
        assert_eq!(b.now(), Duration::from_millis(5));
        b.set(Duration::from_secs(2));
        assert_eq!(a.now(), Duration::from_secs(2));
        a.advance(Duration::MAX);
        assert_eq!(a.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn nanos_saturate() {
        assert_eq!(duration_to_nanos(Duration::MAX), u64::MAX);
        assert_eq!(duration_to_nanos(Duration::new(1, 5)), 1_000_000_005);
    }
}
