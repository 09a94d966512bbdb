//! The [`Inventory`] trait every stock backend implements.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Activity, CancelOutcome, InventoryError, InventoryStats, OrderId, OutboxEntry, PrewarmOutcome,
    PurchaseOutcome, PurchaseRequest, RecordedSale,
};

/// Atomic flash-sale stock.
///
/// Implementers guarantee, under any concurrency and across processes sharing the backend:
/// - a purchase checks, in this order, that the activity exists, is active and inside its time
///   window, that the quantity is in 1..=`per_user_limit`, that the user is not a buyer yet, and
///   that the stock covers the quantity; then it deducts the stock, records the buyer, allocates an
///   order id and appends the sale to the outbox — all as one atomic step;
/// - the stock never goes below zero and a user is a buyer of a product at most once;
/// - a purchase with an idempotency key already seen for the product returns the first answer;
/// - every successful sale appears in the outbox until acknowledged ([`Inventory::outbox_ack`]);
/// - cancel is idempotent per order id.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Loads an activity before its sale. The same activity again changes nothing; a different one
    /// replaces it (new epoch, stock and buyers afresh) unless the loaded sale has started and
    /// `force` is false.
    ///
    /// # Errors
    /// [`InventoryError::InvalidActivity`] for a bad field, or a backend failure.
    async fn prewarm(
        &self,
        activity: &Activity,
        force: bool,
    ) -> Result<PrewarmOutcome, InventoryError>;

    /// Loads `activity` as `sale` records it, for a backend that forgot it (a restart without
    /// persistence, a failover, a flush) while the order store kept its orders: the activity
    /// carries `sale.epoch`, its stock is the activity's less the live orders' items, their
    /// buyers stay buyers (and may cancel), and the order sequence continues past their ids.
    /// With an activity loaded for the product already it changes nothing and answers
    /// [`PrewarmOutcome::Unchanged`] with the loaded epoch. A sale with no orders loads the
    /// activity afresh under `sale.epoch` (an epoch counter that forgot continues past it).
    ///
    /// # Errors
    /// [`InventoryError::InvalidActivity`] for a bad field, or a backend failure.
    async fn restore(
        &self,
        activity: &Activity,
        sale: &RecordedSale,
    ) -> Result<PrewarmOutcome, InventoryError>;

    /// Attempts one purchase.
    ///
    /// # Errors
    /// Only backend failures; rejections are [`PurchaseOutcome`] values.
    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, InventoryError>;

    /// The loaded activity of a product.
    ///
    /// # Errors
    /// Backend failures.
    async fn activity(&self, product_id: u64) -> Result<Option<Activity>, InventoryError>;

    /// Counters of a product's sale, `None` for an unknown product.
    ///
    /// # Errors
    /// Backend failures.
    async fn stats(&self, product_id: u64) -> Result<Option<InventoryStats>, InventoryError>;

    /// The order of the user's purchase of the product (in the current epoch), if any.
    ///
    /// # Errors
    /// Backend failures.
    async fn purchase_of(
        &self,
        product_id: u64,
        user_id: u64,
    ) -> Result<Option<OrderId>, InventoryError>;

    /// Cancels an order: its items go back to stock and its buyer may buy again.
    ///
    /// # Errors
    /// Backend failures.
    async fn cancel(&self, order_id: OrderId) -> Result<CancelOutcome, InventoryError>;

    /// Claims about `max` outbox entries (one per sale) not acknowledged yet, waiting up to
    /// `block` for one to appear. An entry claimed but not acknowledged is offered again after
    /// the backend's reclaim timeout, so a relay that dies loses nothing. Sales the backend
    /// stored together (one call's batch) come together and share an id; acknowledging that id
    /// acknowledges them all, so a read may return a little more than `max`.
    ///
    /// # Errors
    /// Backend failures.
    async fn outbox_read(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, InventoryError>;

    /// Acknowledges delivered outbox entries; unknown ids are ignored.
    ///
    /// # Errors
    /// Backend failures.
    async fn outbox_ack(&self, ids: &[String]) -> Result<(), InventoryError>;

    /// Sales in the outbox not acknowledged yet, over all products.
    ///
    /// # Errors
    /// Backend failures.
    async fn outbox_len(&self) -> Result<u64, InventoryError>;

    /// A cheap liveness check of the backend.
    ///
    /// # Errors
    /// The backend is unreachable.
    async fn ping(&self) -> Result<(), InventoryError>;

    /// The products with a loaded sale (for per-product gauges). The default knows none.
    ///
    /// # Errors
    /// Backend failures.
    async fn products(&self) -> Result<Vec<u64>, InventoryError> {
        Ok(Vec::new())
    }

    /// The backend's connections, `(connected, configured)`, when it keeps a pool.
    fn connections(&self) -> Option<(usize, usize)> {
        None
    }
}
