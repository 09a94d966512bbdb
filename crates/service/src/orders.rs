//! Reading, paying and cancelling orders.

use seckill_inventory::OrderId;
use seckill_orders::{Order, OrderStatus, Transition};

use crate::error::{Missing, Refusal, ServiceError};
use crate::lifecycle::return_stock;
use crate::{Caller, Inner, Service};

/// Parses an order id, as `1001-42`: canonical (no sign, no leading zero), each part below 2^63.
fn parse(raw: &str) -> Result<String, ServiceError> {
    raw.parse::<OrderId>()
        .ok()
        .filter(|id| {
            id.product_id <= i64::MAX as u64 && id.seq <= i64::MAX as u64 && id.to_string() == raw
        })
        .map(|id| id.to_string())
        .ok_or_else(|| ServiceError::invalid_field("orderId", "must look like 1001-42"))
}

impl Inner {
    pub(crate) fn store_failed(&self, e: &dyn std::fmt::Display) -> ServiceError {
        self.backend("the order store", e)
    }

    /// The order, when `caller` may see it; anyone else learns nothing, not even that it
    /// exists.
    async fn visible_order(&self, caller: &Caller, id: &str) -> Result<Order, ServiceError> {
        self.orders
            .get(id)
            .await
            .map_err(|e| self.store_failed(&e))?
            .filter(|o| caller.may_see(o.user_id))
            .ok_or(ServiceError::NotFound(Missing::Order))
    }
}

impl Service {
    /// A stored order, for its buyer or an operator.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a malformed id, [`Missing::Order`] when it is not stored
    /// (a new sale's order may still be in transit) or belongs to someone else, "backend
    /// unavailable" when the store fails.
    pub async fn order(&self, caller: &Caller, order_id: &str) -> Result<Order, ServiceError> {
        let id = parse(order_id)?;
        self.0.visible_order(caller, &id).await
    }

    /// Pays an order awaiting payment: the payment service's call (payment or admin role; an
    /// allowed peer in mode none). Paying a paid order again answers the order (idempotent).
    ///
    /// # Errors
    /// [`Refusal::OrderCancelled`], [`Refusal::OrderExpired`], [`Missing::Order`], a caller
    /// who is not the payment service, and as [`Service::order`].
    pub async fn pay(&self, caller: &Caller, order_id: &str) -> Result<Order, ServiceError> {
        let s = &*self.0;
        let id = parse(order_id)?;
        caller.require_payment()?;
        // The deadline was set on the store's clock; it is checked on the same one.
        let now = s.orders.now_ms().await.map_err(|e| s.store_failed(&e))?;
        match s
            .orders
            .pay(&id, now)
            .await
            .map_err(|e| s.store_failed(&e))?
        {
            Transition::Done(o) => {
                metrics::counter!("seckill_orders_paid_total").increment(1);
                tracing::info!(who = %caller, order_id = %o.order_id, "order paid");
                Ok(o)
            }
            Transition::Final(o) if o.status == OrderStatus::Paid => Ok(o),
            Transition::Final(_) => Err(ServiceError::Refused(Refusal::OrderCancelled)),
            Transition::Expired(_) => Err(ServiceError::Refused(Refusal::OrderExpired)),
            Transition::NotFound => Err(ServiceError::NotFound(Missing::Order)),
        }
    }

    /// Cancels an order awaiting payment (its buyer or an operator) and puts its items back
    /// on sale. Cancelling a cancelled order again answers the order (idempotent).
    ///
    /// # Errors
    /// [`Refusal::OrderPaid`], [`Missing::Order`], and as [`Service::order`].
    pub async fn cancel(&self, caller: &Caller, order_id: &str) -> Result<Order, ServiceError> {
        let s = &*self.0;
        let id = parse(order_id)?;
        s.visible_order(caller, &id).await?;
        let now = s.orders.now_ms().await.map_err(|e| s.store_failed(&e))?;
        match s
            .orders
            .cancel(&id, now)
            .await
            .map_err(|e| s.store_failed(&e))?
        {
            Transition::Done(mut o) => {
                // The cancellation stands from here; if returning the stock fails, the
                // sweeper finishes it.
                match return_stock(&*s.inventory, &*s.orders, &*s.broker, &o).await {
                    Ok(()) => o.stock_returned = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cancel: the sweeper will return the stock")
                    }
                }
                Ok(o)
            }
            Transition::Final(o) if o.status == OrderStatus::Cancelled => Ok(o),
            Transition::Final(_) => Err(ServiceError::Refused(Refusal::OrderPaid)),
            Transition::Expired(_) => {
                Err(s.store_failed(&"the store answered a cancel with Expired"))
            }
            Transition::NotFound => Err(ServiceError::NotFound(Missing::Order)),
        }
    }
}
