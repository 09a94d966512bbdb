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
    OutboxEntry, PrewarmOutcome, PurchaseOutcome, PurchaseRequest, RecordedSale, SaleRecord,
};

/// Buyer-set shards per product, as a power of two: a purchase locks only its user's shard, and a
/// shard that outgrows its table rehashes 1/256 of the buyers (each shard at its own moment), never
/// all of them at once.
const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;

/// Buyers the shards are sized for at prewarm, over all shards, at most: a sale up to this many
/// buyers never rehashes, and a stock of 10^9 reserves megabytes, not gigabytes.
const PRESIZED_BUYERS: u64 = 1 << 18;

/// Orders per chunk of an [`OrderLog`].
const ORDER_CHUNK: usize = 4096;

/// Orders whose chunk pointers are reserved at prewarm, at most.
const PRESIZED_ORDERS: u64 = 1 << 22;

/// How long a claimed outbox entry waits for its acknowledgement before it is offered again.
pub const DEFAULT_RECLAIM_AFTER: Duration = Duration::from_secs(30);

/// Stock, buyers and outbox held in this process.
///
/// Lock-free where it is hot: products are found through an atomically swapped map, stock is one
/// atomic counter, and a purchase locks only its user's shard of the buyer set (so two attempts of
/// one user serialise, and nobody else waits on them). A sold-out product answers without taking
/// any lock but that shard.
///
/// Nothing a purchase locks grows by moving everything it holds: the buyer shards are sized for
/// the stock at prewarm (within a bound) and each rehashes only its own share when it outgrows
/// that, the orders are kept in fixed chunks by sequence number, and the outbox is a B-tree.
pub struct MemoryInventory {
    products: ArcSwap<HashMap<u64, Arc<Product>>>,
    /// Serialises prewarms and keeps per-product counters that outlive an activity.
    admin: Mutex<HashMap<u64, Counters>>,
    outbox: Outbox,
    reclaim_after: Duration,
}

struct Counters {
    epoch: u64,
    seq: Arc<AtomicU64>,
}

impl Default for Counters {
    /// A product this process has not seen: its order sequence starts at a fresh nonce, so a
    /// restarted process never hands out the ids of its previous life.
    fn default() -> Self {
        Self {
            epoch: 0,
            seq: Arc::new(AtomicU64::new(crate::sequence_base(0))),
        }
    }
}

struct Buyer {
    seq: u64,
    /// Only for a purchase that carried an idempotency key: most buyers need 16 bytes.
    replay: Option<Box<Replay>>,
}

/// What a retry with the same idempotency key is answered.
struct Replay {
    key: Box<str>,
    quantity: u32,
    remaining_after: u64,
}

/// One order of an [`OrderLog`]; `quantity == 0` marks a sequence number with no order here.
#[derive(Clone, Copy, Default)]
struct OrderSlot {
    user_id: u64,
    quantity: u32,
    cancelled: bool,
}

/// The orders of one activity epoch, indexed by their sequence number: order sequence numbers
/// are dense (1, 2, 3 … per product, this epoch's after `base`), so they live in fixed chunks
/// allocated as the sale goes on. Growing adds one chunk and never moves the orders already
/// held, unlike a map that rehashes every order under the lock each purchase takes.
struct OrderLog {
    /// The product's last sequence number before this epoch.
    base: u64,
    chunks: Vec<Box<[OrderSlot]>>,
    /// Orders carried over by a restore (their numbers precede `base`).
    restored: HashMap<u64, OrderSlot>,
}

impl OrderLog {
    fn new(base: u64, stock: u64) -> Self {
        let reserved = stock.min(PRESIZED_ORDERS).div_ceil(ORDER_CHUNK as u64);
        Self {
            base,
            chunks: Vec::with_capacity(reserved as usize),
            restored: HashMap::new(),
        }
    }

