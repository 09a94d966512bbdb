//! An inventory for tests of the purchase path's protections.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use seckill_inventory::{
    Activity, CancelOutcome, Inventory, InventoryError, InventoryStats, MemoryInventory, OrderId,
    OutboxEntry, PrewarmOutcome, PurchaseOutcome, PurchaseRequest, RecordedSale,
};
use seckill_service::Components;

/// An inventory whose purchases wait for a gate (to hold the request queue's slots) or fail (a
/// backend outage), delegating to the in-process inventory otherwise.
pub struct Faulty {
    pub inner: MemoryInventory,
    pub gate: tokio::sync::Semaphore,
    pub gated: AtomicBool,
    pub failing: AtomicBool,
    pub calls: AtomicU64,
}

#[async_trait]
impl Inventory for Faulty {
    async fn prewarm(&self, a: &Activity, force: bool) -> Result<PrewarmOutcome, InventoryError> {
        self.inner.prewarm(a, force).await
    }
    async fn restore(
        &self,
        a: &Activity,
        sale: &RecordedSale,
    ) -> Result<PrewarmOutcome, InventoryError> {
        self.inner.restore(a, sale).await
    }
    async fn purchase(&self, r: &PurchaseRequest) -> Result<PurchaseOutcome, InventoryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(InventoryError::Backend("connection refused".into()));
        }
        if self.gated.load(Ordering::SeqCst) {
            self.gate.acquire().await.unwrap().forget();
        }
        self.inner.purchase(r).await
    }
    async fn activity(&self, p: u64) -> Result<Option<Activity>, InventoryError> {
        self.inner.activity(p).await
    }
    async fn stats(&self, p: u64) -> Result<Option<InventoryStats>, InventoryError> {
        self.inner.stats(p).await
    }
    async fn purchase_of(&self, p: u64, u: u64) -> Result<Option<OrderId>, InventoryError> {
        self.inner.purchase_of(p, u).await
    }
    async fn cancel(&self, o: OrderId) -> Result<CancelOutcome, InventoryError> {
        self.inner.cancel(o).await
    }
    async fn outbox_read(&self, m: usize, b: Duration) -> Result<Vec<OutboxEntry>, InventoryError> {
        self.inner.outbox_read(m, b).await
    }
    async fn outbox_ack(&self, ids: &[String]) -> Result<(), InventoryError> {
        self.inner.outbox_ack(ids).await
    }
    async fn outbox_len(&self) -> Result<u64, InventoryError> {
        self.inner.outbox_len().await
    }
    async fn ping(&self) -> Result<(), InventoryError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(InventoryError::Backend("connection refused".into()));
        }
        Ok(())
    }
}

impl Faulty {
    /// A new shared instance, neither gated nor failing.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl Default for Faulty {
    fn default() -> Self {
        Self {
            inner: MemoryInventory::new(),
            gate: tokio::sync::Semaphore::new(0),
            gated: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        }
    }
}

pub fn with(inv: Arc<Faulty>) -> Components {
    Components {
        inventory: inv,
        ..Components::embedded()
    }
}
