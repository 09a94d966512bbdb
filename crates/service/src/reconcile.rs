//! The reconciler: compares a product's sale in Redis (stock, buyers, outbox) with the order
//! store, which is the record, and repairs Redis from it on request — the specification's
//! "repair stock data" lever, made safe.

use std::collections::HashSet;

use seckill_inventory::{
    Activity, Inventory, InventoryError, OrderId, PrewarmOutcome, RecordedOrder, RecordedSale,
    RedisInventory,
};
use seckill_mq::{Broker, Envelope, Message, MqError, OrderCreated};
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
    /// Sales Redis holds that the order store does not (looked up only when the counts
    /// differ): on their way to the store, or lost by the broker. [`redeliver`] sends them
    /// again; the consumer stores each once.
    #[serde(serialize_with = "order_ids")]
    pub missing: Vec<RecordedOrder>,
    /// Live stored orders Redis does not hold (it forgot them, or was edited by hand).
    pub forgotten: u64,
    /// Sales of `missing` sent to the broker again by this run.
    pub redelivered: u64,
    /// Whether Redis was rebuilt from the order store (and the sales only Redis holds).
    pub repaired: bool,
}

impl Drift {
    /// Whether Redis and the order store agree on the product.
    pub fn agrees(&self) -> bool {
        self.unaccounted_items == 0
            && self.unaccounted_buyers == 0
            && self.missing.is_empty()
            && self.forgotten == 0
    }
}

fn order_ids<S: serde::Serializer>(orders: &[RecordedOrder], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(orders.iter().map(|o| o.order_id.to_string()))
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
    /// The broker refused a redelivered sale.
    #[error("broker: {0}")]
    Broker(#[from] MqError),
}

/// Compares product `product_id` in `inventory` with `orders` and exports the difference as
/// `seckill_inventory_unaccounted_items{product_id}`. When the counts differ it looks the
/// sales up one by one: those only Redis holds are [`Drift::missing`], live stored orders
/// Redis lacks are [`Drift::forgotten`].
///
/// With `repair` (refused while the outbox holds sales of the product) it sends the missing
/// sales to `broker` again, when given, and rebuilds the product's stock and buyers in Redis
/// from the live orders stored for its epoch together with the missing sales: nothing Redis
/// sold is forgotten, and nothing the store holds is sold twice.
///
/// # Errors
/// [`ReconcileError`].
pub async fn reconcile(
    inventory: &RedisInventory,
    orders: &dyn OrderStore,
    broker: Option<&dyn Broker>,
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
        missing: Vec::new(),
        forgotten: 0,
        redelivered: 0,
        repaired: false,
    };
    metrics::gauge!("seckill_inventory_unaccounted_items", "product_id" => product_id.to_string())
        .set(drift.unaccounted_items as f64);
    if drift.unaccounted_items == 0 && drift.unaccounted_buyers == 0 && !repair {
        return Ok(drift);
    }
    let stored: Vec<RecordedOrder> = live
        .iter()
        .filter_map(|o| {
            Some(RecordedOrder {
                order_id: o.order_id.parse::<OrderId>().ok()?,
                user_id: o.user_id,
                quantity: o.quantity,
            })
        })
        .collect();
    let held = inventory
        .sales(product_id)
        .await?
        .filter(|s| s.epoch == stats.epoch)
        .map(|s| s.orders)
        .unwrap_or_default();
    let held_ids: HashSet<OrderId> = held.iter().map(|o| o.order_id).collect();
    drift.forgotten = stored
        .iter()
        .filter(|o| !held_ids.contains(&o.order_id))
        .count() as u64;
    // Redis's sales the store has under no status (a cancelled order is the store's word),
    // looked up only for buyers without a live stored order.
    let buyers: HashSet<u64> = stored.iter().map(|o| o.user_id).collect();
    let candidates: Vec<RecordedOrder> = held
        .into_iter()
        .filter(|o| !buyers.contains(&o.user_id))
        .collect();
    let ids: Vec<String> = candidates.iter().map(|o| o.order_id.to_string()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let known: HashSet<String> = orders
        .get_many(&refs)
        .await?
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    drift.missing = candidates
        .into_iter()
        .zip(&ids)
        .filter(|(_, id)| !known.contains(*id))
        .map(|(o, _)| o)
        .collect();
    if repair && !drift.agrees() {
        if stats.outbox_pending > 0 {
            return Err(ReconcileError::InTransit {
                product_id,
                pending: stats.outbox_pending,
            });
        }
        if let Some(broker) = broker {
            redeliver(broker, &activity, stats.epoch, &drift.missing).await?;
            drift.redelivered = drift.missing.len() as u64;
        }
        let mut orders = stored;
        orders.extend(drift.missing.iter().copied());
        let sale = RecordedSale {
            epoch: stats.epoch,
            orders,
        };
        let outcome = inventory.repair(&activity, &sale).await?;
        tracing::warn!(product_id, ?outcome, before = ?drift, "reconciler repaired Redis from the order store");
        if let PrewarmOutcome::Restored { .. } = outcome {
            drift.repaired = true;
        }
    }
    Ok(drift)
}

/// Sends `sales` of `activity`'s epoch `epoch` to the broker again, as the relay first did
/// (the consumer stores a sale once, whatever the number of its deliveries); their sale time
/// is now. Counted in `seckill_reconciler_redelivered_total`.
///
/// # Errors
/// [`MqError`] when the broker refused them.
pub async fn redeliver(
    broker: &dyn Broker,
    activity: &Activity,
    epoch: u64,
    sales: &[RecordedOrder],
) -> Result<(), MqError> {
    if sales.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let envelopes: Vec<Envelope> = sales
        .iter()
        .map(|o| {
            Envelope::new(
                format!("oc-{}", o.order_id),
                Message::OrderCreated(OrderCreated {
                    order_id: o.order_id.to_string(),
                    product_id: o.order_id.product_id,
                    user_id: o.user_id,
                    quantity: o.quantity,
                    price_cents: activity.price_cents,
                    sold_at_ms: now,
                    epoch,
                }),
            )
        })
        .collect();
    broker.publish_batch(&envelopes).await?;
    tracing::warn!(
        product_id = activity.product_id,
        count = sales.len(),
        "reconciler redelivered sales the order store lacks"
    );
    metrics::counter!("seckill_reconciler_redelivered_total").increment(sales.len() as u64);
    Ok(())
}

/// The background reconciler: the `reconciler` section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct ReconcilerConfig {
    /// How often every product Redis holds is compared with the order store (default 60 s;
    /// 0 s: never).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub interval: std::time::Duration,
    /// Whether a sale found missing from the order store on two runs in a row is sent to the
    /// broker again (default true): a broker that lost it cannot lose the sale.
    pub redeliver: bool,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(60),
            redeliver: true,
        }
    }
}

