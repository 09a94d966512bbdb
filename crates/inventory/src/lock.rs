//! [`RedisLock`]: a distributed lock with fencing tokens, on one Redis server.

use std::time::Duration;

use fred::types::{Key, Value};

use crate::InventoryError;
use crate::redis::RedisClient;
use crate::redis::functions::op;

/// A named lock on Redis, with a fencing token per acquisition.
///
/// # Guarantees and limits
/// - Mutual exclusion on one Redis server: `SET key token NX PX ttl` admits one holder; release
///   and extend are compare-and-act scripts keyed on the holder's random token, so a holder whose
///   lock expired can neither release nor extend a lock someone else now holds.
/// - The lock expires after its time-to-live: a holder that pauses longer than the TTL (GC, swap,
///   a stalled network) may still believe it holds the lock. That is why every acquisition also
///   returns a **fencing token**, strictly increasing per lock: pass it to the resource you
///   protect and have the resource refuse tokens older than the newest it has seen.
/// - Single Redis instance only. With asynchronous replication, a failover can lose a lock that
///   was granted on the old primary and not yet replicated: two holders may then coexist until
///   the TTL runs out. The fencing counter is itself a replicated key, so after such a failover
///   tokens stay increasing only if the counter's last increments were replicated. Use fencing
///   at the resource when correctness matters; use the lock for efficiency (avoiding duplicate
///   work), not as the only safety net.
#[derive(Clone, Debug)]
pub struct RedisLock {
    client: RedisClient,
    key: Key,
    fence: Key,
    ttl: Duration,
}

/// Proof of holding a [`RedisLock`]. Dropping it does not release the lock (that needs Redis);
/// call [`LockGuard::release`], or let the TTL expire.
#[derive(Debug)]
pub struct LockGuard {
    client: RedisClient,
    key: Key,
    token: String,
    fencing_token: u64,
}

fn ttl_ms(ttl: Duration) -> Value {
    Value::Integer(i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX))
}

impl RedisLock {
    /// A lock named `name` (keys `{name}` and `{name}:fence`, hash-tagged together) that
    /// expires `ttl` after each acquisition or extension.
    pub fn new(client: RedisClient, name: &str, ttl: Duration) -> Self {
        Self {
            client,
            key: Key::from(format!("{{{name}}}")),
            fence: Key::from(format!("{{{name}}}:fence")),
            ttl,
        }
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, InventoryError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let fence: i64 = self
            .client
            .fcall(
                op::lock_acquire,
                vec![self.key.clone(), self.fence.clone()],
                vec![token.clone().into(), ttl_ms(self.ttl)],
            )
            .await?;
        Ok((fence > 0).then(|| LockGuard {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            fencing_token: u64::try_from(fence).unwrap_or(0),
        }))
    }

    /// Takes the lock, retrying every `retry` (tokio time) until `wait` has passed.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn acquire(
        &self,
        wait: Duration,
        retry: Duration,
    ) -> Result<Option<LockGuard>, InventoryError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(g) = self.try_acquire().await? {
                return Ok(Some(g));
            }
            if tokio::time::Instant::now() + retry > deadline {
                return Ok(None);
            }
            tokio::time::sleep(retry).await;
        }
    }
}

impl LockGuard {
    /// The fencing token of this acquisition: larger than every earlier one of the same lock.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Releases the lock. Returns false when it had already been lost (expired or taken over):
    /// then nothing was deleted.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn release(self) -> Result<bool, InventoryError> {
        let n: i64 = self
            .client
            .fcall(
                op::lock_release,
                vec![self.key.clone()],
                vec![self.token.clone().into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets the lock's remaining time to `ttl`. Returns false when it had already been lost.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, InventoryError> {
        let n: i64 = self
            .client
            .fcall(
                op::lock_extend,
                vec![self.key.clone()],
                vec![self.token.clone().into(), ttl_ms(ttl)],
            )
            .await?;
        Ok(n == 1)
    }
}
