//! [`ResultStore`]: where the results of asynchronous purchases are kept for their time-to-live,
//! in this process ([`AsyncResults`]) or in Redis (`RedisResults`, feature `redis`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ServiceError;

/// The state of an asynchronous purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AsyncStatus {
    /// Accepted, not run yet.
    Pending,
    /// Sold.
    Success {
        /// The order.
        order_id: String,
        /// Stock left after the sale.
        remaining_stock: u64,
    },
    /// Not sold.
    Failed {
        /// The code the synchronous purchase would have answered ([`codes`](crate::codes)).
        code: i32,
        /// Why.
        reason: String,
    },
}

impl AsyncStatus {
    /// The failed status a purchase error answers with: the same code and message the
    /// synchronous purchase would have answered.
    pub fn failed(e: &ServiceError) -> Self {
        Self::Failed {
            code: e.code(),
            reason: e.to_string(),
        }
    }
}

/// An asynchronous purchase's state with the buyer it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncResult {
    /// The buyer who made the request: only they (or an operator) may read it.
    pub owner: u64,
    /// Its state.
    #[serde(flatten)]
    pub status: AsyncStatus,
}

/// Where asynchronous purchase results are kept for their time-to-live.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Records a result (replacing the previous one).
    ///
    /// # Errors
    /// The store failed, or is full.
    async fn put(&self, id: &str, result: &AsyncResult) -> Result<(), ResultStoreError>;
    /// The result of a request, `None` when unknown or expired.
    ///
    /// # Errors
    /// The store failed.
    async fn get(&self, id: &str) -> Result<Option<AsyncResult>, ResultStoreError>;
    /// Forgets a request.
    ///
    /// # Errors
    /// The store failed.
    async fn remove(&self, id: &str) -> Result<(), ResultStoreError>;
    /// Requests still pending, where the store can count them cheaply.
    fn pending(&self) -> Option<usize>;
}

/// A failure of a [`ResultStore`].
#[derive(Debug, thiserror::Error)]
#[error("result store failed: {0}")]
pub struct ResultStoreError(pub String);

/// Results of asynchronous purchases in this process (embedded mode), each kept for a
/// time-to-live after its last update, at most `capacity` of them: when full, the oldest
/// finished or expired results go first, and a store holding only pending requests refuses new
/// ones rather than growing.
pub struct AsyncResults {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Held>,
}

struct Held {
    map: HashMap<String, (AsyncResult, Instant)>,
    /// Pending ids, oldest first, and finished ids, oldest first. An id moves from the first
    /// to the second when its result comes; what it leaves behind (and removed ids) is stale
    /// and dropped when met.
    pending_order: VecDeque<String>,
    finished_order: VecDeque<String>,
    pending: usize,
}

impl Held {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity),
            pending_order: VecDeque::new(),
            finished_order: VecDeque::new(),
            pending: 0,
        }
    }

    fn forget(&mut self, id: &str) -> Option<AsyncResult> {
        let (r, _) = self.map.remove(id)?;
        if r.status == AsyncStatus::Pending {
            self.pending -= 1;
        }
        Some(r)
    }

    /// Frees one place: the oldest finished result, else the oldest pending request if it
    /// expired. O(1) but for stale ids, each met once.
    fn evict_one(&mut self, now: Instant, ttl: Duration) -> bool {
        while let Some(id) = self.finished_order.pop_front() {
            if self
                .map
                .get(&id)
                .is_some_and(|(r, _)| r.status != AsyncStatus::Pending)
            {
                self.forget(&id);
                return true;
            }
        }
        while let Some(id) = self.pending_order.front() {
            match self.map.get(id) {
                Some((r, at)) if r.status == AsyncStatus::Pending => {
                    if now.saturating_duration_since(*at) < ttl {
                        return false;
                    }
                    let id = self.pending_order.pop_front().expect("a front");
                    self.forget(&id);
                    return true;
                }
                _ => {
                    self.pending_order.pop_front();
                }
            }
        }
        false
    }

    /// Drops stale ids once they outnumber the results, so churn cannot grow the queues.
    fn compact(&mut self) {
        let Held {
            map,
            pending_order,
            finished_order,
            ..
        } = self;
        if pending_order.len() + finished_order.len() > 2 * map.len() + 1024 {
            pending_order.retain(|id| {
                map.get(id)
                    .is_some_and(|(r, _)| r.status == AsyncStatus::Pending)
            });
            finished_order.retain(|id| {
                map.get(id)
                    .is_some_and(|(r, _)| r.status != AsyncStatus::Pending)
            });
        }
    }
}

/// Results held by default, at most.
pub const DEFAULT_RESULT_CAPACITY: usize = 100_000;