/// Compares every product `inventory` holds with `orders` every `config.interval`, for the
/// `seckill_inventory_unaccounted_items` gauge (and its alert), and sends again, once, each
/// sale missing from the store on two runs in a row (those on their way at the first run have
/// arrived by the second). A sale still missing after that (the store refused it: see the
/// dead letters) stays in the gauge for an operator. Never rebuilds Redis. Runs until
/// dropped.
pub async fn run_reconciler(
    inventory: std::sync::Arc<RedisInventory>,
    orders: std::sync::Arc<dyn OrderStore>,
    broker: std::sync::Arc<dyn Broker>,
    config: ReconcilerConfig,
) {
    if config.interval.is_zero() {
        return std::future::pending().await;
    }
    let mut every = tokio::time::interval(config.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspects: std::collections::HashMap<u64, HashSet<OrderId>> = Default::default();
    let mut redelivered: std::collections::HashMap<u64, HashSet<OrderId>> = Default::default();
    loop {
        every.tick().await;
        let products = match inventory.products().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: listing the products failed");
                continue;
            }
        };
        suspects.retain(|p, _| products.contains(p));
        redelivered.retain(|p, _| products.contains(p));
        for p in products {
            let drift = match reconcile(&inventory, &*orders, None, p, false).await {
                Ok(d) => d,
                Err(ReconcileError::UnknownProduct(_)) => continue,
                Err(e) => {
                    tracing::warn!(product_id = p, error = %e, "reconciler failed");
                    continue;
                }
            };
            if !drift.agrees() {
                tracing::info!(
                    product_id = p,
                    unaccounted_items = drift.unaccounted_items,
                    outbox_pending = drift.outbox_pending,
                    missing = drift.missing.len(),
                    forgotten = drift.forgotten,
                    "reconciler: Redis and the order store differ"
                );
            }
            let now: HashSet<OrderId> = drift.missing.iter().map(|o| o.order_id).collect();
            let before = suspects.insert(p, now).unwrap_or_default();
            let sent = redelivered.entry(p).or_default();
            let again: Vec<RecordedOrder> = drift
                .missing
                .iter()
                .filter(|o| before.contains(&o.order_id) && !sent.contains(&o.order_id))
                .copied()
                .collect();
            if !config.redeliver || again.is_empty() {
                continue;
            }
            let activity = match inventory.activity(p).await {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(product_id = p, error = %e, "reconciler failed");
                    continue;
                }
            };
            match redeliver(&*broker, &activity, drift.epoch, &again).await {
                Ok(()) => sent.extend(again.iter().map(|o| o.order_id)),
                Err(e) => {
                    tracing::warn!(product_id = p, error = %e, "reconciler: redelivery failed")
                }
            }
        }
    }
}
