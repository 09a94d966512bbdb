//! [`RedisInventory`]: stock on Redis, one Lua script per operation.

mod batch;
mod client;
mod config;
pub(crate) mod functions;
mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface};
use fred::types::{Key, Value};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

pub use client::RedisClient;
pub use config::RedisConfig;

use crate::{
    Activity, ActivityStatus, CancelOutcome, Inventory, InventoryError, InventoryStats, OrderId,
    OutboxEntry, PrewarmOutcome, PurchaseOutcome, PurchaseRequest, RecordedOrder, RecordedSale,
};
use client::backend;

/// The consumer group every relay reads the outboxes with.
pub const RELAY_GROUP: &str = "seckill-relay";

struct ProductKeys {
    activity: Key,
    buyers: Key,
    orders: Key,
    idem: Key,
    seq: Key,
    epoch: Key,
    outbox: Key,
    /// Sales in the outbox (the stream holds one entry per batch).
    outbox_count: Key,
    /// The outbox key's name, to tell the streams of a multi-stream read apart.
    outbox_name: String,
}

impl ProductKeys {
    /// The keys the prewarm and restore functions take (KEYS[1..7]).
    fn loading(&self) -> Vec<Key> {
        vec![
            self.activity.clone(),
            self.buyers.clone(),
            self.orders.clone(),
            self.idem.clone(),
            self.epoch.clone(),
            self.outbox.clone(),
            self.seq.clone(),
        ]
    }
}

/// A sold-out product, as last read from Redis.
struct SoldOut {
    until: Instant,
    status: ActivityStatus,
    start_ms: i64,
    end_ms: i64,
    limit: u32,
    buyers: std::collections::HashSet<u64>,
}

/// Stock, buyers and the sales outbox on Redis. Several processes may share one Redis: every
/// operation is one atomic script, so the guarantees of [`Inventory`] hold across them.
///
/// # Keys
/// Keys of one product share the hash tag `{product_id}` so every script touches one slot and
/// runs unchanged on a Redis Cluster:
///
/// | key | type | holds |
/// |---|---|---|
/// | `P:{X}:activity` | hash | the activity, `stock`, `cancelled`, `epoch`, `exp` |
/// | `P:{X}:buyers` | hash | user → order seq, this epoch (and `_`, which carries the expiry) |
/// | `P:{X}:orders` | hash | seq → `user\|qty` (`x`-prefixed once cancelled), this epoch |
/// | `P:{X}:idem` | hash | `user:key` → `seq\|remaining\|qty`, every epoch |
/// | `P:{X}:seq` | string | order sequence, never reset; starts at a fresh nonce × 10⁹ |
/// | `P:{X}:epoch` | string | activity epoch counter, never reset |
/// | `P:{X}:outbox` | stream | sales not yet delivered to the broker, one entry per batch |
/// | `P:{X}:outbox_n` | string | sales in the outbox |
/// | `P:products` | set | products with an outbox (for the relay) |
///
/// `P` is the configurable prefix. The activity, buyer, order and idempotency keys expire a grace
/// period after the sale's end; the counters and the outbox never expire (a pending sale must not
/// vanish, and order ids must never repeat).
pub struct RedisInventory {
    inner: Arc<Inner>,
}

/// What the inventory and its batch drivers share.
pub(crate) struct Inner {
    client: RedisClient,
    config: RedisConfig,
    products_key: Key,
    keys: RwLock<HashMap<u64, Arc<ProductKeys>>>,
    consumer: String,
    known: Mutex<(Option<Instant>, Vec<u64>)>,
    sold_out: RwLock<HashMap<u64, Arc<SoldOut>>>,
    refreshing: Mutex<std::collections::HashSet<u64>>,
    /// Purchases waiting for their product's call in flight (group commit).
    lanes: batch::Lanes,
    /// When entries other relays left unacknowledged were last looked for.
    last_claim: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInventory")
            .field("config", &self.inner.config)
            .field("consumer", &self.inner.consumer)
            .finish_non_exhaustive()
    }
}

fn int(v: Option<&Value>) -> Result<i64, InventoryError> {
    v.and_then(Value::as_i64)
        .ok_or_else(|| InventoryError::Protocol(format!("expected an integer, got {v:?}")))
}

