//! Per-key token buckets (per user, per IP, per product) under a hard
//! memory cap.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock, now_nanos};
use crate::limiter::{Gcra, Quota, RateLimited, never};

const MAX_SHARDS: usize = 64;

/// One GCRA bucket per key, at most `max_keys` keys in memory.
///
/// Keys are spread over up to 64 shards, each a small
/// `parking_lot::Mutex<HashMap<K, u64>>` holding the key's theoretical
/// arrival time (TAT). Hashing uses std's randomly seeded SipHash, so
/// attackers cannot aim keys at one shard or one hash chain.
///
/// # Memory bound
/// Each shard holds at most `max_keys / shards` keys, so [`len`](Self::len)
/// never exceeds `max_keys`, whatever the keys. When a new key arrives at
/// a full shard, the shard first drops idle keys (TAT ≤ now: their bucket
/// is full again, so forgetting them changes no decision). If that frees
/// fewer than 1/16 of the shard, it also evicts the keys with the
/// smallest TATs (the ones closest to a full bucket) until 1/16 is free;
/// evicting in batches keeps insertion amortised O(1).
///
/// Evicting a non-idle key forgets its remaining debt, so under key
/// rotation pressure such a key may be granted up to that debt again (at
/// most `burst` permits, once per eviction). We chose this over rejecting
/// new keys: rejecting would lock out every new legitimate user for as
/// long as an attacker keeps the shards full, whereas eviction only ever
/// forgets the least-indebted keys — heavy users, whose TATs are largest,
/// are evicted last.
///
/// # Example
/// ```
/// use std::num::{NonZeroU32, NonZeroUsize};
/// use std::time::Duration;
/// use seckill_flowcontrol::{KeyedLimiter, ManualClock, Quota};
///
/// let clock = ManualClock::new();
/// let one_per_second = Quota::per_second(NonZeroU32::new(1).unwrap());
/// let max_keys = NonZeroUsize::new(1_000).unwrap();
/// let per_user = KeyedLimiter::with_clock(one_per_second, max_keys, clock.clone());
/// assert!(per_user.try_acquire(&"alice", 1).is_ok());
/// assert!(per_user.try_acquire(&"alice", 1).is_err()); // alice's bucket is empty
/// assert!(per_user.try_acquire(&"bob", 1).is_ok()); // bob has his own
/// assert_eq!(per_user.len(), 2);
/// clock.advance(Duration::from_secs(1));
/// per_user.retain_recent(); // both buckets are full again: forgetting them changes nothing
/// assert!(per_user.is_empty());
/// ```
pub struct KeyedLimiter<K, C: Clock = SystemClock> {
    shards: Box<[Padded<K>]>,
    shard_mask: usize,
    per_shard: usize,
    hasher: RandomState,
    /// The [`Gcra`] in force, packed (`interval << 32 | burst`) so a quota change is atomic.
    gcra: AtomicU64,
    /// The quota in force, packed (`rate << 32 | burst`).
    quota: AtomicU64,
    clock: C,
}

fn pack_gcra(g: Gcra) -> u64 {
    (g.interval << 32) | u64::from(g.burst)
}

fn pack_quota(q: Quota) -> u64 {
    (u64::from(q.rate().get()) << 32) | u64::from(q.burst().get())
}

#[repr(align(64))]
struct Padded<K>(Mutex<Shard<K>>);

struct Shard<K> {
    map: HashMap<Entry<K>, u64, BuildHasherDefault<Precomputed>>,
    /// Reused buffer for choosing eviction victims.
    scratch: Vec<u64>,
}

impl<K: Hash + Eq + Clone + Send + Sync> KeyedLimiter<K, SystemClock> {
    /// `quota` per key, at most `max_keys` keys, on the system clock.
    pub fn new(quota: Quota, max_keys: NonZeroUsize) -> Self {
        Self::with_clock(quota, max_keys, SystemClock)
    }
}

