//! The [`OrderStore`] trait and the in-process [`MemoryOrderStore`].

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::OrderError;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stored, waiting for the buyer to pay before its deadline.
    AwaitingPayment,
    /// Paid. Final.
    Paid,
    /// Cancelled by the buyer or for want of payment; its items go back to stock. Final.
    Cancelled,
}

impl OrderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingPayment => "awaiting_payment",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "awaiting_payment" => Some(Self::AwaitingPayment),
            "paid" => Some(Self::Paid),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A stored order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Payment deadline, milliseconds since the Unix epoch: unpaid after it, the order is
    /// cancelled and its items go back on sale.
    pub expires_at_ms: i64,
    /// Last status change, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// For a cancelled order: whether its items are back in the inventory.
    pub stock_returned: bool,
    /// The activity epoch it sold in.
    pub epoch: u64,
}

/// What a status change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The order moved to the requested state (returned as it is now).
    Done(Order),
    /// The order was already in a final state; nothing changed (returned as it is).
    Final(Order),
    /// Payment refused: the deadline passed (the order is left to the sweeper).
    Expired(Order),
    /// No such order.
    NotFound,
}

/// Order counts of one product in one activity epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Orders stored, in every state.
    pub orders: u64,
    /// Orders not cancelled.
    pub live_orders: u64,
    /// Items of the orders not cancelled.
    pub live_items: u64,
}

/// Durable orders.
///
/// Implementers guarantee:
/// - [`OrderStore::insert`] is idempotent by order id: inserting an id that exists changes
///   nothing and reports `false`, whatever the concurrency;
/// - [`OrderStore::pay`] and [`OrderStore::cancel`] are atomic compare-and-set from
///   [`OrderStatus::AwaitingPayment`]: of a pay and a cancel racing on one order exactly one
///   wins, and the order ends in one state only.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores an order unless its id exists. Returns whether it was new.
    ///
    /// # Errors
    /// The store failed; nothing was written.
    async fn insert(&self, order: &Order) -> Result<bool, OrderError>;

    /// Stores several orders, each unless its id exists; returns, in order, whether each was
    /// new (a repeated id within the batch is new once). The default inserts one at a time;
    /// a failure may leave earlier ones written, which a retry absorbs (inserts are
    /// idempotent).
    ///
    /// # Errors
    /// The store failed.
    async fn insert_many(&self, orders: &[Order]) -> Result<Vec<bool>, OrderError> {
        let mut new = Vec::with_capacity(orders.len());
        for o in orders {
            new.push(self.insert(o).await?);
        }
        Ok(new)
    }

    /// Finds an order by id.
    ///
    /// # Errors
    /// The store failed.
    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError>;

    /// Finds several orders by id: those that exist, in no particular order. The default
    /// looks them up one at a time.
    ///
    /// # Errors
    /// The store failed.
    async fn get_many(&self, order_ids: &[&str]) -> Result<Vec<Order>, OrderError> {
        let mut found = Vec::with_capacity(order_ids.len());
        for id in order_ids {
            found.extend(self.get(id).await?);
        }
        Ok(found)
    }

    /// The store's clock, in milliseconds since the Unix epoch. Payment deadlines are set
    /// from it when an order is stored and checked against it by pay and the sweeper, so a
    /// pipeline outage or another machine's clock never expires an order its buyer could not
    /// see yet. The default is this process's clock (right for a store in this process).
    ///
    /// # Errors
    /// The store failed.
    async fn now_ms(&self) -> Result<i64, OrderError> {
        Ok(crate::now_ms())
    }

    /// The live (awaiting payment or paid) orders of a product's epoch: what a restore of
    /// that sale rebuilds its buyers and stock from.
    ///
    /// # Errors
    /// The store failed.
    async fn live_orders(&self, product_id: u64, epoch: u64) -> Result<Vec<Order>, OrderError>;

    /// Voids a product's unpaid orders of epochs before `epoch` (a forced re-prewarm started
    /// it with fresh stock): each becomes cancelled with its stock counted as returned — the new
    /// epoch's stock holds its items once — so it can no longer be paid; and so does every
    /// such order stored later (a sale still on its way). Returns how many were voided now.
    ///
    /// # Errors
    /// The store failed.
    async fn void_before(
        &self,
        product_id: u64,
        epoch: u64,
        now_ms: i64,
    ) -> Result<u64, OrderError>;

    /// The most recent activity epoch that has orders of the product, if any.
    ///
    /// # Errors
    /// The store failed.
    async fn last_epoch(&self, product_id: u64) -> Result<Option<u64>, OrderError>;

    /// Counts of a product's orders in one activity epoch.
    ///
    /// # Errors
    /// The store failed.
    async fn counts(&self, product_id: u64, epoch: u64) -> Result<OrderCounts, OrderError>;

    /// Marks an order awaiting payment as paid, if `now_ms` is before its deadline.
    ///
    /// # Errors
    /// The store failed; nothing changed.
    async fn pay(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError>;

    /// Cancels an order awaiting payment. Its stock is returned afterwards by the caller, who
    /// then calls [`OrderStore::mark_stock_returned`].
    ///
    /// # Errors
    /// The store failed; nothing changed.
    async fn cancel(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError>;

    /// Orders needing the sweeper: awaiting payment past their deadline, or cancelled with
    /// their stock not returned yet. At most `limit`, oldest deadline first.
    ///
    /// # Errors
    /// The store failed.
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, OrderError>;

    /// Records that a cancelled order's items are back in the inventory.
    ///
    /// # Errors
    /// The store failed.
    async fn mark_stock_returned(&self, order_id: &str) -> Result<(), OrderError>;
}

/// Orders held in this process (embedded mode).
///
/// The sweeper's queries are served from ordered indexes (by deadline), so a sweep costs what
/// is due, not the number of orders. The orders are split over 1,024 maps by a hash of their
/// id: a map that outgrows its table rehashes its share of the orders, never all of them at once
/// under the lock every insert and read takes.
#[derive(Default)]
pub struct MemoryOrderStore {
    state: RwLock<State>,
}

/// Maps the orders are split over (a power of two).
const PARTS: usize = 1024;

struct State {
    /// Picks an order's part; independent of the parts' own hashers, so a part's keys spread
    /// over its whole table.
    parts_hasher: RandomState,
    parts: Box<[HashMap<String, Order>]>,
    counts: HashMap<(u64, u64), OrderCounts>,
    /// Orders awaiting payment, by (deadline, id).
    awaiting: BTreeSet<(i64, String)>,
    /// Cancelled orders whose stock is not back yet, by (deadline, id).
    unreturned: BTreeSet<(i64, String)>,
    /// Per product, the epoch before which orders are void ([`OrderStore::void_before`]).
    voided: HashMap<u64, u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            parts_hasher: RandomState::new(),
            parts: (0..PARTS).map(|_| HashMap::new()).collect(),
            counts: HashMap::new(),
            awaiting: BTreeSet::new(),
            unreturned: BTreeSet::new(),
            voided: HashMap::new(),
        }
    }
}