fn uint(v: Option<&Value>) -> Result<u64, InventoryError> {
    let i = int(v)?;
    u64::try_from(i).map_err(|_| InventoryError::Protocol(format!("negative count {i}")))
}

fn ms_to_time(ms: i64) -> Result<DateTime<Utc>, InventoryError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| InventoryError::Protocol(format!("timestamp out of range: {ms}")))
}

impl RedisInventory {
    /// An inventory over `client` (connected by the caller, possibly shared) with the
    /// key prefix and timings of `config`, loading its scripts.
    ///
    /// # Errors
    /// [`InventoryError::InvalidConfig`] for an invalid `config`; Redis failed to load the
    /// scripts.
    pub async fn new(client: RedisClient, config: RedisConfig) -> Result<Self, InventoryError> {
        config.validate()?;
        client.load_functions().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                products_key: Key::from(format!("{}:products", config.key_prefix)),
                client,
                config,
                keys: RwLock::new(HashMap::new()),
                consumer: format!("relay-{:016x}", rand::random::<u64>()),
                known: Mutex::new((None, Vec::new())),
                sold_out: RwLock::new(HashMap::new()),
                refreshing: Mutex::new(std::collections::HashSet::new()),
                lanes: batch::Lanes::default(),
                last_claim: Mutex::new(None),
            }),
        })
    }

    /// Connects to the Redis of `config` and builds an inventory on it in one step.
    ///
    /// # Errors
    /// [`InventoryError::InvalidConfig`] for an invalid `config`; Redis could not be reached
    /// or refused the scripts.
    pub async fn connect(config: RedisConfig) -> Result<Self, InventoryError> {
        let client = RedisClient::connect(&config).await?;
        Self::new(client, config).await
    }

    /// Sells `requests` of one product in one call, in order, each answered exactly as alone
    /// (what the group commit of [`Inventory::purchase`] sends; for tools and tests).
    ///
    /// # Errors
    /// Backend failures: then each request may or may not have run.
    ///
    /// # Panics
    /// When the requests are not all of `product_id`.
    pub async fn purchase_batch(
        &self,
        product_id: u64,
        requests: &[PurchaseRequest],
    ) -> Result<Vec<PurchaseOutcome>, InventoryError> {
        assert!(requests.iter().all(|r| r.product_id == product_id));
        let refs: Vec<&PurchaseRequest> = requests.iter().collect();
        batch::call(&self.inner, product_id, &refs).await
    }

    /// Refuses a Redis that persists nothing (neither AOF nor RDB snapshots) unless the
    /// configuration's `allow_volatile` is set: its restart would forget every sale not yet
    /// stored as an order, and the stock and buyers of every sale.
    ///
    /// # Errors
    /// [`InventoryError::InvalidConfig`] for `allow_volatile`, saying what the server persists
    /// and how to fix it; backend failures (a server that refuses `CONFIG GET` is refused too:
    /// its persistence cannot be known).
    pub async fn check_durability(&self) -> Result<(), InventoryError> {
        let c = &self.inner.config;
        if c.allow_volatile {
            return Ok(());
        }
        let (aof, rdb) = self.inner.client.persistence().await.map_err(|e| {
            InventoryError::InvalidConfig {
                key: "allow_volatile",
                reason: format!(
                    "cannot read the persistence of Redis at {}:{} ({e}); set redis.allow_volatile: true if it persists",
                    c.host, c.port
                ),
            }
        })?;
        if aof || rdb {
            return Ok(());
        }
        Err(InventoryError::InvalidConfig {
            key: "allow_volatile",
            reason: format!(
                "Redis at {}:{} persists nothing (appendonly no, save \"\"): a restart would forget every sale; \
                 enable AOF (appendonly yes, appendfsync everysec) or RDB snapshots, or set redis.allow_volatile: true to accept that",
                c.host, c.port
            ),
        })
    }

    /// Rebuilds a loaded activity's stock and buyers from `sale` (the order store's record of
    /// its current epoch): the reconciler's repair. Only safe while nothing is in transit (no
    /// sale in the outbox or on its way to the order store): a sale not in `sale` is forgotten.
    /// Answers [`PrewarmOutcome::Restored`].
    ///
    /// # Errors
    /// [`InventoryError::InvalidActivity`] for a bad field, or a backend failure.
    pub async fn repair(
        &self,
        activity: &Activity,
        sale: &RecordedSale,
    ) -> Result<PrewarmOutcome, InventoryError> {
        self.load_recorded(activity, sale, true).await
    }

    async fn load_recorded(
        &self,
        activity: &Activity,
        sale: &RecordedSale,
        repair: bool,
    ) -> Result<PrewarmOutcome, InventoryError> {
        activity.validate()?;
        let k = self.inner.keys(activity.product_id);
        let expire_at = self.inner.expire_at(activity);
        let after = sale
            .orders
            .iter()
            .map(|o| o.order_id.seq)
            .max()
            .unwrap_or(0);
        let mut args = Inner::activity_args(activity);
        args.extend([
            expire_at.to_string().into(),
            RELAY_GROUP.into(),
            sale.epoch.max(1).to_string().into(),
            crate::sequence_base(after).to_string().into(),
            if repair { "1" } else { "0" }.into(),
        ]);
        for o in &sale.orders {
            args.push(o.order_id.seq.to_string().into());
            args.push(o.user_id.to_string().into());
            args.push(o.quantity.to_string().into());
        }
        let reply: Vec<i64> = self
            .inner
            .client
            .fcall(functions::op::restore, k.loading(), args)
            .await?;
        let at = |i: usize| {
            reply
                .get(i)
                .and_then(|e| u64::try_from(*e).ok())
                .unwrap_or(0)
        };
        let outcome = match reply.first() {
            Some(0) => PrewarmOutcome::Unchanged { epoch: at(1) },
            Some(3) => PrewarmOutcome::Restored {
                epoch: at(1),
                orders: sale.orders.len() as u64,
                remaining_stock: at(2),
            },
            _ => {
                return Err(InventoryError::Protocol(format!(
                    "restore replied {reply:?}"
                )));
            }
        };
        self.inner.loaded(activity.product_id).await?;
        Ok(outcome)
    }

    /// The live sales (not cancelled) of the product's current epoch as Redis holds them:
    /// the reconciler compares them with the order store's record. `None` when the product
    /// is not loaded.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn sales(&self, product_id: u64) -> Result<Option<RecordedSale>, InventoryError> {
        let k = self.inner.keys(product_id);
        let client = self.inner.client.next();
        // The epoch before and after the read: a prewarm in between is read again.
        for _ in 0..3 {
            let before: Option<u64> = client.get(k.epoch.clone()).await.map_err(backend)?;
            let Some(epoch) = before else { return Ok(None) };
            let held: HashMap<String, String> =
                client.hgetall(k.orders.clone()).await.map_err(backend)?;
            let after: Option<u64> = client.get(k.epoch.clone()).await.map_err(backend)?;
            if after != Some(epoch) {
                continue;
            }
            let mut orders = Vec::with_capacity(held.len());
            for (seq, v) in &held {
                // `_` carries the hash's expiry; `x…` orders were cancelled.
                if seq == "_" || v.starts_with('x') {
                    continue;
                }
                let parsed = seq.parse::<u64>().ok().zip(
                    v.split_once('|')
                        .and_then(|(u, q)| u.parse::<u64>().ok().zip(q.parse::<u32>().ok())),
                );
                let Some((seq, (user_id, quantity))) = parsed else {
                    return Err(InventoryError::Protocol(format!(
                        "order {seq} of product {product_id} holds {v:?}"
                    )));
                };
                orders.push(RecordedOrder {
                    order_id: OrderId { product_id, seq },
                    user_id,
                    quantity,
                });
            }
            orders.sort_by_key(|o| o.order_id.seq);
            return Ok(Some(RecordedSale { epoch, orders }));
        }
        Err(InventoryError::Protocol(format!(
            "product {product_id} was prewarmed again during the read"
        )))
    }

    /// The configuration in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The connection pool (to share it, e.g. with a [`crate::RedisLock`]).
    pub fn client(&self) -> &RedisClient {
        &self.inner.client
    }

    /// Deletes every key under this inventory's prefix (for tests and tenant removal): SCAN,
    /// never KEYS, and UNLINK, so a long outbox is freed in the background.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn purge(&self) -> Result<u64, InventoryError> {
        // The prefix is matched literally: one containing `*` or `[` purges only its own keys.
        let s = &*self.inner;
        let literal = format!("{}:", s.config.key_prefix);
        let removed = seckill_redis_support::purge(s.client.next(), &literal, "*")
            .await
            .map_err(backend)?;
        s.keys.write().clear();
        *s.known.lock() = (None, Vec::new());
        Ok(removed)
    }
}

