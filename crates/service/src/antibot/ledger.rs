//! [`TokenLedger`]: what makes tokens and challenges single-use; [`MemoryLedger`] in this
//! process, `RedisLedger` shared by every instance (feature `redis`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Why the ledger could not tell whether an id was used. Callers answer "try again", never
/// "refused" and never "accepted".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Every slot holds an unexpired id.
    #[error("ledger full: {capacity} unexpired ids")]
    Full {
        /// The ledger's capacity.
        capacity: usize,
    },
    /// The backend failed (its message).
    #[error("ledger backend: {0}")]
    Backend(String),
}

/// Records ids (of tokens, of challenges) used once.
///
/// Implementations must guarantee that, among all callers sharing the ledger, exactly one
/// `consume` of an id answers `Ok(true)` while the id is remembered, and that an id is
/// remembered for at least `ttl` after that call. An implementation that cannot decide answers
/// an error, never `true`.
#[async_trait]
pub trait TokenLedger: Send + Sync {
    /// Marks `id` used for `ttl`: `true` when this is its first use, `false` when it was used.
    ///
    /// # Errors
    /// The ledger cannot tell (full, backend down).
    async fn consume(&self, id: &str, ttl: Duration) -> Result<bool, LedgerError>;
}

/// A ledger in this process, bounded: it holds at most `capacity` unexpired ids, and when full
/// refuses new ones ([`LedgerError::Full`]) rather than grow or forget one early. Ids expire on
/// tokio's clock, so tests can pause and advance it. Only for a single instance: behind a load
/// balancer every instance needs the same ledger (`RedisLedger`).
#[derive(Debug)]
pub struct MemoryLedger {
    capacity: NonZeroUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Id → when it expires.
    ids: HashMap<Arc<str>, Instant>,
    /// The same ids by expiry, soonest first: exactly one entry per id in `ids`.
    by_expiry: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

impl State {
    fn prune(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.by_expiry.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.by_expiry.pop() {
                self.ids.remove(&id);
            }
        }
    }
}

impl MemoryLedger {
    /// The capacity of [`MemoryLedger::default`]: about the tokens one instance issues within a
    /// token's lifetime at a sale's peak.
    pub const DEFAULT_CAPACITY: NonZeroUsize = match NonZeroUsize::new(100_000) {
        Some(n) => n,
        None => panic!("zero"),
    };

    /// A ledger holding at most `capacity` unexpired ids.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Unexpired ids held.
    pub fn len(&self) -> usize {
        let mut s = self.state.lock();
        s.prune(Instant::now());
        s.ids.len()
    }

    /// Whether no unexpired id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn consume_now(&self, id: &str, ttl: Duration) -> Result<bool, LedgerError> {
        let now = Instant::now();
        let mut s = self.state.lock();
        s.prune(now);
        if s.ids.contains_key(id) {
            return Ok(false);
        }
        if s.ids.len() >= self.capacity.get() {
            return Err(LedgerError::Full {
                capacity: self.capacity.get(),
            });
        }
        // Past the end of tokio's clock means never within this process's life.
        let until = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let id: Arc<str> = Arc::from(id);
        s.ids.insert(id.clone(), until);
        s.by_expiry.push(Reverse((until, id)));
        Ok(true)
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl TokenLedger for MemoryLedger {
    async fn consume(&self, id: &str, ttl: Duration) -> Result<bool, LedgerError> {
        self.consume_now(id, ttl)
    }
}

/// A ledger in Redis, shared by every instance using the same server and prefix: one key
/// `{prefix}:antibot:{id}` per used id, written with `SET NX PX`, so the first writer wins and
/// Redis expires it after the time-to-live.
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
pub struct RedisLedger {
    client: seckill_inventory::RedisClient,
    prefix: String,
}

#[cfg(feature = "redis")]
impl RedisLedger {
    /// A ledger under `prefix` on `client`'s server.
    pub fn new(client: seckill_inventory::RedisClient, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
        }
    }

    /// The key holding `id`.
    pub fn key(&self, id: &str) -> String {
        format!("{}:antibot:{id}", self.prefix)
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl TokenLedger for RedisLedger {
    async fn consume(&self, id: &str, ttl: Duration) -> Result<bool, LedgerError> {
        self.client
            .set_nx_px(&self.key(id), "1", ttl)
            .await
            .map_err(|e| LedgerError::Backend(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_id_is_used_once_until_it_expires() {
        let l = MemoryLedger::default();
        let ttl = Duration::from_secs(10);
        assert_eq!(l.consume("a", ttl).await, Ok(true));
        assert_eq!(l.consume("a", ttl).await, Ok(false));
        assert_eq!(l.consume("b", ttl).await, Ok(true));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(l.consume("a", ttl).await, Ok(false), "still remembered");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.len(), 0, "both expired");
        assert_eq!(l.consume("a", ttl).await, Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn the_heap_and_the_map_stay_one_to_one() {
        let l = MemoryLedger::new(NonZeroUsize::new(3).unwrap());
        for round in 0..5u64 {
            for id in ["x", "y", "z"] {
                assert_eq!(
                    l.consume(id, Duration::from_secs(1 + round)).await,
                    Ok(true)
                );
            }
            assert!(l.consume("w", Duration::from_secs(1)).await.is_err());
            tokio::time::advance(Duration::from_secs(1 + round)).await;
            let s = l.state.lock();
            assert_eq!((s.ids.len(), s.by_expiry.len()), (3, 3));
            drop(s);
            assert!(l.is_empty());
        }
        assert_eq!(
            l.consume("forever", Duration::MAX).await,
            Ok(true),
            "no overflow"
        );
    }
}
