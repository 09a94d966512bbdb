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

#[test]
fn a_quota_change_keeps_every_key_s_spent_permits() {
    let clock = ManualClock::new();
    let nz = |v| NonZeroU32::new(v).unwrap();
    let limiter = KeyedLimiter::with_clock(
        Quota::per_second(nz(1)).with_burst(nz(2)),
        NonZeroUsize::new(100).unwrap(),
        clock.clone(),
    );
    assert!(limiter.try_acquire(&1u64, 2).is_ok());
    assert!(limiter.try_acquire(&1u64, 1).is_err());
    // A larger burst: key 1 spent two and gets the one more, not a fresh bucket of three.
    limiter.set_quota(Quota::per_second(nz(1)).with_burst(nz(3)));
    assert_eq!(limiter.quota().burst().get(), 3);
    assert!(limiter.try_acquire(&1u64, 1).is_ok());
    assert!(limiter.try_acquire(&1u64, 1).is_err());
    // A new key gets the new burst; a tighter one applies to the next request.
    assert!(limiter.try_acquire(&2u64, 3).is_ok());
    limiter.set_quota(Quota::per_second(nz(1)).with_burst(nz(1)));
    clock.advance(Duration::from_secs(1));
    assert!(
        limiter.try_acquire(&3u64, 2).is_err(),
        "above the new burst"
    );
    assert!(limiter.try_acquire(&3u64, 1).is_ok());
}
