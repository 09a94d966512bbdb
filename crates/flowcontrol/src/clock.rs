//! Time sources: a monotonic [`SystemClock`] for production and a
//! [`ManualClock`] for deterministic tests.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// A pointer to a clock (`Arc<C>`, `Box<C>`, `&'static C`, `Arc<dyn Clock>`…) reads that
/// clock.
impl<P> Clock for P
where
    P: Deref + Send + Sync + 'static,
    P::Target: Clock,
{
    #[inline]
    fn now(&self) -> Duration {
        (**self).now()
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

/// The process's monotonic clock, read through the CPU's time-stamp counter
/// when it is usable; its origin is the first time any `SystemClock` is
/// read.
///
/// The reading comes from [`quanta`](https://docs.rs/quanta): the TSC
/// (`rdtsc`, x86-64 with an invariant TSC and `rdtscp`) or the ARM system
/// counter, scaled to nanoseconds by a calibration against
/// `CLOCK_MONOTONIC`; where neither is available, the OS monotonic clock
/// that [`std::time::Instant`] reads (`clock_gettime(CLOCK_MONOTONIC)` on
/// Unix). A counter read costs a few nanoseconds where `Instant::now()`
/// costs tens on a virtual machine.
///
/// Readings never go backwards on a thread: each thread keeps the last
/// value it returned and never returns less (this absorbs a small TSC skew
/// between cores when a thread migrates). Between threads, readings are as
/// consistent as the cores' TSCs, which an invariant TSC keeps in step; the
/// limiters tolerate a reading a few nanoseconds behind another thread's
/// (GCRA takes the later of the stored time and `now`; windows never move
/// back to an older bucket).
///
/// The first reading in the process calibrates the counter, which blocks
/// that caller once, usually for 10–20 ms (at most 200 ms).
/// [`TokenBucket`](crate::TokenBucket), [`FixedWindow`](crate::FixedWindow)
/// and [`SlidingWindow`](crate::SlidingWindow) read the clock when they are
/// built; otherwise call `SystemClock.now()` once at start-up to keep the
/// calibration off the request path.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The calibrated counter and its raw reading at the origin.
struct Source {
    clock: quanta::Clock,
    origin: u64,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

thread_local! {
    /// The last reading this thread returned, so it never goes backwards.
    static LAST: Cell<u64> = const { Cell::new(0) };
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        let source = SOURCE.get_or_init(|| {
            let clock = quanta::Clock::new();
            let origin = clock.raw();
            Source { clock, origin }
        });
        // `delta_as_nanos` is 0 for a raw reading at or before the origin.
        let t = source
            .clock
            .delta_as_nanos(source.origin, source.clock.raw());
        LAST.with(|last| {
            let t = t.max(last.get());
            last.set(t);
            t
        })
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
    fn pointers_read_the_clock_they_point_to() {
        fn read(c: &impl Clock) -> u64 {
            c.now_nanos()
        }
        let manual = ManualClock::new();
        manual.advance(Duration::from_nanos(7));
        let shared: Arc<dyn Clock> = Arc::new(manual.clone());
        assert_eq!(read(&shared), 7);
        assert_eq!(read(&Box::new(manual.clone())), 7);
        assert_eq!(Arc::new(manual).now(), Duration::from_nanos(7));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn system_clock_tracks_instant() {
        let c = SystemClock;
        let sleep = Duration::from_millis(20);
        let i0 = std::time::Instant::now();
        let a = c.now();
        std::thread::sleep(sleep);
        let b = c.now();
        let outer = i0.elapsed();
        // The readings lie inside the `Instant` interval and span the sleep,
        // up to the calibration error.
        let measured = b - a;
        assert!(measured >= sleep.mul_f64(0.9), "{measured:?} < {sleep:?}");
        assert!(measured <= outer.mul_f64(1.1), "{measured:?} > {outer:?}");
    }

    #[test]
    fn system_clock_is_monotonic_on_every_thread() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let c = SystemClock;
                    let mut last = c.now_nanos();
                    for _ in 0..100_000 {
                        let now = c.now_nanos();
                        assert!(now >= last);
                        last = now;
                    }
                    let d = c.now();
                    assert!(c.now_nanos() >= duration_to_nanos(d));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn nanos_saturate() {
        assert_eq!(duration_to_nanos(Duration::MAX), u64::MAX);
        assert_eq!(duration_to_nanos(Duration::new(1, 5)), 1_000_000_005);
    }
}
