//! The reconciler: compares a product's sale in Redis (stock, buyers, outbox) with the order
//! store, which is the record, and repairs Redis from it on request — the specification's
//! "repair stock data" lever, made safe.

use seckill_inventory::{
    Inventory, InventoryError, OrderId, PrewarmOutcome, RecordedOrder, RecordedSale, RedisInventory,
};
use seckill_orders::{OrderError, OrderStore};
use serde::Serialize;

/// What the reconciler found of one product (and did, with `repair`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The product.
    pub product_id: u64,
    /// The epoch Redis holds.
    pub epoch: u64,
    /// Items sold and not cancelled, by Redis (`initial_stock − remaining_stock`).
    pub sold: u64,
    /// Buyers, by Redis.
    pub buyers: u64,
    /// Sales in Redis's outbox, not yet handed to the broker.
    pub outbox_pending: u64,
    /// Live orders of the epoch in the order store.
    pub stored_orders: u64,
    /// Their items.
    pub stored_items: u64,
    /// `sold − stored_items − outbox_pending`: items Redis counts as sold that the store does
    /// not hold and the outbox does not carry. Positive while sales are on their way from the
    /// broker to the store; it stays so when a sale was lost, and is negative when Redis
    /// forgot sales (or was edited by hand). Zero when the books agree.
    pub unaccounted_items: i64,
    /// `buyers − stored_orders − outbox_pending`, the same for buyers.
    pub unaccounted_buyers: i64,
    /// Whether Redis was rebuilt from the order store.
    pub repaired: bool,
}

/// Why a reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Redis holds no activity of the product.
    #[error("Redis holds no activity of product {0}")]
    UnknownProduct(u64),
    /// A repair was asked while sales are in the outbox: it would forget them.
    #[error(
        "product {product_id} has {pending} sales in the outbox: repair once they are delivered"
    )]
    InTransit {
        /// The product.
        product_id: u64,
        /// Sales in the outbox.
        pending: u64,
    },
    /// Redis failed.
    #[error("inventory: {0}")]
    Inventory(#[from] InventoryError),
    /// The order store failed.
    #[error("order store: {0}")]
    Orders(#[from] OrderError),
}

/// Compares product `product_id` in `inventory` with `orders`, exports the difference as
/// `seckill_inventory_unaccounted_items{product_id}`, and with `repair` (refused while the
/// outbox holds sales of the product) rebuilds its stock and buyers in Redis from the live
/// orders stored for its epoch.
///
/// Run a repair when the pipeline is quiet: a sale between the broker and the order store is in
/// neither the outbox nor the store, and a repair forgets it (its buyer could buy again).
///
/// # Errors
/// [`ReconcileError`].
pub async fn reconcile(
    inventory: &RedisInventory,
    orders: &dyn OrderStore,
    product_id: u64,
    repair: bool,
) -> Result<Drift, ReconcileError> {
    let (Some(activity), Some(stats)) = (
        inventory.activity(product_id).await?,
        inventory.stats(product_id).await?,
    ) else {
        return Err(ReconcileError::UnknownProduct(product_id));
    };
    let live = orders.live_orders(product_id, stats.epoch).await?;
    let stored_items: u64 = live.iter().map(|o| u64::from(o.quantity)).sum();
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut drift = Drift {
        product_id,
        epoch: stats.epoch,
        sold: stats.sold,
        buyers: stats.buyers,
        outbox_pending: stats.outbox_pending,
        stored_orders: live.len() as u64,
        stored_items,
        unaccounted_items: signed(stats.sold) - signed(stored_items) - signed(stats.outbox_pending),
        unaccounted_buyers: signed(stats.buyers)
            - signed(live.len() as u64)
            - signed(stats.outbox_pending),
        repaired: false,
    };
    metrics::gauge!("seckill_inventory_unaccounted_items", "product_id" => product_id.to_string())
        .set(drift.unaccounted_items as f64);
    if repair && (drift.unaccounted_items != 0 || drift.unaccounted_buyers != 0) {
        if stats.outbox_pending > 0 {
            return Err(ReconcileError::InTransit {
                product_id,
                pending: stats.outbox_pending,
            });
        }
        let sale = RecordedSale {
            epoch: stats.epoch,
            orders: live
                .iter()
                .filter_map(|o| {
                    Some(RecordedOrder {
                        order_id: o.order_id.parse::<OrderId>().ok()?,
                        user_id: o.user_id,
                        quantity: o.quantity,
                    })
                })
                .collect(),
        };
        let outcome = inventory.repair(&activity, &sale).await?;
        tracing::warn!(product_id, ?outcome, before = ?drift, "reconciler repaired Redis from the order store");
        if let PrewarmOutcome::Restored { .. } = outcome {
            drift.repaired = true;
        }
    }
    Ok(drift)
}