impl Inner {
    async fn read_activity(&self, product_id: u64) -> Result<Option<Activity>, InventoryError> {
        let k = self.keys(product_id);
        let h: HashMap<String, String> = self
            .client
            .next()
            .hgetall(k.activity.clone())
            .await
            .map_err(backend)?;
        if h.is_empty() {
            return Ok(None);
        }
        let get = |f: &str| {
            h.get(f)
                .ok_or_else(|| InventoryError::Protocol(format!("activity {product_id} lacks {f}")))
        };
        let num = |f: &str| -> Result<i64, InventoryError> {
            get(f)?
                .parse()
                .map_err(|_| InventoryError::Protocol(format!("activity {product_id}: bad {f}")))
        };
        Ok(Some(Activity {
            product_id,
            product_name: get("name")?.clone(),
            price_cents: u64::try_from(num("price")?).unwrap_or(0),
            stock: u64::try_from(num("initial")?).unwrap_or(0),
            start_time: ms_to_time(num("start")?)?,
            end_time: ms_to_time(num("end")?)?,
            status: if get("status")? == "active" {
                ActivityStatus::Active
            } else {
                ActivityStatus::Inactive
            },
            per_user_limit: u32::try_from(num("limit")?).unwrap_or(1),
        }))
    }

    fn keys(&self, product_id: u64) -> Arc<ProductKeys> {
        if let Some(k) = self.keys.read().get(&product_id) {
            return k.clone();
        }
        let p = &self.config.key_prefix;
        let k = |suffix: &str| Key::from(format!("{p}:{{{product_id}}}:{suffix}"));
        let keys = Arc::new(ProductKeys {
            activity: k("activity"),
            buyers: k("buyers"),
            orders: k("orders"),
            idem: k("idem"),
            seq: k("seq"),
            epoch: k("epoch"),
            outbox: k("outbox"),
            outbox_count: k("outbox_n"),
            outbox_name: format!("{p}:{{{product_id}}}:outbox"),
        });
        self.keys.write().insert(product_id, keys.clone());
        keys
    }