impl AsyncResults {
    /// Keeps each result for `ttl` after its last update, [`DEFAULT_RESULT_CAPACITY`] at most.
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, DEFAULT_RESULT_CAPACITY)
    }

    /// Keeps each result for `ttl`, `capacity` (at least 1) at most.
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Held::new(capacity.clamp(1, DEFAULT_RESULT_CAPACITY))),
        }
    }

    /// Records a result.
    ///
    /// # Errors
    /// Full of pending requests.
    pub fn put(&self, id: &str, result: AsyncResult) -> Result<(), ResultStoreError> {
        let now = Instant::now();
        let mut held = self.inner.lock();
        let pending = result.status == AsyncStatus::Pending;
        let was_pending = match held.forget(id) {
            Some(previous) => previous.status == AsyncStatus::Pending,
            None => {
                if held.map.len() >= self.capacity && !held.evict_one(now, self.ttl) {
                    return Err(ResultStoreError(format!(
                        "{} asynchronous purchases are pending: the result store is full",
                        held.pending
                    )));
                }
                false
            }
        };
        match (was_pending, pending) {
            (false, true) => held.pending_order.push_back(id.to_owned()),
            (_, false) => held.finished_order.push_back(id.to_owned()),
            (true, true) => {}
        }
        if pending {
            held.pending += 1;
        }
        held.map.insert(id.to_owned(), (result, now));
        held.compact();
        Ok(())
    }

    /// Forgets a request.
    pub fn remove(&self, id: &str) {
        self.inner.lock().forget(id);
    }

    /// The result of a request, `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<AsyncResult> {
        let held = self.inner.lock();
        held.map
            .get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(r, _)| r.clone())
    }

    /// Requests still pending.
    pub fn pending(&self) -> usize {
        self.inner.lock().pending
    }

    /// Results held.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether no result is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ResultStore for AsyncResults {
    async fn put(&self, id: &str, result: &AsyncResult) -> Result<(), ResultStoreError> {
        AsyncResults::put(self, id, result.clone())
    }
    async fn get(&self, id: &str) -> Result<Option<AsyncResult>, ResultStoreError> {
        Ok(AsyncResults::get(self, id))
    }
    async fn remove(&self, id: &str) -> Result<(), ResultStoreError> {
        AsyncResults::remove(self, id);
        Ok(())
    }
    fn pending(&self) -> Option<usize> {
        Some(AsyncResults::pending(self))
    }
}

/// Results of asynchronous purchases in Redis, so the instance a client polls need not be the
/// one that ran its purchase. Keys `{prefix}:result:{request_id}`, JSON values, expiring after
/// the time-to-live.
#[cfg(feature = "redis")]
pub struct RedisResults {
    client: seckill_inventory::RedisClient,
    prefix: String,
    ttl: Duration,
}

#[cfg(feature = "redis")]
impl RedisResults {
    /// Results under `prefix`, kept for `ttl`.
    pub fn new(client: seckill_inventory::RedisClient, prefix: &str, ttl: Duration) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            ttl,
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:result:{id}", self.prefix)
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl ResultStore for RedisResults {
    async fn put(&self, id: &str, result: &AsyncResult) -> Result<(), ResultStoreError> {
        let json = serde_json::to_string(result).map_err(|e| ResultStoreError(e.to_string()))?;
        self.client
            .set_px(&self.key(id), &json, self.ttl)
            .await
            .map_err(|e| ResultStoreError(e.to_string()))
    }

    async fn get(&self, id: &str) -> Result<Option<AsyncResult>, ResultStoreError> {
        let Some(json) = self
            .client
            .get_string(&self.key(id))
            .await
            .map_err(|e| ResultStoreError(e.to_string()))?
        else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| ResultStoreError(e.to_string()))
    }

    async fn remove(&self, id: &str) -> Result<(), ResultStoreError> {
        self.client
            .delete(&[self.key(id)])
            .await
            .map(|_| ())
            .map_err(|e| ResultStoreError(e.to_string()))
    }

    fn pending(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(owner: u64) -> AsyncResult {
        AsyncResult {
            owner,
            status: AsyncStatus::Pending,
        }
    }

    fn done(owner: u64) -> AsyncResult {
        AsyncResult {
            owner,
            status: AsyncStatus::Success {
                order_id: "1-1".into(),
                remaining_stock: 0,
            },
        }
    }

    #[test]
    fn a_full_store_evicts_the_oldest_finished_and_refuses_when_all_are_pending() {
        let r = AsyncResults::with_capacity(Duration::from_secs(600), 3);
        r.put("a", pending(1)).unwrap();
        r.put("b", pending(2)).unwrap();
        r.put("c", pending(3)).unwrap();
        assert!(
            r.put("d", pending(4)).is_err(),
            "only pending requests: full"
        );
        assert_eq!((r.len(), r.pending()), (3, 3));
        // Finishing one makes room; the finished one goes first.
        r.put("b", done(2)).unwrap();
        assert_eq!(r.pending(), 2);
        r.put("d", pending(4)).unwrap();
        assert_eq!(r.get("b"), None, "the oldest finished result was evicted");
        assert_eq!(r.get("a"), Some(pending(1)), "pending ones stay");
        assert_eq!((r.len(), r.pending()), (3, 3));
        // Updates of held ids never count as new entries.
        for _ in 0..10 {
            r.put("a", pending(1)).unwrap();
        }
        r.remove("a");
        assert_eq!((r.len(), r.pending()), (2, 2));
    }

    #[test]
    fn churn_keeps_the_arrival_lists_bounded() {
        let r = AsyncResults::with_capacity(Duration::from_secs(600), 4);
        for i in 0..10_000 {
            let id = format!("r{i}");
            r.put(&id, pending(1)).unwrap();
            if i % 2 == 0 {
                r.put(&id, done(1)).unwrap();
            }
            r.remove(&id);
        }
        let held = r.inner.lock();
        assert!(held.pending_order.len() + held.finished_order.len() <= 2048);
        drop(held);
        assert!(r.is_empty());
    }

    #[test]
    fn an_expired_pending_request_makes_room() {
        let r = AsyncResults::with_capacity(Duration::from_millis(0), 1);
        r.put("a", pending(1)).unwrap();
        r.put("b", pending(2)).unwrap();
        assert_eq!(r.get("a"), None);
        assert_eq!(r.len(), 1);
    }
}
