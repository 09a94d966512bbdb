//! Reading, paying and cancelling orders.

use seckill_inventory::OrderId;
use seckill_orders::{Order, OrderStatus, Transition, now_ms};

use crate::error::{Missing, Refusal, ServiceError};
use crate::lifecycle::return_stock;
use crate::{Inner, Service};

/// Parses an order id, as `1001-42`.
fn parse(raw: &str) -> Result<String, ServiceError> {
    raw.parse::<OrderId>()
        .map(|id| id.to_string())
        .map_err(|_| ServiceError::invalid_field("orderId", "must look like 1001-42"))
}

impl Inner {
    fn store_failed(&self, e: &dyn std::fmt::Display) -> ServiceError {
        self.backend("the order store", e)
    }
}

impl Service {
    /// A stored order.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a malformed id, [`Missing::Order`] when it is not stored
    /// (a new sale's order may still be in transit), "backend unavailable" when the store fails.
    pub async fn order(&self, order_id: &str) -> Result<Order, ServiceError> {
        let s = &*self.0;
        let id = parse(order_id)?;
        s.orders
            .get(&id)
            .await
            .map_err(|e| s.store_failed(&e))?
            .ok_or(ServiceError::NotFound(Missing::Order))
    }

    /// Pays an order awaiting payment. Paying a paid order again answers the order
    /// (idempotent).
    ///
    /// # Errors
    /// [`Refusal::OrderCancelled`], [`Refusal::OrderExpired`], [`Missing::Order`], and as
    /// [`Service::order`].
    pub async fn pay(&self, order_id: &str) -> Result<Order, ServiceError> {
        let s = &*self.0;
        let id = parse(order_id)?;
        match s
            .orders
            .pay(&id, now_ms())
            .await
            .map_err(|e| s.store_failed(&e))?
        {
            Transition::Done(o) => {
                metrics::counter!("seckill_orders_paid_total").increment(1);
                Ok(o)
            }
            Transition::Final(o) if o.status == OrderStatus::Paid => Ok(o),
            Transition::Final(_) => Err(ServiceError::Refused(Refusal::OrderCancelled)),
            Transition::Expired(_) => Err(ServiceError::Refused(Refusal::OrderExpired)),
            Transition::NotFound => Err(ServiceError::NotFound(Missing::Order)),
        }
    }

    /// Cancels an order awaiting payment and puts its items back on sale. Cancelling a
    /// cancelled order again answers the order (idempotent).
    ///
    /// # Errors
    /// [`Refusal::OrderPaid`], [`Missing::Order`], and as [`Service::order`].
    pub async fn cancel(&self, order_id: &str) -> Result<Order, ServiceError> {
        let s = &*self.0;
        let id = parse(order_id)?;
        match s
            .orders
            .cancel(&id, now_ms())
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
