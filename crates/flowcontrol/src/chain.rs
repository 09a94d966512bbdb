//! Multi-level limits (global → product → user) that spend nothing when a
//! later level rejects.
//!
//! [`check_chain`] runs two phases. First it *peeks* every level in order
//! and stops at the first that would reject, having changed nothing.
//! Then it *commits* every level in order; if a commit fails anyway
//! (another request took the last permits in between), the levels already
//! committed are refunded before the rejection is returned. Refunds are
//! exact for token buckets (the TAT moves back by `n` intervals) and for
//! window counters whose window has not moved on (otherwise the permits
//! have expired and there is nothing to give back).

use std::hash::Hash;
use std::time::Duration;

use crate::clock::Clock;
use crate::keyed::KeyedLimiter;
use crate::limiter::RateLimited;
use crate::token_bucket::TokenBucket;
use crate::window::{FixedWindow, SlidingWindow};

/// A limiter usable as one level of [`check_chain`].
pub trait ChainLevel: Send + Sync {
    /// Whether `n` permits are available, without taking them.
    fn peek(&self, n: u32) -> Result<(), RateLimited>;
    /// Takes `n` permits; the returned ticket is opaque and only passed
    /// back to [`refund`](Self::refund).
    fn commit(&self, n: u32) -> Result<u64, RateLimited>;
    /// Gives back `n` permits taken by the `commit` that returned `ticket`.
    fn refund(&self, n: u32, ticket: u64);
}

/// The rejection of a chain: which level refused, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainRejected {
    /// Index in `levels` of the level that refused.
    pub level: usize,
    /// That level's `retry_after`.
    pub retry_after: Duration,
}

impl From<ChainRejected> for RateLimited {
    fn from(r: ChainRejected) -> Self {
        Self {
            retry_after: r.retry_after,
        }
    }
}

/// Takes `n` permits from every level, or from none: levels are checked in
/// order and the first rejection is returned; no level keeps permits when
/// a later one rejects. No allocation.
///
/// # Example
/// ```
/// use std::num::{NonZeroU32, NonZeroUsize};
/// use std::time::Duration;
/// use seckill_flowcontrol::{KeyedLimiter, ManualClock, Quota, RateLimiter, TokenBucket};
/// use seckill_flowcontrol::check_chain;
///
/// let nz = |v| NonZeroU32::new(v).unwrap();
/// let clock = ManualClock::new();
/// let global = TokenBucket::with_clock(Quota::per_second(nz(100)), clock.clone());
/// let max_keys = NonZeroUsize::new(1_000).unwrap();
/// let per_user = KeyedLimiter::with_clock(Quota::per_second(nz(1)), max_keys, clock);
/// assert!(check_chain(&[&global, &per_user.level(&7)], 1).is_ok());
/// // User 7's bucket is now empty: level 1 refuses...
/// let rejected = check_chain(&[&global, &per_user.level(&7)], 1).unwrap_err();
/// assert_eq!((rejected.level, rejected.retry_after), (1, Duration::from_secs(1)));
/// // ...and the global level kept nothing: 99 of its 100 permits are left.
/// assert!(global.try_acquire(99).is_ok());
/// assert!(global.try_acquire(1).is_err());
/// ```
pub fn check_chain(levels: &[&dyn ChainLevel], n: u32) -> Result<(), ChainRejected> {
    for (level, l) in levels.iter().enumerate() {
        l.peek(n).map_err(|e| ChainRejected {
            level,
            retry_after: e.retry_after,
        })?;
    }
    commit_from(levels, 0, n)
}

fn commit_from(levels: &[&dyn ChainLevel], level: usize, n: u32) -> Result<(), ChainRejected> {
    let Some(l) = levels.get(level) else {
        return Ok(());
    };
    let ticket = l.commit(n).map_err(|e| ChainRejected {
        level,
        retry_after: e.retry_after,
    })?;
    commit_from(levels, level + 1, n).inspect_err(|_| l.refund(n, ticket))
}

impl<C: Clock> ChainLevel for TokenBucket<C> {
    fn peek(&self, n: u32) -> Result<(), RateLimited> {
        TokenBucket::peek(self, n)
    }
    fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        crate::RateLimiter::try_acquire(self, n).map(|()| 0)
    }
    fn refund(&self, n: u32, _ticket: u64) {
        TokenBucket::refund(self, n);
    }
}

