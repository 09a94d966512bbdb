//! KeyedLimiter keeps its hard memory cap while an attacker rotates keys.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use seckill_flowcontrol::{KeyedLimiter, ManualClock, Quota};

#[test]
fn ten_million_distinct_keys_stay_under_the_cap() {
    const KEYS: u64 = 10_000_000;
    const CAP: usize = 100_000;
    let clock = ManualClock::new();
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
    let limiter = KeyedLimiter::with_clock(quota, NonZeroUsize::new(CAP).unwrap(), clock.clone());
    assert!(limiter.capacity() <= CAP);
    for key in 0..KEYS {
        // Every new key is admitted (full bucket) and must be stored.
        assert!(limiter.try_acquire(&key, 1).is_ok());
        if key % 250_000 == 0 {
            assert!(limiter.len() <= CAP, "len {} at key {key}", limiter.len());
            // Time moves a little so some keys go idle and others do not.
            clock.advance(Duration::from_millis(75));
        }
    }
    let len = limiter.len();
    assert!(len <= CAP, "len {len}");
    assert!(len > CAP / 2, "the cap is used, not wasted: {len}");
    clock.advance(Duration::from_secs(2));
    limiter.retain_recent();
    assert!(limiter.is_empty());
}
