//! Prewarm input and the product views.

use chrono::{DateTime, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, InventoryError, OrderId, PrewarmOutcome, RecordedOrder, RecordedSale,
};
use serde::{Deserialize, Serialize};

use crate::error::{Missing, Refusal, ServiceError};
use crate::{Caller, Service};

/// Highest accepted price.
const MAX_PRICE: f64 = 1e10;

/// An activity as a front received it, before validation: the specification's prewarm body
/// plus `per_user_limit` (default 1) and `force` (default false).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityInput {
    /// The product (> 0).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_i64)
    )]
    pub product_id: u64,
    /// Display name, 1 to 200 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub product_name: String,
    /// Unit price, 0 to 10,000,000,000, rounded to cents.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10000000000_f64))]
    pub price: f64,
    /// Items on sale.
    pub stock: u64,
    /// RFC 3339 start of the sale.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub start_time: String,
    /// RFC 3339 end of the sale, after the start.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub end_time: String,
    /// `active` (default) or `inactive`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(active|inactive)$"))]
    pub status: Option<String>,
    /// Most items one buyer may buy (default 1).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u64))]
    pub per_user_limit: Option<u64>,
    /// Replace an activity whose sale has started: a new epoch with fresh stock and buyers.
    #[serde(default)]
    pub force: bool,
}

fn timestamp(field: &str, raw: &str) -> Result<DateTime<Utc>, ServiceError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ServiceError::invalid_field(field, "must be an RFC 3339 timestamp"))
}

impl ActivityInput {
    /// The validated activity.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the first invalid field.
    pub fn validate(&self) -> Result<Activity, ServiceError> {
        if self.product_id > i64::MAX as u64 {
            return Err(ServiceError::invalid_field(
                "product_id",
                "must be a positive integer below 2^63",
            ));
        }
        if !self.price.is_finite() || self.price < 0.0 || self.price > MAX_PRICE {
            return Err(ServiceError::invalid_field(
                "price",
                "must be a number between 0 and 10000000000",
            ));
        }
        let status = match self.status.as_deref() {
            None | Some("active") => ActivityStatus::Active,
            Some("inactive") => ActivityStatus::Inactive,
            Some(_) => {
                return Err(ServiceError::invalid_field(
                    "status",
                    "must be \"active\" or \"inactive\"",
                ));
            }
        };
        let a = Activity {
            product_id: self.product_id,
            product_name: self.product_name.clone(),
            price_cents: (self.price * 100.0).round() as u64,
            stock: self.stock,
            start_time: timestamp("start_time", &self.start_time)?,
            end_time: timestamp("end_time", &self.end_time)?,
            status,
            per_user_limit: match self.per_user_limit {
                None => 1,
                Some(n) => u32::try_from(n).unwrap_or(0),
            },
        };
        a.validate().map_err(|e| match e {
            InventoryError::InvalidActivity { field, reason } => {
                ServiceError::invalid_field(field, &reason)
            }
            _ => ServiceError::Internal,
        })?;
        Ok(a)
    }
}

/// The answer to a prewarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prewarmed {
    /// The product.
    pub product_id: u64,
    /// The activity's epoch: a forced re-prewarm starts a new one.
    pub epoch: u64,
    /// `created`, `unchanged`, `replaced`, or `restored` (the inventory had forgotten the
    /// activity and it was loaded again from the orders stored for it).
    pub result: &'static str,
    /// Items of the activity.
    pub stock: u64,
    /// For `restored`: the live orders carried over (their buyers stay buyers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_orders: Option<u64>,
    /// For `restored`: the items left on sale after them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_stock: Option<u64>,
}