    /// Answers a purchase of a product known to be sold out, in the script's order of checks;
    /// `None` when Redis must answer (unknown, expired, or an idempotent replay).
    fn sold_out_answer(&self, req: &PurchaseRequest) -> Option<PurchaseOutcome> {
        let so = self.sold_out.read().get(&req.product_id).cloned()?;
        if Instant::now() >= so.until {
            return None;
        }
        if so.status != ActivityStatus::Active {
            return Some(PurchaseOutcome::Inactive);
        }
        let now = Utc::now().timestamp_millis();
        if now < so.start_ms || now >= so.end_ms {
            return None;
        }
        if req.quantity == 0 || req.quantity > so.limit {
            return Some(PurchaseOutcome::InvalidQuantity { max: so.limit });
        }
        if so.buyers.contains(&req.user_id) {
            // A buyer's retry wants its order back (a replay), which only Redis has.
            return None;
        }
        Some(PurchaseOutcome::SoldOut { remaining_stock: 0 })
    }

    /// Reads the sold-out product's activity and buyers, once at a time per product.
    async fn remember_sold_out(&self, product_id: u64) -> Result<(), InventoryError> {
        if !self.refreshing.lock().insert(product_id) {
            return Ok(());
        }
        let result = async {
            let k = self.keys(product_id);
            // Stock first: once it reads zero, no buyer can join until a cancel returns an item,
            // so the buyers read afterwards include everyone who bought.
            let stock: Option<i64> = self
                .client
                .next()
                .hget(k.activity.clone(), "stock")
                .await
                .map_err(backend)?;
            if stock != Some(0) {
                return Ok(());
            }
            let (activity, buyers): (Option<Activity>, Vec<String>) =
                tokio::try_join!(self.read_activity(product_id), async {
                    self.client
                        .next()
                        .hkeys(k.buyers.clone())
                        .await
                        .map_err(backend)
                })?;
            if let Some(a) = activity {
                let entry = SoldOut {
                    until: Instant::now() + self.config.sold_out_cache,
                    status: a.status,
                    start_ms: a.start_ms(),
                    end_ms: a.end_ms(),
                    limit: a.per_user_limit,
                    buyers: buyers.iter().filter_map(|b| b.parse().ok()).collect(),
                };
                self.sold_out.write().insert(product_id, Arc::new(entry));
            }
            Ok(())
        }
        .await;
        self.refreshing.lock().remove(&product_id);
        result
    }

