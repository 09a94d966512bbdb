//! The order lifecycle after the sale: pay, cancel, and the sweeper that cancels unpaid orders
//! past their deadline and puts their items back on sale.
//!
//! A cancel is two steps in two systems: the order store's compare-and-set from
//! `awaiting_payment` (the single point where a racing pay and cancel are decided), then the
//! inventory's idempotent cancel, which returns the items and frees the buyer. An order
//! cancelled whose items are not back yet stays visible to the sweeper
//! ([`OrderStore::due`]) until [`OrderStore::mark_stock_returned`], so a crash between the two
//! steps delays the return, never loses it.

use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{CancelOutcome, Inventory, OrderId};
use seckill_mq::{Broker, Envelope, Message, StockChangeReason, StockChanged};
use seckill_orders::{Backoff, Order, OrderStatus, OrderStore, Transition};
use tokio_util::sync::CancellationToken;

/// Orders handled per sweep.
const SWEEP_BATCH: usize = 256;

/// A failure to return an order's items; the sweeper retries.
#[derive(Debug, thiserror::Error)]
#[error("returning the stock of order {order_id} failed: {reason}")]
pub struct ReturnFailed {
    /// The order.
    pub order_id: String,
    /// Why.
    pub reason: String,
}

/// Returns a cancelled order's items to the inventory (idempotent), records it, and publishes
/// the `StockChanged` event.
///
/// # Errors
/// A backend failed; the order stays due and the sweeper retries.
pub async fn return_stock(
    inventory: &dyn Inventory,
    orders: &dyn OrderStore,
    broker: &dyn Broker,
    order: &Order,
) -> Result<(), ReturnFailed> {
    let fail = |reason: String| ReturnFailed {
        order_id: order.order_id.clone(),
        reason,
    };
    match order.order_id.parse::<OrderId>() {
        Ok(id) => match inventory
            .cancel(id)
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            CancelOutcome::Cancelled { .. } | CancelOutcome::AlreadyCancelled => {}
            CancelOutcome::NotFound => {
                // Sold in an epoch a forced re-prewarm replaced: that stock no longer exists.
                tracing::warn!(order_id = %order.order_id, "cancelled order is not in the current activity epoch; no stock to return");
            }
        },
        // No inventory order can have this id, so no stock can come back for it; retrying
        // would only keep it at the head of the sweeper's list.
        Err(_) => {
            tracing::error!(order_id = %order.order_id, "cancelled order has a malformed id; no stock to return");
        }
    }
    orders
        .mark_stock_returned(&order.order_id)
        .await
        .map_err(|e| fail(e.to_string()))?;
    metrics::counter!("seckill_orders_cancelled_total").increment(1);
    let event = Envelope::new(
        format!("scx-{}", order.order_id),
        Message::StockChanged(StockChanged {
            product_id: order.product_id,
            delta: i64::from(order.quantity),
            reason: StockChangeReason::Cancelled,
            order_id: order.order_id.clone(),
        }),
    );
    if let Err(e) = broker.publish(&event).await {
        // The stock is back; only the notification is lost, and the stats read the inventory.
        tracing::warn!(error = %e, order_id = %order.order_id, "publishing the stock return failed");
    }
    Ok(())
}

/// One pass of the sweeper: cancels unpaid orders past their deadline and returns the stock of
/// cancelled ones. Returns how many orders had their stock returned.
///
/// # Errors
/// The order store could not be read.
pub async fn sweep_once(
    inventory: &dyn Inventory,
    orders: &dyn OrderStore,
    broker: &dyn Broker,
) -> Result<usize, seckill_orders::OrderError> {
    // The store's clock, on which the deadlines were set.
    let now = orders.now_ms().await?;
    let due = orders.due(now, SWEEP_BATCH).await?;
    let mut returned = 0;
    for order in due {
        let order = if order.status == OrderStatus::AwaitingPayment {
            match orders.cancel(&order.order_id, now).await? {
                Transition::Done(o) => {
                    metrics::counter!("seckill_orders_expired_total").increment(1);
                    o
                }
                Transition::Final(o) if o.status == OrderStatus::Cancelled => o,
                // Paid at the last moment: the payment won.
                Transition::Final(_) | Transition::Expired(_) | Transition::NotFound => continue,
            }
        } else {
            order
        };
        match return_stock(inventory, orders, broker, &order).await {
            Ok(()) => returned += 1,
            Err(e) => tracing::warn!(error = %e, "sweeper: will retry"),
        }
    }
    Ok(returned)
}

/// Runs [`sweep_once`] every `interval` until `stop`.
pub(crate) async fn sweeper(
    inventory: Arc<dyn Inventory>,
    orders: Arc<dyn OrderStore>,
    broker: Arc<dyn Broker>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&*inventory, &*orders, &*broker).await {
            Ok(n) => {
                backoff.reset();
                if n > 0 {
                    tracing::info!(
                        returned = n,
                        "sweeper returned the stock of cancelled orders"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: reading due orders failed");
                if backoff.wait(&stop).await {
                    return;
                }
            }
        }
    }
}