/// One product's sale. The ledger `initial_stock = remaining_stock + live orders + in_transit`
/// holds at every moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductStats {
    /// The product.
    pub product_id: u64,
    /// Display name.
    pub product_name: String,
    /// `active` or `inactive`.
    pub status: &'static str,
    /// Unit price.
    pub price: f64,
    /// RFC 3339 start.
    pub start_time: String,
    /// RFC 3339 end.
    pub end_time: String,
    /// Most items per buyer.
    pub per_user_limit: u32,
    /// The activity's epoch.
    pub epoch: u64,
    /// Items at prewarm.
    pub initial_stock: u64,
    /// Items left.
    pub remaining_stock: u64,
    /// Items sold (cancelled ones included).
    pub sold: u64,
    /// Buyers holding a purchase.
    pub buyers: u64,
    /// Items returned by cancels.
    pub cancelled: u64,
    /// Orders stored.
    pub orders_created: u64,
    /// Sales waiting in the outbox.
    pub outbox_pending: u64,
    /// Items sold but not yet stored as orders.
    pub in_transit: u64,
}

/// Whether a buyer holds a purchase of a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Purchased {
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Whether they hold a purchase (in the current epoch).
    pub purchased: bool,
    /// Its order.
    pub order_id: Option<String>,
}

impl Service {
    /// Loads an activity into the inventory before its sale (the admin plane).
    ///
    /// # Errors
    /// A caller without the admin plane (see [`Caller::require_admin`]);
    /// [`ServiceError::Invalid`] for an invalid field (nothing is written),
    /// [`Refusal::SaleStarted`] when the loaded activity's sale has started and `force` is not
    /// set, "backend unavailable" when the inventory fails.
    pub async fn prewarm(
        &self,
        caller: &Caller,
        input: ActivityInput,
    ) -> Result<Prewarmed, ServiceError> {
        let s = &*self.0;
        self.authorize_admin(caller, "prewarm")?;
        let activity = input.validate()?;
        let outcome = match s.recorded_sale(&activity).await? {
            Some(sale) => s.inventory.restore(&activity, &sale).await,
            None => s.inventory.prewarm(&activity, input.force).await,
        }
        .map_err(|e| s.backend("prewarm", &e))?;
        let (mut restored_orders, mut remaining_stock) = (None, None);
        let (epoch, result) = match outcome {
            PrewarmOutcome::Created { epoch } => (epoch, "created"),
            PrewarmOutcome::Unchanged { epoch } => (epoch, "unchanged"),
            PrewarmOutcome::Replaced { epoch } => {
                // The new epoch's stock holds the earlier epoch's unpaid items: those orders
                // can no longer be paid (their stock is not returned again either).
                let now = s.orders.now_ms().await.map_err(|e| s.store_failed(&e))?;
                let voided = s
                    .orders
                    .void_before(activity.product_id, epoch, now)
                    .await
                    .map_err(|e| s.store_failed(&e))?;
                if voided > 0 {
                    tracing::warn!(
                        product_id = activity.product_id,
                        epoch,
                        voided,
                        "a forced re-prewarm voided the earlier epoch's unpaid orders"
                    );
                }
                (epoch, "replaced")
            }
            PrewarmOutcome::Restored {
                epoch,
                orders,
                remaining_stock: left,
            } => {
                metrics::counter!("seckill_activity_restores_total").increment(1);
                restored_orders = Some(orders);
                remaining_stock = Some(left);
                (epoch, "restored")
            }
            PrewarmOutcome::SaleStarted => {
                return Err(ServiceError::Refused(Refusal::SaleStarted));
            }
        };
        tracing::info!(
            who = %caller,
            product_id = activity.product_id,
            epoch,
            result,
            "activity prewarmed"
        );
        Ok(Prewarmed {
            product_id: activity.product_id,
            epoch,
            result,
            stock: activity.stock,
            restored_orders,
            remaining_stock,
        })
    }

    /// One product's sale: the activity, the stock ledger and the orders stored.
    ///
    /// # Errors
    /// [`Missing::Product`], or "backend unavailable".
    pub async fn product_stats(&self, product_id: u64) -> Result<ProductStats, ServiceError> {
        let s = &*self.0;
        let (activity, stats) = tokio::try_join!(
            s.inventory.activity(product_id),
            s.inventory.stats(product_id)
        )
        .map_err(|e| s.backend("reading stats", &e))?;
        let (Some(a), Some(st)) = (activity, stats) else {
            return Err(ServiceError::NotFound(Missing::Product));
        };
        let counts = s
            .orders
            .counts(product_id, st.epoch)
            .await
            .map_err(|e| s.backend("counting orders", &e))?;
        Ok(ProductStats {
            product_id,
            product_name: a.product_name,
            status: a.status.as_str(),
            price: a.price_cents as f64 / 100.0,
            start_time: a.start_time.to_rfc3339(),
            end_time: a.end_time.to_rfc3339(),
            per_user_limit: a.per_user_limit,
            epoch: st.epoch,
            initial_stock: st.initial_stock,
            remaining_stock: st.remaining_stock,
            sold: st.sold,
            buyers: st.buyers,
            cancelled: st.cancelled,
            orders_created: counts.orders,
            outbox_pending: st.outbox_pending,
            // Live orders are the stored ones not cancelled; the rest of what was sold is on
            // its way to the order store.
            in_transit: st.sold.saturating_sub(counts.live_items),
        })
    }