    /// After a prewarm or a restore: the product is in the relay's set and nothing cached of
    /// its earlier state stays.
    async fn loaded(&self, product_id: u64) -> Result<(), InventoryError> {
        self.forget_sold_out(product_id);
        self.client
            .next()
            .sadd::<(), _, _>(self.products_key.clone(), product_id.to_string())
            .await
            .map_err(backend)?;
        self.known.lock().0 = None;
        Ok(())
    }

    /// When the activity's keys expire: a grace period after its end.
    fn expire_at(&self, a: &Activity) -> i64 {
        a.end_ms().saturating_add(
            i64::try_from(self.config.key_grace.as_millis()).unwrap_or(i64::MAX / 2),
        )
    }

    fn forget_sold_out(&self, product_id: u64) {
        self.sold_out.write().remove(&product_id);
    }

    /// The activity's fields as the prewarm and restore functions take them first
    /// (ARGV[1..8]: fingerprint, name, price, stock, start, end, status, per-user limit).
    fn activity_args(a: &Activity) -> Vec<Value> {
        vec![
            Self::fingerprint(a).into(),
            a.product_name.clone().into(),
            a.price_cents.to_string().into(),
            a.stock.to_string().into(),
            a.start_ms().to_string().into(),
            a.end_ms().to_string().into(),
            a.status.as_str().into(),
            a.per_user_limit.to_string().into(),
        ]
    }

    fn fingerprint(a: &Activity) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            a.product_name,
            a.price_cents,
            a.stock,
            a.start_ms(),
            a.end_ms(),
            a.status.as_str(),
            a.per_user_limit
        )
    }
}

#[async_trait]
impl Inventory for RedisInventory {
    async fn prewarm(
        &self,
        activity: &Activity,
        force: bool,
    ) -> Result<PrewarmOutcome, InventoryError> {
        activity.validate()?;
        let k = self.inner.keys(activity.product_id);
        let expire_at = self.inner.expire_at(activity);
        let reply: Vec<i64> = self
            .inner
            .client
            .fcall(
                functions::op::prewarm,
                k.loading(),
                [
                    Inner::activity_args(activity),
                    vec![
                        if force { "1" } else { "0" }.into(),
                        expire_at.to_string().into(),
                        RELAY_GROUP.into(),
                        crate::sequence_base(0).to_string().into(),
                    ],
                ]
                .concat(),
            )
            .await?;
        let epoch = || {
            reply
                .get(1)
                .and_then(|e| u64::try_from(*e).ok())
                .unwrap_or(0)
        };
        let outcome = match reply.first() {
            Some(0) => PrewarmOutcome::Unchanged { epoch: epoch() },
            Some(1) => PrewarmOutcome::Created { epoch: epoch() },
            Some(2) => PrewarmOutcome::Replaced { epoch: epoch() },
            Some(-1) => PrewarmOutcome::SaleStarted,
            _ => {
                return Err(InventoryError::Protocol(format!(
                    "prewarm replied {reply:?}"
                )));
            }
        };
        if !matches!(outcome, PrewarmOutcome::SaleStarted) {
            self.inner.loaded(activity.product_id).await?;
        }
        Ok(outcome)
    }

    async fn restore(
        &self,
        activity: &Activity,
        sale: &RecordedSale,
    ) -> Result<PrewarmOutcome, InventoryError> {
        self.load_recorded(activity, sale, false).await
    }

