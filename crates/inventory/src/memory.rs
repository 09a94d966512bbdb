//! [`MemoryInventory`]: the in-process backend and the behaviour reference.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    Activity, ActivityStatus, CancelOutcome, Inventory, InventoryError, InventoryStats, OrderId,
    OutboxEntry, PrewarmOutcome, PurchaseOutcome, PurchaseRequest, SaleRecord,
};

/// Buyer-set shards per product: a purchase locks only its user's shard.
const SHARDS: usize = 64;

/// How long a claimed outbox entry waits for its acknowledgement before it is offered again.
pub const DEFAULT_RECLAIM_AFTER: Duration = Duration::from_secs(30);

/// Stock, buyers and outbox held in this process.
///
/// Lock-free where it is hot: products are found through an atomically swapped map, stock is one
/// atomic counter, and a purchase locks only its user's shard of the buyer set (so two attempts of
/// one user serialise, and nobody else waits on them). A sold-out product answers without taking
/// any lock but that shard.
pub struct MemoryInventory {
    products: ArcSwap<HashMap<u64, Arc<Product>>>,
    /// Serialises prewarms and keeps per-product counters that outlive an activity.
    admin: Mutex<HashMap<u64, Counters>>,
    outbox: Outbox,
    reclaim_after: Duration,
}

#[derive(Default)]
struct Counters {
    epoch: u64,
    seq: Arc<AtomicU64>,
}

struct Buyer {
    seq: u64,
    quantity: u32,
    remaining_after: u64,
    idempotency_key: Option<Box<str>>,
}

struct OrderEntry {
    user_id: u64,
    quantity: u32,
    cancelled: bool,
}

struct Product {
    activity: Activity,
    start_ms: i64,
    end_ms: i64,
    epoch: u64,
    stock: AtomicU64,
    buyers: Box<[Mutex<HashMap<u64, Buyer>>]>,
    buyer_count: AtomicU64,
    orders: Mutex<HashMap<u64, OrderEntry>>,
    cancelled: AtomicU64,
    seq: Arc<AtomicU64>,
}

impl Product {
    fn shard(&self, user_id: u64) -> &Mutex<HashMap<u64, Buyer>> {
        // Fibonacci hashing spreads sequential user ids over the shards.
        let h = user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.buyers[h as usize % SHARDS]
    }
}

#[derive(Default)]
struct OutboxState {
    next_id: u64,
    entries: BTreeMap<u64, (SaleRecord, Option<Instant>)>,
    pending_by_product: HashMap<u64, u64>,
}

#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
}