impl<K: Hash + Eq + Clone + Send + Sync, C: Clock + Clone> KeyedLimiter<K, C> {
    /// `quota` per key, at most `max_keys` keys, reading time from `clock`.
    pub fn with_clock(quota: Quota, max_keys: NonZeroUsize, clock: C) -> Self {
        let max_keys = max_keys.get();
        // A power of two no larger than max_keys, so every shard holds >= 1.
        let shards = if max_keys >= MAX_SHARDS {
            MAX_SHARDS
        } else {
            1 << max_keys.ilog2()
        };
        let shards = (0..shards)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    map: HashMap::default(),
                    scratch: Vec::new(),
                }))
            })
            .collect::<Box<[_]>>();
        Self {
            shard_mask: shards.len() - 1,
            per_shard: max_keys / shards.len(),
            shards,
            hasher: RandomState::new(),
            gcra: AtomicU64::new(pack_gcra(Gcra::from_quota(quota))),
            quota: AtomicU64::new(pack_quota(quota)),
            clock,
        }
    }

    /// The per-key quota.
    pub fn quota(&self) -> Quota {
        let q = self.quota.load(Ordering::Relaxed);
        let (rate, burst) = ((q >> 32) as u32, q as u32);
        Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
            .with_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
    }

    /// Changes the per-key quota at run time. Every tracked key keeps what it has taken (its
    /// theoretical arrival time): a change never hands out a fresh burst, and a tighter
    /// quota applies to the next request at once.
    pub fn set_quota(&self, quota: Quota) {
        self.gcra
            .store(pack_gcra(Gcra::from_quota(quota)), Ordering::Relaxed);
        self.quota.store(pack_quota(quota), Ordering::Relaxed);
    }

    fn gcra(&self) -> Gcra {
        let g = self.gcra.load(Ordering::Relaxed);
        Gcra {
            interval: g >> 32,
            burst: g as u32,
        }
    }

    /// The most keys held at once (`max_keys` rounded down to a multiple
    /// of the shard count).
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// The key's SipHash (computed once per call) and its shard.
    #[inline]
    fn locate(&self, key: &K) -> (u64, &Mutex<Shard<K>>) {
        let h = self.hasher.hash_one(key);
        (h, &self.shards[(h >> 32) as usize & self.shard_mask].0)
    }

    /// Takes `n` permits from `key`'s bucket. A new key starts with a full
    /// bucket. `n == 0` always succeeds; `n > burst` never does
    /// ([`RateLimited::NEVER`]).
    pub fn try_acquire(&self, key: &K, n: u32) -> Result<(), RateLimited> {
        self.decide(key, n, true)
    }

    /// Decides a request of `key` for `n` permits; with `commit` takes them (a new key is
    /// stored only then).
    pub(crate) fn decide(&self, key: &K, n: u32, commit: bool) -> Result<(), RateLimited> {
        if n == 0 {
            return Ok(());
        }
        let gcra = self.gcra();
        if n > gcra.burst {
            return never();
        }
        let now = now_nanos(&self.clock);
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        let decide = |tat| {
            gcra.check(tat, now, n).map_err(|wait| RateLimited {
                retry_after: Duration::from_nanos(wait),
            })
        };
        if let Some(tat) = shard.map.get_mut(&Probe { hash, key } as &dyn Lookup<K>) {
            let new = decide(*tat)?;
            if commit {
                *tat = new;
            }
            return Ok(());
        }
        // A new key has a full bucket and n <= burst: always admitted.
        let tat = decide(0).unwrap_or(now);
        if commit {
            if shard.map.len() >= self.per_shard {
                shard.make_room(now, self.per_shard);
            }
            let entry = Entry {
                hash,
                key: key.clone(),
            };
            shard.map.insert(entry, tat);
        }
        Ok(())
    }

    /// Gives back `n` permits taken from `key` (if it is still tracked).
    pub(crate) fn refund(&self, key: &K, n: u32) {
        let (hash, shard) = self.locate(key);
        if let Some(tat) = shard
            .lock()
            .map
            .get_mut(&Probe { hash, key } as &dyn Lookup<K>)
        {
            *tat = self.gcra().refund(*tat, n);
        }
    }

    /// Keys currently tracked (at most [`capacity`](Self::capacity)).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().map.len()).sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.0.lock().map.is_empty())
    }

    /// Drops every idle key (bucket full again): it changes no decision.
    /// Call it periodically to return memory early; the cap holds anyway.
    pub fn retain_recent(&self) {
        let now = now_nanos(&self.clock);
        for s in self.shards.iter() {
            s.0.lock().map.retain(|_, tat| *tat > now);
        }
    }
}

impl<K: Hash + Eq> Shard<K> {
    /// Frees at least 1/16 of `cap` (and at least one slot).
    #[cold]
    fn make_room(&mut self, now: u64, cap: usize) {
        self.map.retain(|_, tat| *tat > now);
        let target = cap - (cap / 16).max(1);
        let excess = self.map.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        self.scratch.clear();
        self.scratch.extend(self.map.values().copied());
        let (_, &mut cutoff, _) = self.scratch.select_nth_unstable(excess - 1);
        self.map.retain(|_, tat| *tat > cutoff);
    }
}

/// A stored key with its SipHash, so the map never hashes a key again.
struct Entry<K> {
    hash: u64,
    key: K,
}