    /// The chunk and the place in it of `seq`, `None` for a sequence number of an earlier epoch.
    fn position(&self, seq: u64) -> Option<(usize, usize)> {
        let i = usize::try_from(seq.checked_sub(self.base + 1)?).ok()?;
        Some((i / ORDER_CHUNK, i % ORDER_CHUNK))
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut OrderSlot> {
        let Some((chunk, at)) = self.position(seq) else {
            return self.restored.get_mut(&seq);
        };
        let slot = self.chunks.get_mut(chunk)?.get_mut(at)?;
        (slot.quantity > 0).then_some(slot)
    }

    /// Records the order `seq`, which this epoch's counter handed out.
    fn insert(&mut self, seq: u64, slot: OrderSlot) {
        let (chunk, at) = self
            .position(seq)
            .expect("an epoch's sequence numbers follow its base");
        while self.chunks.len() <= chunk {
            self.chunks
                .push(vec![OrderSlot::default(); ORDER_CHUNK].into_boxed_slice());
        }
        self.chunks[chunk][at] = slot;
    }
}

struct Product {
    activity: Activity,
    start_ms: i64,
    end_ms: i64,
    epoch: u64,
    stock: AtomicU64,
    buyers: Box<[Mutex<HashMap<u64, Buyer>>]>,
    buyer_count: AtomicU64,
    orders: Mutex<OrderLog>,
    cancelled: AtomicU64,
    seq: Arc<AtomicU64>,
    /// The idempotency keys of earlier epochs, by buyer: a retry of an earlier epoch's purchase
    /// gets its first answer, never a sale in this one.
    earlier: HashMap<(u64, Box<str>), EarlierSale>,
}

/// The first answer of an earlier epoch's purchase that carried an idempotency key.
#[derive(Clone, Copy)]
struct EarlierSale {
    seq: u64,
    quantity: u32,
    remaining_after: u64,
}

impl Product {
    /// This epoch's idempotency keys together with the earlier epochs'.
    fn keys_so_far(&self) -> HashMap<(u64, Box<str>), EarlierSale> {
        let mut all = self.earlier.clone();
        for shard in self.buyers.iter() {
            for (&user, b) in shard.lock().iter() {
                if let Some(r) = &b.replay {
                    all.insert(
                        (user, r.key.clone()),
                        EarlierSale {
                            seq: b.seq,
                            quantity: r.quantity,
                            remaining_after: r.remaining_after,
                        },
                    );
                }
            }
        }
        all
    }