    /// Whether `user_id` holds a purchase of `product_id`, and its order: for that buyer or an
    /// operator.
    ///
    /// # Errors
    /// [`Denied::NotThisBuyer`](crate::Denied::NotThisBuyer) for another buyer,
    /// [`Missing::Product`] for a product never prewarmed, or "backend unavailable".
    pub async fn purchased(
        &self,
        caller: &Caller,
        product_id: u64,
        user_id: u64,
    ) -> Result<Purchased, ServiceError> {
        let s = &*self.0;
        if !caller.may_see(user_id) {
            return Err(ServiceError::Denied(crate::Denied::NotThisBuyer));
        }
        let order = s
            .inventory
            .purchase_of(product_id, user_id)
            .await
            .map_err(|e| s.backend("reading buyers", &e))?;
        if order.is_none()
            && s.inventory
                .activity(product_id)
                .await
                .map_err(|e| s.backend("reading the activity", &e))?
                .is_none()
        {
            return Err(ServiceError::NotFound(Missing::Product));
        }
        Ok(Purchased {
            product_id,
            user_id,
            purchased: order.is_some(),
            order_id: order.map(|o| o.to_string()),
        })
    }
}

impl crate::Inner {
    /// The sale the order store records for a product the inventory holds no activity of (it
    /// forgot it: a restart without persistence, a failover, a flush), to restore instead of
    /// starting over; `None` when the inventory holds one, or no orders were ever stored.
    ///
    /// The last epoch's live orders are this activity's sale when all of them sold inside its
    /// window at its price: they are restored (their buyers stay buyers, their items stay
    /// sold). Otherwise the activity is a new one after an earlier sale and starts afresh at
    /// the next epoch, so epochs — and what they bind, such as purchase tokens — never repeat.
    pub(crate) async fn recorded_sale(
        &self,
        activity: &Activity,
    ) -> Result<Option<RecordedSale>, ServiceError> {
        let p = activity.product_id;
        if self
            .inventory
            .activity(p)
            .await
            .map_err(|e| self.backend("prewarm", &e))?
            .is_some()
        {
            return Ok(None);
        }
        let stored = |e: seckill_orders::OrderError| self.backend("reading the order store", &e);
        let Some(epoch) = self.orders.last_epoch(p).await.map_err(stored)? else {
            return Ok(None);
        };
        let live = self.orders.live_orders(p, epoch).await.map_err(stored)?;
        let (start, end) = (activity.start_ms(), activity.end_ms());
        let ours = !live.is_empty()
            && live.iter().all(|o| {
                (start..end).contains(&o.sold_at_ms) && o.price_cents == activity.price_cents
            });
        if !ours {
            return Ok(Some(RecordedSale {
                epoch: epoch + 1,
                orders: Vec::new(),
            }));
        }
        let orders = live
            .iter()
            .filter_map(|o| match o.order_id.parse::<OrderId>() {
                Ok(order_id) => Some(RecordedOrder {
                    order_id,
                    user_id: o.user_id,
                    quantity: o.quantity,
                }),
                Err(_) => {
                    tracing::error!(order_id = %o.order_id, "a stored order id cannot be restored");
                    None
                }
            })
            .collect();
        tracing::warn!(
            product_id = p,
            epoch,
            orders = live.len(),
            "the inventory had forgotten the activity: restoring its sale from the order store"
        );
        Ok(Some(RecordedSale { epoch, orders }))
    }
}