/// A borrowed key and its hash, to look entries up without cloning.
struct Probe<'a, K> {
    hash: u64,
    key: &'a K,
}

/// What both [`Entry`] and [`Probe`] expose, so an `Entry` map can be
/// searched with a `Probe` through `Borrow<dyn Lookup<K>>`.
trait Lookup<K> {
    fn parts(&self) -> (u64, &K);
}

impl<K> Lookup<K> for Entry<K> {
    fn parts(&self) -> (u64, &K) {
        (self.hash, &self.key)
    }
}

impl<K> Lookup<K> for Probe<'_, K> {
    fn parts(&self) -> (u64, &K) {
        (self.hash, self.key)
    }
}

impl<'a, K: 'a> Borrow<dyn Lookup<K> + 'a> for Entry<K> {
    fn borrow(&self) -> &(dyn Lookup<K> + 'a) {
        self
    }
}

impl<K> Hash for dyn Lookup<K> + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.parts().0);
    }
}

impl<K: Eq> PartialEq for dyn Lookup<K> + '_ {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.parts(), other.parts());
        a.0 == b.0 && a.1 == b.1
    }
}

impl<K: Eq> Eq for dyn Lookup<K> + '_ {}

impl<K> Hash for Entry<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Entry<K> {}

/// Passes the precomputed SipHash through.
#[derive(Default)]
struct Precomputed(u64);

impl Hasher for Precomputed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl<K, C: Clock> fmt::Debug for KeyedLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("quota", &{
                let q = self.quota.load(Ordering::Relaxed);
                format!("{}/s, burst {}", q >> 32, q as u32)
            })
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::num::NonZeroU32;

    fn limiter(
        rate: u32,
        burst: u32,
        max_keys: usize,
    ) -> (KeyedLimiter<u64, ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let q = Quota::per_second(NonZeroU32::new(rate).unwrap())
            .with_burst(NonZeroU32::new(burst).unwrap());
        (
            KeyedLimiter::with_clock(q, NonZeroUsize::new(max_keys).unwrap(), clock.clone()),
            clock,
        )
    }

    #[test]
    fn keys_are_independent() {
        let (l, clock) = limiter(10, 2, 1000);
        assert!(l.try_acquire(&1, 2).is_ok());
        assert_eq!(
            l.try_acquire(&1, 1).unwrap_err().retry_after,
            Duration::from_millis(100)
        );
        assert!(l.try_acquire(&2, 2).is_ok());
        assert_eq!(l.try_acquire(&3, 3), Err(RateLimited::NEVER));
        assert_eq!(l.try_acquire(&3, 0), Ok(()));
        assert_eq!(l.len(), 2, "rejected and zero requests store nothing");
        clock.advance(Duration::from_millis(100));
        assert!(l.try_acquire(&1, 1).is_ok());
    }

    #[test]
    fn retain_recent_drops_only_idle_keys() {
        let (l, clock) = limiter(10, 10, 1000);
        l.try_acquire(&1, 1).unwrap(); // idle after 100 ms
        l.try_acquire(&2, 10).unwrap(); // idle after 1 s
        clock.advance(Duration::from_millis(100));
        l.retain_recent();
        assert_eq!(l.len(), 1);
        assert!(l.try_acquire(&2, 2).is_err(), "key 2 kept its debt");
        clock.advance(Duration::from_secs(1));
        l.retain_recent();
        assert!(l.is_empty());
    }

    #[test]
    fn small_caps_and_eviction_order() {
        let (l, _clock) = limiter(1, 10, 1);
        assert_eq!(l.capacity(), 1);
        l.try_acquire(&1, 10).unwrap();
        l.try_acquire(&2, 1).unwrap();
        assert_eq!(l.len(), 1);

        // A heavy user survives a flood of one-shot keys.
        let (l, _clock) = limiter(1, 10, 64 * 32);
        l.try_acquire(&u64::MAX, 10).unwrap();
        for k in 0..100_000 {
            l.try_acquire(&k, 1).unwrap();
        }
        assert!(l.len() <= l.capacity());
        assert!(l.try_acquire(&u64::MAX, 1).is_err(), "still limited");
    }

    #[test]
    fn peek_and_refund() {
        let (l, _clock) = limiter(10, 2, 100);
        assert!(l.decide(&7, 2, false).is_ok());
        assert!(l.is_empty(), "peek stores nothing");
        l.decide(&7, 2, true).unwrap();
        assert!(l.decide(&7, 1, false).is_err());
        l.refund(&7, 1);
        assert!(l.decide(&7, 1, false).is_ok());
    }
}