impl Default for MemoryInventory {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryInventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::with_reclaim_after(DEFAULT_RECLAIM_AFTER)
    }

    /// An empty inventory whose unacknowledged outbox claims are offered again after `reclaim_after`.
    pub fn with_reclaim_after(reclaim_after: Duration) -> Self {
        Self {
            products: ArcSwap::from_pointee(HashMap::new()),
            admin: Mutex::new(HashMap::new()),
            outbox: Outbox::default(),
            reclaim_after,
        }
    }

    fn product(&self, product_id: u64) -> Option<Arc<Product>> {
        self.products.load().get(&product_id).cloned()
    }

    fn purchase_sync(&self, req: &PurchaseRequest) -> PurchaseOutcome {
        let Some(product) = self.product(req.product_id) else {
            return PurchaseOutcome::UnknownProduct;
        };
        let p = &*product;
        if p.activity.status != ActivityStatus::Active {
            return PurchaseOutcome::Inactive;
        }
        let now = Utc::now().timestamp_millis();
        if now < p.start_ms {
            return PurchaseOutcome::NotStarted;
        }
        if now >= p.end_ms {
            return PurchaseOutcome::Ended;
        }
        let max = p.activity.per_user_limit;
        if req.quantity == 0 || req.quantity > max {
            return PurchaseOutcome::InvalidQuantity { max };
        }
        let mut shard = p.shard(req.user_id).lock();
        if let Some(b) = shard.get(&req.user_id) {
            return match (&b.idempotency_key, &req.idempotency_key) {
                (Some(a), Some(k)) if **a == **k && b.quantity != req.quantity => {
                    PurchaseOutcome::KeyReused
                }
                (Some(a), Some(k)) if **a == **k => PurchaseOutcome::Success {
                    order_id: OrderId {
                        product_id: req.product_id,
                        seq: b.seq,
                    },
                    remaining_stock: b.remaining_after,
                },
                _ => PurchaseOutcome::AlreadyBought,
            };
        }
        let qty = u64::from(req.quantity);
        let remaining = match p
            .stock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| s.checked_sub(qty))
        {
            Ok(before) => before - qty,
            Err(left) => {
                return PurchaseOutcome::SoldOut {
                    remaining_stock: left,
                };
            }
        };
        let seq = p.seq.fetch_add(1, Ordering::Relaxed) + 1;
        shard.insert(
            req.user_id,
            Buyer {
                seq,
                quantity: req.quantity,
                remaining_after: remaining,
                idempotency_key: req.idempotency_key.as_deref().map(Into::into),
            },
        );
        p.buyer_count.fetch_add(1, Ordering::Relaxed);
        p.orders.lock().insert(
            seq,
            OrderEntry {
                user_id: req.user_id,
                quantity: req.quantity,
                cancelled: false,
            },
        );
        let order_id = OrderId {
            product_id: req.product_id,
            seq,
        };
        // Appended while the buyer's shard is still held: nobody can observe the buyer without
        // its sale being in the outbox.
        self.outbox.push(SaleRecord {
            order_id,
            product_id: req.product_id,
            user_id: req.user_id,
            quantity: req.quantity,
            price_cents: p.activity.price_cents,
            sold_at_ms: now,
            epoch: p.epoch,
        });
        drop(shard);
        PurchaseOutcome::Success {
            order_id,
            remaining_stock: remaining,
        }
    }
}

impl Outbox {
    fn push(&self, record: SaleRecord) {
        let mut st = self.state.lock();
        st.next_id += 1;
        let id = st.next_id;
        *st.pending_by_product.entry(record.product_id).or_default() += 1;
        st.entries.insert(id, (record, None));
        drop(st);
        self.notify.notify_one();
    }

    fn claim(&self, max: usize, reclaim_after: Duration) -> Vec<OutboxEntry> {
        let now = Instant::now();
        let mut st = self.state.lock();
        let mut out = Vec::new();
        for (id, (record, claimed)) in st.entries.iter_mut() {
            if out.len() >= max {
                break;
            }
            let free = match claimed {
                None => true,
                Some(at) => now.saturating_duration_since(*at) >= reclaim_after,
            };
            if free {
                *claimed = Some(now);
                out.push(OutboxEntry {
                    id: id.to_string(),
                    record: record.clone(),
                });
            }
        }
        out
    }
}