impl State {
    fn part(&self, order_id: &str) -> usize {
        self.parts_hasher.hash_one(order_id) as usize % PARTS
    }

    fn get(&self, order_id: &str) -> Option<&Order> {
        self.parts[self.part(order_id)].get(order_id)
    }
}

impl MemoryOrderStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every order, in no particular order.
    pub fn all(&self) -> Vec<Order> {
        let st = self.state.read();
        st.parts.iter().flat_map(HashMap::values).cloned().collect()
    }

    fn set_status(&self, order_id: &str, to: OrderStatus, now_ms: i64) -> Transition {
        let mut st = self.state.write();
        let part = st.part(order_id);
        let State {
            parts,
            counts,
            awaiting,
            unreturned,
            ..
        } = &mut *st;
        let Some(o) = parts[part].get_mut(order_id) else {
            return Transition::NotFound;
        };
        if o.status != OrderStatus::AwaitingPayment {
            return Transition::Final(o.clone());
        }
        if to == OrderStatus::Paid && now_ms >= o.expires_at_ms {
            return Transition::Expired(o.clone());
        }
        o.status = to;
        o.updated_at_ms = now_ms;
        let key = (o.expires_at_ms, o.order_id.clone());
        awaiting.remove(&key);
        if to == OrderStatus::Cancelled {
            let c = counts.entry((o.product_id, o.epoch)).or_default();
            c.live_orders -= 1;
            c.live_items -= u64::from(o.quantity);
            if !o.stock_returned {
                unreturned.insert(key);
            }
        }
        Transition::Done(o.clone())
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn insert(&self, order: &Order) -> Result<bool, OrderError> {
        let mut st = self.state.write();
        let part = st.part(&order.order_id);
        if st.parts[part].contains_key(&order.order_id) {
            return Ok(false);
        }
        // Sold in an epoch voided since: stored void, its stock already in the new epoch.
        let voided;
        let order = match st.voided.get(&order.product_id) {
            Some(&before)
                if order.epoch < before && order.status == OrderStatus::AwaitingPayment =>
            {
                voided = Order {
                    status: OrderStatus::Cancelled,
                    stock_returned: true,
                    ..order.clone()
                };
                &voided
            }
            _ => order,
        };
        let key = (order.expires_at_ms, order.order_id.clone());
        match order.status {
            OrderStatus::AwaitingPayment => {
                st.awaiting.insert(key);
            }
            OrderStatus::Cancelled if !order.stock_returned => {
                st.unreturned.insert(key);
            }
            _ => {}
        }
        let c = st
            .counts
            .entry((order.product_id, order.epoch))
            .or_default();
        c.orders += 1;
        if order.status != OrderStatus::Cancelled {
            c.live_orders += 1;
            c.live_items += u64::from(order.quantity);
        }
        st.parts[part].insert(order.order_id.clone(), order.clone());
        Ok(true)
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        Ok(self.state.read().get(order_id).cloned())
    }

    async fn void_before(
        &self,
        product_id: u64,
        epoch: u64,
        now_ms: i64,
    ) -> Result<u64, OrderError> {
        let ids: Vec<String> = {
            let mut st = self.state.write();
            let before = st.voided.entry(product_id).or_default();
            *before = (*before).max(epoch);
            st.parts
                .iter()
                .flat_map(|p| p.values())
                .filter(|o| {
                    o.product_id == product_id
                        && o.epoch < epoch
                        && o.status == OrderStatus::AwaitingPayment
                })
                .map(|o| o.order_id.clone())
                .collect()
        };
        let mut voided = 0;
        for id in ids {
            if let Transition::Done(_) = self.set_status(&id, OrderStatus::Cancelled, now_ms) {
                self.mark_stock_returned(&id).await?;
                voided += 1;
            }
        }
        Ok(voided)
    }

    async fn live_orders(&self, product_id: u64, epoch: u64) -> Result<Vec<Order>, OrderError> {
        let st = self.state.read();
        Ok(st
            .parts
            .iter()
            .flat_map(|p| p.values())
            .filter(|o| {
                o.product_id == product_id && o.epoch == epoch && o.status != OrderStatus::Cancelled
            })
            .cloned()
            .collect())
    }

    async fn last_epoch(&self, product_id: u64) -> Result<Option<u64>, OrderError> {
        let st = self.state.read();
        Ok(st
            .counts
            .keys()
            .filter(|(p, _)| *p == product_id)
            .map(|(_, e)| *e)
            .max())
    }

    async fn counts(&self, product_id: u64, epoch: u64) -> Result<OrderCounts, OrderError> {
        Ok(self
            .state
            .read()
            .counts
            .get(&(product_id, epoch))
            .copied()
            .unwrap_or_default())
    }

    async fn pay(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        Ok(self.set_status(order_id, OrderStatus::Paid, now_ms))
    }

    async fn cancel(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        Ok(self.set_status(order_id, OrderStatus::Cancelled, now_ms))
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, OrderError> {
        let st = self.state.read();
        let expired = st
            .awaiting
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(limit);
        let mut keys: Vec<&(i64, String)> =
            expired.chain(st.unreturned.iter().take(limit)).collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys
            .into_iter()
            .filter_map(|(_, id)| st.get(id).cloned())
            .collect())
    }

    async fn mark_stock_returned(&self, order_id: &str) -> Result<(), OrderError> {
        let mut st = self.state.write();
        let part = st.part(order_id);
        let State {
            parts, unreturned, ..
        } = &mut *st;
        if let Some(o) = parts[part].get_mut(order_id) {
            o.stock_returned = true;
            unreturned.remove(&(o.expires_at_ms, o.order_id.clone()));
        }
        Ok(())
    }
}