    async fn purchase(&self, request: &PurchaseRequest) -> Result<PurchaseOutcome, InventoryError> {
        if !self.inner.config.sold_out_cache.is_zero() {
            if let Some(answer) = self.inner.sold_out_answer(request) {
                return Ok(answer);
            }
        }
        batch::purchase(&self.inner, request).await
    }

    async fn activity(&self, product_id: u64) -> Result<Option<Activity>, InventoryError> {
        self.inner.read_activity(product_id).await
    }

    async fn stats(&self, product_id: u64) -> Result<Option<InventoryStats>, InventoryError> {
        let k = self.inner.keys(product_id);
        let r: Vec<Value> = self
            .inner
            .client
            .fcall(
                functions::op::stats,
                vec![k.activity.clone(), k.buyers.clone(), k.outbox_count.clone()],
                vec![],
            )
            .await?;
        if r.is_empty() {
            return Ok(None);
        }
        let initial = uint(r.get(1))?;
        let remaining = uint(r.get(2))?;
        Ok(Some(InventoryStats {
            product_id,
            epoch: uint(r.first())?,
            initial_stock: initial,
            remaining_stock: remaining,
            sold: initial.saturating_sub(remaining),
            cancelled: uint(r.get(3))?,
            buyers: uint(r.get(4))?,
            outbox_pending: uint(r.get(5))?,
        }))
    }

    async fn purchase_of(
        &self,
        product_id: u64,
        user_id: u64,
    ) -> Result<Option<OrderId>, InventoryError> {
        let k = self.inner.keys(product_id);
        let seq: Option<u64> = self
            .inner
            .client
            .next()
            .hget(k.buyers.clone(), user_id.to_string())
            .await
            .map_err(backend)?;
        Ok(seq.map(|seq| OrderId { product_id, seq }))
    }

    async fn cancel(&self, order_id: OrderId) -> Result<CancelOutcome, InventoryError> {
        self.inner.forget_sold_out(order_id.product_id);
        let k = self.inner.keys(order_id.product_id);
        let reply: Vec<i64> = self
            .inner
            .client
            .fcall(
                functions::op::cancel,
                vec![k.activity.clone(), k.buyers.clone(), k.orders.clone()],
                vec![Value::Integer(order_id.seq as i64)],
            )
            .await?;
        Ok(match reply.first() {
            Some(1) => CancelOutcome::Cancelled {
                quantity: reply
                    .get(1)
                    .and_then(|q| u32::try_from(*q).ok())
                    .unwrap_or(0),
                remaining_stock: reply
                    .get(2)
                    .and_then(|r| u64::try_from(*r).ok())
                    .unwrap_or(0),
            },
            Some(2) => CancelOutcome::AlreadyCancelled,
            Some(0) => CancelOutcome::NotFound,
            _ => {
                return Err(InventoryError::Protocol(format!(
                    "cancel replied {reply:?}"
                )));
            }
        })
    }

    async fn outbox_read(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, InventoryError> {
        self.inner.read_outbox(max, block).await
    }

    async fn outbox_ack(&self, ids: &[String]) -> Result<(), InventoryError> {
        self.inner.ack_outbox(ids).await
    }

    async fn outbox_len(&self) -> Result<u64, InventoryError> {
        let products = self.inner.products().await?;
        if products.is_empty() {
            return Ok(0);
        }
        let keys: Vec<Key> = products
            .iter()
            .map(|&p| self.inner.keys(p).outbox_count.clone())
            .collect();
        let counts: Vec<Option<i64>> =
            self.inner.client.next().mget(keys).await.map_err(backend)?;
        Ok(counts
            .into_iter()
            .map(|c| u64::try_from(c.unwrap_or(0)).unwrap_or(0))
            .sum())
    }

    /// The products whose sales this Redis holds (those prewarmed, until their sale ended).
    async fn products(&self) -> Result<Vec<u64>, InventoryError> {
        self.inner.products().await
    }

    fn connections(&self) -> Option<(usize, usize)> {
        Some(self.inner.client.connections())
    }

    async fn ping(&self) -> Result<(), InventoryError> {
        use fred::interfaces::ClientLike;
        self.inner
            .client
            .next()
            .ping::<String>(None)
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
