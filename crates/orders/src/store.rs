//! The [`OrderStore`] trait and the in-process [`MemoryOrderStore`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::OrderError;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stored, waiting for the buyer to pay.
    AwaitingPayment,
    /// Paid.
    Paid,
    /// Cancelled; its items went back to stock.
    Cancelled,
}

/// A stored order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `"{product_id}-{seq}"`, unique.
    pub order_id: String,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items bought.
    pub quantity: u32,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// When the item sold, milliseconds since the Unix epoch.
    pub sold_at_ms: i64,
    /// When the order was stored, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The activity epoch it sold in.
    pub epoch: u64,
}

/// Durable orders.
///
/// Implementers guarantee that [`OrderStore::insert`] is idempotent by order id: inserting an
/// order id that exists changes nothing and reports `false`, whatever the concurrency.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores an order unless its id exists. Returns whether it was new.
    ///
    /// # Errors
    /// The store failed; nothing was written.
    async fn insert(&self, order: &Order) -> Result<bool, OrderError>;

    /// Finds an order by id.
    ///
    /// # Errors
    /// The store failed.
    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError>;

    /// Orders stored for a product, in every state.
    ///
    /// # Errors
    /// The store failed.
    async fn count_by_product(&self, product_id: u64) -> Result<u64, OrderError>;
}

/// Orders held in this process (embedded mode).
#[derive(Default)]
pub struct MemoryOrderStore {
    orders: RwLock<HashMap<String, Order>>,
    per_product: RwLock<HashMap<u64, AtomicU64>>,
}

impl MemoryOrderStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every order, in no particular order.
    pub fn all(&self) -> Vec<Order> {
        self.orders.read().values().cloned().collect()
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn insert(&self, order: &Order) -> Result<bool, OrderError> {
        let mut orders = self.orders.write();
        if orders.contains_key(&order.order_id) {
            return Ok(false);
        }
        orders.insert(order.order_id.clone(), order.clone());
        drop(orders);
        let counters = self.per_product.upgradable_read();
        if let Some(c) = counters.get(&order.product_id) {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut counters = parking_lot::RwLockUpgradableReadGuard::upgrade(counters);
            counters
                .entry(order.product_id)
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        Ok(self.orders.read().get(order_id).cloned())
    }

    async fn count_by_product(&self, product_id: u64) -> Result<u64, OrderError> {
        Ok(self
            .per_product
            .read()
            .get(&product_id)
            .map_or(0, |c| c.load(Ordering::Relaxed)))
    }
}