#[async_trait]
impl Inventory for MemoryInventory {
    async fn prewarm(
        &self,
        activity: &Activity,
        force: bool,
    ) -> Result<PrewarmOutcome, InventoryError> {
        activity.validate()?;
        let mut admin = self.admin.lock();
        let current = self.product(activity.product_id);
        if let Some(cur) = &current {
            if cur.activity == *activity {
                return Ok(PrewarmOutcome::Unchanged { epoch: cur.epoch });
            }
            if !force && Utc::now().timestamp_millis() >= cur.start_ms {
                return Ok(PrewarmOutcome::SaleStarted);
            }
        }
        let counters = admin.entry(activity.product_id).or_default();
        counters.epoch += 1;
        let product = Arc::new(Product {
            activity: activity.clone(),
            start_ms: activity.start_ms(),
            end_ms: activity.end_ms(),
            epoch: counters.epoch,
            stock: AtomicU64::new(activity.stock),
            buyers: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            buyer_count: AtomicU64::new(0),
            orders: Mutex::new(HashMap::new()),
            cancelled: AtomicU64::new(0),
            seq: counters.seq.clone(),
        });
        let epoch = counters.epoch;
        self.products.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(activity.product_id, product.clone());
            map
        });
        Ok(if current.is_some() {
            PrewarmOutcome::Replaced { epoch }
        } else {
            PrewarmOutcome::Created { epoch }
        })
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, InventoryError> {
        Ok(self.purchase_sync(request))
    }

    async fn activity(&self, product_id: u64) -> Result<Option<Activity>, InventoryError> {
        Ok(self.product(product_id).map(|p| p.activity.clone()))
    }

    async fn stats(&self, product_id: u64) -> Result<Option<InventoryStats>, InventoryError> {
        let Some(p) = self.product(product_id) else {
            return Ok(None);
        };
        let outbox_pending = self
            .outbox
            .state
            .lock()
            .pending_by_product
            .get(&product_id)
            .copied()
            .unwrap_or(0);
        let remaining = p.stock.load(Ordering::Acquire);
        Ok(Some(InventoryStats {
            product_id,
            epoch: p.epoch,
            initial_stock: p.activity.stock,
            remaining_stock: remaining,
            sold: p.activity.stock - remaining,
            buyers: p.buyer_count.load(Ordering::Relaxed),
            cancelled: p.cancelled.load(Ordering::Relaxed),
            outbox_pending,
        }))
    }

    async fn purchase_of(
        &self,
        product_id: u64,
        user_id: u64,
    ) -> Result<Option<OrderId>, InventoryError> {
        Ok(self.product(product_id).and_then(|p| {
            p.shard(user_id).lock().get(&user_id).map(|b| OrderId {
                product_id,
                seq: b.seq,
            })
        }))
    }

    async fn cancel(&self, order_id: OrderId) -> Result<CancelOutcome, InventoryError> {
        let Some(p) = self.product(order_id.product_id) else {
            return Ok(CancelOutcome::NotFound);
        };
        // Lock order: buyer shard, then orders (the same as a purchase).
        let user_id = match p.orders.lock().get(&order_id.seq) {
            None => return Ok(CancelOutcome::NotFound),
            Some(e) if e.cancelled => return Ok(CancelOutcome::AlreadyCancelled),
            Some(e) => e.user_id,
        };
        let mut shard = p.shard(user_id).lock();
        let mut orders = p.orders.lock();
        let entry = orders
            .get_mut(&order_id.seq)
            .expect("orders are never removed");
        if entry.cancelled {
            return Ok(CancelOutcome::AlreadyCancelled);
        }
        entry.cancelled = true;
        let quantity = entry.quantity;
        drop(orders);
        if shard.get(&user_id).is_some_and(|b| b.seq == order_id.seq) {
            let b = shard.remove(&user_id).expect("checked above");
            debug_assert_eq!(b.quantity, quantity);
            p.buyer_count.fetch_sub(1, Ordering::Relaxed);
        }
        let remaining = p
            .stock
            .fetch_add(u64::from(quantity), Ordering::AcqRel)
            .saturating_add(u64::from(quantity));
        p.cancelled.fetch_add(1, Ordering::Relaxed);
        Ok(CancelOutcome::Cancelled {
            quantity,
            remaining_stock: remaining,
        })
    }

    async fn outbox_read(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, InventoryError> {
        let deadline = Instant::now() + block;
        loop {
            let notified = self.outbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.outbox.claim(max.max(1), self.reclaim_after);
            if !batch.is_empty() {
                return Ok(batch);
            }
            // Claimed entries become free again after the reclaim timeout without any notification.
            let wake =
                deadline.min(Instant::now() + self.reclaim_after.max(Duration::from_millis(10)));
            if tokio::time::timeout_at(wake, notified).await.is_err() && Instant::now() >= deadline
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), InventoryError> {
        let mut st = self.outbox.state.lock();
        for id in ids {
            let Ok(id) = id.parse::<u64>() else { continue };
            if let Some((record, _)) = st.entries.remove(&id) {
                if let Some(n) = st.pending_by_product.get_mut(&record.product_id) {
                    *n -= 1;
                }
            }
        }
        Ok(())
    }

    async fn outbox_len(&self) -> Result<u64, InventoryError> {
        Ok(self.outbox.state.lock().entries.len() as u64)
    }

    async fn ping(&self) -> Result<(), InventoryError> {
        Ok(())
    }
}
