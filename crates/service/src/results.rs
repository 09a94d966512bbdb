//! [`ResultStore`]: where the results of asynchronous purchases are kept for their time-to-live,
//! in this process ([`AsyncResults`]) or in Redis (`RedisResults`, feature `redis`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::ServiceError;

/// The state of an asynchronous purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where asynchronous purchase results are kept for their time-to-live.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Records a status (replacing the previous one).
    ///
    /// # Errors
    /// The store failed.
    async fn put(&self, id: &str, status: &AsyncStatus) -> Result<(), ResultStoreError>;
    /// The status of a request, `None` when unknown or expired.
    ///
    /// # Errors
    /// The store failed.
    async fn get(&self, id: &str) -> Result<Option<AsyncStatus>, ResultStoreError>;
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

/// Results of asynchronous purchases in this process, kept for a time-to-live (embedded mode).
pub struct AsyncResults {
    ttl: Duration,
    map: Mutex<HashMap<String, (AsyncStatus, Instant)>>,
}

impl AsyncResults {
    /// Keeps each result for `ttl` after its last update.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records a status.
    pub fn put(&self, id: &str, status: AsyncStatus) {
        let now = Instant::now();
        let mut map = self.map.lock();
        // Amortised expiry: sweep when the map doubles past a small floor.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
        }
        map.insert(id.to_owned(), (status, now));
    }

    /// Forgets a request.
    pub fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }

    /// The status of a request, `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<AsyncStatus> {
        let map = self.map.lock();
        map.get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(s, _)| s.clone())
    }

    /// Requests still pending.
    pub fn pending(&self) -> usize {
        self.map
            .lock()
            .values()
            .filter(|(s, _)| *s == AsyncStatus::Pending)
            .count()
    }
}

#[async_trait]
impl ResultStore for AsyncResults {
    async fn put(&self, id: &str, status: &AsyncStatus) -> Result<(), ResultStoreError> {
        AsyncResults::put(self, id, status.clone());
        Ok(())
    }
    async fn get(&self, id: &str) -> Result<Option<AsyncStatus>, ResultStoreError> {
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
    async fn put(&self, id: &str, status: &AsyncStatus) -> Result<(), ResultStoreError> {
        let json = serde_json::to_string(status).map_err(|e| ResultStoreError(e.to_string()))?;
        self.client
            .set_px(&self.key(id), &json, self.ttl)
            .await
            .map_err(|e| ResultStoreError(e.to_string()))
    }

    async fn get(&self, id: &str) -> Result<Option<AsyncStatus>, ResultStoreError> {
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