    fn shard(&self, user_id: u64) -> &Mutex<HashMap<u64, Buyer>> {
        // Fibonacci hashing spreads sequential user ids over the shards.
        let h = user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS);
        &self.buyers[h as usize]
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
            return match (&b.replay, &req.idempotency_key) {
                (Some(r), Some(k)) if *r.key == **k && r.quantity != req.quantity => {
                    PurchaseOutcome::KeyReused
                }
                (Some(r), Some(k)) if *r.key == **k => PurchaseOutcome::Success {
                    order_id: OrderId {
                        product_id: req.product_id,
                        seq: b.seq,
                    },
                    remaining_stock: r.remaining_after,
                },
                // The buyer's order again (a resent or retried purchase), if it holds this
                // quantity.
                _ => match p.orders.lock().get_mut(b.seq) {
                    Some(o) if !o.cancelled && o.quantity == req.quantity => {
                        PurchaseOutcome::Success {
                            order_id: OrderId {
                                product_id: req.product_id,
                                seq: b.seq,
                            },
                            remaining_stock: p.stock.load(Ordering::Acquire),
                        }
                    }
                    _ => PurchaseOutcome::AlreadyBought,
                },
            };
        }
        if let (false, Some(key)) = (p.earlier.is_empty(), req.idempotency_key.as_deref()) {
            if let Some(e) = p.earlier.get(&(req.user_id, Box::from(key))) {
                return if e.quantity == req.quantity {
                    PurchaseOutcome::Success {
                        order_id: OrderId {
                            product_id: req.product_id,
                            seq: e.seq,
                        },
                        remaining_stock: e.remaining_after,
                    }
                } else {
                    PurchaseOutcome::KeyReused
                };
            }
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
        let replay = req.idempotency_key.as_deref().map(|key| {
            Box::new(Replay {
                key: key.into(),
                quantity: req.quantity,
                remaining_after: remaining,
            })
        });
        shard.insert(req.user_id, Buyer { seq, replay });
        p.buyer_count.fetch_add(1, Ordering::Relaxed);
        p.orders.lock().insert(
            seq,
            OrderSlot {
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

impl Product {
    /// A fresh sale of `activity` in `epoch`, numbering its orders after `seq` as it is now
    /// (the caller holds the admin lock, which keeps any other prewarm of the product out).
    fn new(activity: &Activity, epoch: u64, seq: &Arc<AtomicU64>) -> Self {
        // Sized for the stock up front (each user buys at least one item), within a bound.
        let per_shard = (activity.stock.min(PRESIZED_BUYERS) as usize).div_ceil(SHARDS);
        Self {
            activity: activity.clone(),
            start_ms: activity.start_ms(),
            end_ms: activity.end_ms(),
            epoch,
            stock: AtomicU64::new(activity.stock),
            buyers: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_capacity(per_shard)))
                .collect(),
            buyer_count: AtomicU64::new(0),
            orders: Mutex::new(OrderLog::new(seq.load(Ordering::Acquire), activity.stock)),
            cancelled: AtomicU64::new(0),
            seq: seq.clone(),
            earlier: HashMap::new(),
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
        let mut product = Product::new(activity, counters.epoch, &counters.seq);
        if let Some(cur) = &current {
            product.earlier = cur.keys_so_far();
        }
        let product = Arc::new(product);
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

    async fn restore(
        &self,
        activity: &Activity,
        sale: &RecordedSale,
    ) -> Result<PrewarmOutcome, InventoryError> {
        activity.validate()?;
        let mut admin = self.admin.lock();
        if let Some(cur) = self.product(activity.product_id) {
            return Ok(PrewarmOutcome::Unchanged { epoch: cur.epoch });
        }
        let counters = admin.entry(activity.product_id).or_default();
        let epoch = sale.epoch.max(1);
        counters.epoch = counters.epoch.max(epoch);
        let after = sale
            .orders
            .iter()
            .map(|o| o.order_id.seq)
            .max()
            .unwrap_or(0);
        counters
            .seq
            .fetch_max(crate::sequence_base(after), Ordering::AcqRel);
        let sold: u64 = sale.orders.iter().map(|o| u64::from(o.quantity)).sum();
        let remaining = activity.stock.saturating_sub(sold);
        let product = Arc::new(Product::new(activity, epoch, &counters.seq));
        product.stock.store(remaining, Ordering::Release);
        {
            let mut log = product.orders.lock();
            for o in &sale.orders {
                log.restored.insert(
                    o.order_id.seq,
                    OrderSlot {
                        user_id: o.user_id,
                        quantity: o.quantity,
                        cancelled: false,
                    },
                );
                let fresh = product
                    .shard(o.user_id)
                    .lock()
                    .insert(
                        o.user_id,
                        Buyer {
                            seq: o.order_id.seq,
                            replay: None,
                        },
                    )
                    .is_none();
                if fresh {
                    product.buyer_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.products.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(activity.product_id, product.clone());
            map
        });
        Ok(PrewarmOutcome::Restored {
            epoch,
            orders: sale.orders.len() as u64,
            remaining_stock: remaining,
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
        let user_id = match p.orders.lock().get_mut(order_id.seq) {
            None => return Ok(CancelOutcome::NotFound),
            Some(e) if e.cancelled => return Ok(CancelOutcome::AlreadyCancelled),
            Some(e) => e.user_id,
        };
        let mut shard = p.shard(user_id).lock();
        let mut orders = p.orders.lock();
        let entry = orders
            .get_mut(order_id.seq)
            .expect("orders are never removed");
        if entry.cancelled {
            return Ok(CancelOutcome::AlreadyCancelled);
        }
        entry.cancelled = true;
        let quantity = entry.quantity;
        drop(orders);
        if shard.get(&user_id).is_some_and(|b| b.seq == order_id.seq) {
            shard.remove(&user_id);
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

    async fn products(&self) -> Result<Vec<u64>, InventoryError> {
        Ok(self.products.load().keys().copied().collect())
    }

    async fn ping(&self) -> Result<(), InventoryError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;

    use super::*;

    fn activity(product_id: u64, stock: u64) -> Activity {
        let now = Utc::now();
        Activity {
            product_id,
            product_name: "bench".into(),
            price_cents: 100,
            stock,
            start_time: now - Span::minutes(1),
            end_time: now + Span::hours(1),
            status: ActivityStatus::Active,
            per_user_limit: 1,
        }
    }

    fn buy(inv: &MemoryInventory, product_id: u64, user_id: u64) -> OrderId {
        match inv.purchase_sync(&PurchaseRequest {
            product_id,
            user_id,
            quantity: 1,
            idempotency_key: None,
        }) {
            PurchaseOutcome::Success { order_id, .. } => order_id,
            other => panic!("expected a sale, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn orders_span_chunks_and_a_forced_prewarm_starts_a_new_log() {
        let inv = MemoryInventory::new();
        let sales = 2 * ORDER_CHUNK as u64 + 10;
        inv.prewarm(&activity(7, sales + 5), false).await.unwrap();
        let orders: Vec<OrderId> = (1..=sales).map(|u| buy(&inv, 7, u)).collect();
        // The sequence starts at a nonce and is dense from there.
        let first = orders[0].seq;
        assert!(first > crate::SEQUENCE_NONCE_STEP && first % crate::SEQUENCE_NONCE_STEP == 1);
        assert!(orders.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(inv.product(7).unwrap().orders.lock().chunks.len(), 3);
        // The last order of a chunk, the first of the next, and the newest.
        for i in [ORDER_CHUNK - 1, ORDER_CHUNK, sales as usize - 1] {
            assert!(matches!(
                inv.cancel(orders[i]).await.unwrap(),
                CancelOutcome::Cancelled { quantity: 1, .. }
            ));
            assert_eq!(
                inv.cancel(orders[i]).await.unwrap(),
                CancelOutcome::AlreadyCancelled
            );
            assert_eq!(inv.purchase_of(7, i as u64 + 1).await.unwrap(), None);
        }
        let st = inv.stats(7).await.unwrap().unwrap();
        assert_eq!(
            (st.sold, st.buyers, st.cancelled),
            (sales - 3, sales - 3, 3)
        );
        // Sequence numbers not handed out yet, and past the last chunk, are no orders.
        for seq in [first - 1, first + sales, u64::MAX] {
            let missing = OrderId { product_id: 7, seq };
            assert_eq!(inv.cancel(missing).await.unwrap(), CancelOutcome::NotFound);
        }

        // A new epoch: the orders of the first one are not found, new ones follow them.
        let mut again = activity(7, 3);
        again.product_name = "again".into();
        inv.prewarm(&again, true).await.unwrap();
        assert_eq!(
            inv.cancel(orders[0]).await.unwrap(),
            CancelOutcome::NotFound
        );
        let next = buy(&inv, 7, 1);
        assert_eq!(next.seq, first + sales);
        assert!(matches!(
            inv.cancel(next).await.unwrap(),
            CancelOutcome::Cancelled { .. }
        ));
    }

    #[tokio::test]
    async fn buyer_shards_are_sized_for_the_stock_within_a_bound() {
        let inv = MemoryInventory::new();
        inv.prewarm(&activity(1, 10 * SHARDS as u64), false)
            .await
            .unwrap();
        let small = inv.product(1).unwrap();
        assert!(small.buyers.iter().all(|s| s.lock().capacity() >= 10));
        inv.prewarm(&activity(2, crate::MAX_STOCK), false)
            .await
            .unwrap();
        let huge = inv.product(2).unwrap();
        let reserved: usize = huge.buyers.iter().map(|s| s.lock().capacity()).sum();
        assert!(reserved >= PRESIZED_BUYERS as usize);
        assert!(reserved <= 4 * PRESIZED_BUYERS as usize, "{reserved}");
        assert!(huge.orders.lock().chunks.capacity() <= 2 * PRESIZED_ORDERS as usize / ORDER_CHUNK);
    }
}