impl<C: Clock> ChainLevel for FixedWindow<C> {
    fn peek(&self, n: u32) -> Result<(), RateLimited> {
        self.decide(n, false).map(drop)
    }
    fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        self.decide(n, true)
    }
    fn refund(&self, n: u32, ticket: u64) {
        FixedWindow::refund(self, n, ticket);
    }
}

impl<C: Clock> ChainLevel for SlidingWindow<C> {
    fn peek(&self, n: u32) -> Result<(), RateLimited> {
        self.decide(n, false).map(drop)
    }
    fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        self.decide(n, true)
    }
    fn refund(&self, n: u32, ticket: u64) {
        SlidingWindow::refund(self, n, ticket);
    }
}

/// One key of a [`KeyedLimiter`] as a chain level; see
/// [`KeyedLimiter::level`].
#[derive(Debug)]
pub struct KeyedLevel<'a, K, C: Clock> {
    limiter: &'a KeyedLimiter<K, C>,
    key: &'a K,
}

impl<K: Hash + Eq + Clone + Send + Sync, C: Clock + Clone> KeyedLimiter<K, C> {
    /// `key`'s bucket as a level of [`check_chain`].
    pub fn level<'a>(&'a self, key: &'a K) -> KeyedLevel<'a, K, C> {
        KeyedLevel { limiter: self, key }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, C: Clock + Clone> ChainLevel for KeyedLevel<'_, K, C> {
    fn peek(&self, n: u32) -> Result<(), RateLimited> {
        self.limiter.decide(self.key, n, false)
    }
    fn commit(&self, n: u32) -> Result<u64, RateLimited> {
        self.limiter.decide(self.key, n, true).map(|()| 0)
    }
    fn refund(&self, n: u32, _ticket: u64) {
        self.limiter.refund(self.key, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::limiter::{Quota, RateLimiter};
    use std::num::{NonZeroU32, NonZeroUsize};

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn later_rejection_spends_nothing_earlier() {
        let clock = ManualClock::new();
        let global = TokenBucket::with_clock(Quota::per_second(nz(100)), clock.clone());
        let product = FixedWindow::with_clock(nz(50), Duration::from_secs(1), clock.clone());
        let users = KeyedLimiter::with_clock(
            Quota::per_second(nz(1)).with_burst(nz(2)),
            NonZeroUsize::new(100).unwrap(),
            clock.clone(),
        );
        let user = 42u64;
        let chain = |n| check_chain(&[&global, &product, &users.level(&user)], n);
        assert_eq!(chain(2), Ok(()));
        let r = chain(1).unwrap_err();
        assert_eq!(r.level, 2);
        assert_eq!(r.retry_after, Duration::from_secs(1));
        // Global and product were not charged for the rejected request.
        assert!(global.try_acquire(98).is_ok());
        assert!(product.try_acquire(48).is_ok());
        assert!(product.try_acquire(1).is_err());
    }

    #[test]
    fn failed_commit_refunds_earlier_levels() {
        // A level whose peek says yes but whose commit says no, as when
        // another request races in between.
        struct Liar;
        impl ChainLevel for Liar {
            fn peek(&self, _n: u32) -> Result<(), RateLimited> {
                Ok(())
            }
            fn commit(&self, _n: u32) -> Result<u64, RateLimited> {
                Err(RateLimited {
                    retry_after: Duration::from_millis(7),
                })
            }
            fn refund(&self, _n: u32, _t: u64) {
                unreachable!("never committed")
            }
        }
        let clock = ManualClock::new();
        let a = TokenBucket::with_clock(Quota::per_second(nz(5)), clock.clone());
        let b = SlidingWindow::with_clock(nz(5), Duration::from_secs(1), nz(5), clock.clone());
        let r = check_chain(&[&a, &b, &Liar], 5).unwrap_err();
        assert_eq!(
            r,
            ChainRejected {
                level: 2,
                retry_after: Duration::from_millis(7)
            }
        );
        assert!(a.try_acquire(5).is_ok(), "token bucket refunded");
        assert!(b.try_acquire(5).is_ok(), "sliding window refunded");
        assert_eq!(RateLimited::from(r).retry_after, Duration::from_millis(7));
    }

    #[test]
    fn empty_chain_admits() {
        assert_eq!(check_chain(&[], 3), Ok(()));
    }
}
