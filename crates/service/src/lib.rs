//! The seckill purchase service, free of any transport.
//!
//! [`Service`] is what every front (HTTP, gRPC) calls: the purchase path guarded in this order —
//! degradation → rate limits → request queue → circuit breaker → inventory — asynchronous
//! purchases and their results, prewarm, stats, the order lifecycle (pay, cancel) and the
//! operators' levers. Its answers are domain values and [`ServiceError`]s, each with the stable
//! code of [`codes`]; a front only maps them to its wire form, so every front behaves the same.
//! Beside it runs the [`Pipeline`]: the outbox relay, the order consumers, the asynchronous
//! purchase workers and the sweeper of unpaid orders, with a drain for graceful shutdown.
//!
//! # Layout
//! - [`Service`] and [`Components`] (this module), [`Settings`] (`settings`).
//! - `purchase`: validated purchase requests, synchronous and asynchronous purchases.
//! - `activity`: prewarm input and the product views.
//! - `orders`: reading, paying and cancelling orders.
//! - `levers`: the degradation and rate-limit levers, the system view.
//! - `flow`: [`FlowControl`], the purchase path's protections.
//! - `pipeline`: [`Pipeline`], the relay and the workers; `results`: [`ResultStore`].
//! - `lifecycle`: returning stock and the sweeper.
//! - `antibot`: [`Antibot`], purchase tokens and the proof-of-work challenge before them.
//! - `stats`: request counters by [`Outcome`].
//! - `auth`: [`AuthConfig`], [`Authenticator`] and the [`Caller`] every call names.
//! - `error`: [`ServiceError`] and [`codes`].
//!
//! # Example
//! ```
//! use seckill_service::{ActivityInput, Components, PurchaseInput, Sale, Service, ServiceConfig, ServiceError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (service, pipeline) = Service::start(ServiceConfig::default(), Components::embedded()).await?;
//! // An operator: in mode none, a peer in auth.admin_allow (loopback by default).
//! let operator = service.authenticate(None, Some([127, 0, 0, 1].into()))?;
//! let buyer = service.authenticate(None, Some([203, 0, 113, 7].into()))?;
//! let now = chrono::Utc::now();
//! service
//!     .prewarm(&operator, ActivityInput {
//!         product_id: 1001,
//!         product_name: "iPhone 15 Pro".into(),
//!         price: 8999.0,
//!         stock: 1,
//!         start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
//!         end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
//!         ..Default::default()
//!     })
//!     .await?;
//! let buy = |user_id| PurchaseInput { product_id: 1001, user_id: Some(user_id), ..Default::default() };
//! let purchase = service.purchase_request(&buyer, buy(2001))?;
//! let outcome = service.purchase(&purchase, &buyer).await?;
//! let sale = Sale::from_outcome(&purchase.request, &outcome).expect("sold");
//! assert_eq!(sale.remaining_stock, 0);
//! // Business outcomes are values; each maps to the code every front answers with.
//! let outcome = service.purchase(&service.purchase_request(&buyer, buy(2002))?, &buyer).await?;
//! let refused = ServiceError::from_outcome(&outcome).expect("not a sale");
//! assert_eq!(refused.code(), seckill_service::codes::SOLD_OUT);
//! assert!(pipeline.shutdown(std::time::Duration::from_secs(5)).await, "the sale reached the order store");
//! assert_eq!(service.order(&buyer, &sale.order_id).await?.user_id, 2001);
//! # Ok(())
//! # }
//! ```

mod activity;
mod antibot;
mod auth;
mod error;
mod flow;
mod levers;
mod lifecycle;
mod orders;
mod pipeline;
mod purchase;
#[cfg(feature = "redis")]
mod reconcile;
pub mod request_id;
mod results;
mod settings;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{Inventory, MemoryInventory};
use seckill_mq::{Broker, MemoryBroker, Topic};
use seckill_orders::{MemoryOrderStore, ORDER_SERVICE_GROUP, OrderStore, OrdersConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The limiter algorithms and the breaker configuration the settings name.
pub use seckill_flowcontrol::{Algorithm, BreakerConfig};

pub use activity::{ActivityInput, Prewarmed, ProductStats, Purchased};
pub use antibot::*;
pub use auth::{AuthConfig, AuthMode, Authenticator, Caller, JwtConfig, mint_token};
pub use error::{BusyReason, Denied, LimitLevel, Missing, Refusal, ServiceError, codes};
pub use flow::{FlowControl, GlobalLimit};
pub use levers::{DegradationMode, RateLimitChange, RateLimitView, SystemStats};
pub use lifecycle::{ReturnFailed, return_stock, sweep_once};
pub use pipeline::{
    PURCHASE_WORKERS_GROUP, Pipeline, consumer_groups, order_created, purchase_requested,
};
pub use purchase::{Accepted, Purchase, PurchaseInput, Sale};
#[cfg(feature = "redis")]
pub use reconcile::{
    Drift, ReconcileError, ReconcilerConfig, reconcile, redeliver, run_reconciler,
};
#[cfg(feature = "redis")]
pub use results::RedisResults;
pub use results::{
    AsyncResult, AsyncResults, AsyncStatus, DEFAULT_RESULT_CAPACITY, ResultStore, ResultStoreError,
};
pub use settings::{ConfigError, DegradationSettings, KeyedLimit, RateLimits, Settings};
pub use stats::{Outcome, OutcomeCount, Rejection, Stats};

use crate::pipeline::Job;

/// Describes every metric the service and its order pipeline record (help text and units) to
/// the installed recorder; call once after installing it.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    seckill_orders::describe_metrics();
    describe_counter!(
        "seckill_purchase_requests_total",
        Unit::Count,
        "Purchase requests by outcome (success, sold_out, rate_limited, degraded, …)."
    );
    describe_histogram!(
        "seckill_purchase_duration_seconds",
        Unit::Seconds,
        "Time to answer a synchronous purchase, whatever the answer."
    );
    describe_counter!(
        "seckill_rejections_total",
        Unit::Count,
        "Purchases refused by a protection, by level (global, user, ip: rate limits; queue; breaker; degraded)."
    );
    describe_gauge!(
        "seckill_stock_remaining",
        Unit::Count,
        "Items left on sale, by product with a loaded sale (1000 products at most), every 5 s."
    );
    describe_gauge!(
        "seckill_redis_pool_connections",
        Unit::Count,
        "Connections of the Redis pool, by state (connected, configured)."
    );
    describe_counter!(
        "seckill_rate_limited_total",
        Unit::Count,
        "Purchases refused by a rate limit, by level (global, user, ip)."
    );
    describe_gauge!(
        "seckill_inventory_unaccounted_items",
        Unit::Count,
        "Items Redis counts as sold that neither the order store nor the outbox holds, by product (the reconciler's drift; positive while sales are in transit)."
    );
    describe_counter!(
        "seckill_reconciler_redelivered_total",
        Unit::Count,
        "Sales the reconciler sent to the broker again because the order store lacked them."
    );
    describe_counter!(
        "seckill_activity_restores_total",
        Unit::Count,
        "Prewarms that restored a forgotten activity from the order store."
    );
    describe_gauge!(
        "seckill_circuit_breaker_state",
        "State of the circuit breaker around the inventory: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        "seckill_requests_in_flight",
        Unit::Count,
        "Purchases being served."
    );
    describe_gauge!(
        "seckill_request_queue_waiting",
        Unit::Count,
        "Purchases waiting in the request queue."
    );
    describe_gauge!(
        "seckill_load",
        "Purchases in flight and waiting over slots plus queue (degradation compares it to its threshold)."
    );
    describe_gauge!(
        "seckill_degraded",
        "1 while purchases are refused by degradation (automatic or the operators' lever), else 0."
    );
    describe_gauge!(
        "seckill_outbox_pending",
        Unit::Count,
        "Sales in the inventory's outbox, not yet relayed to the broker."
    );
    describe_gauge!(
        "seckill_orders_queued",
        Unit::Count,
        "Sales in the broker for the order service, not yet stored."
    );
    describe_counter!(
        "seckill_relay_messages_total",
        Unit::Count,
        "Sales relayed from the outbox to the broker."
    );
    describe_counter!("seckill_orders_paid_total", Unit::Count, "Orders paid.");
    describe_counter!(
        "seckill_orders_expired_total",
        Unit::Count,
        "Unpaid orders cancelled by the sweeper past their deadline."
    );
    describe_counter!(
        "seckill_orders_cancelled_total",
        Unit::Count,
        "Cancelled orders whose items went back on sale."
    );
}

/// The backends the service runs on.
#[derive(Clone)]
pub struct Components {
    /// Stock.
    pub inventory: Arc<dyn Inventory>,
    /// Message broker.
    pub broker: Arc<dyn Broker>,
    /// Order store.
    pub orders: Arc<dyn OrderStore>,
    /// Results of asynchronous purchases; `None` keeps them in this process for the
    /// settings' `result_ttl`, `result_capacity` at most.
    pub results: Option<Arc<dyn ResultStore>>,
    /// Where used purchase tokens and challenges are remembered; `None` keeps them in this
    /// process (enough for one instance; several instances share a Redis ledger).
    pub ledger: Option<Arc<dyn TokenLedger>>,
}

impl Components {
    /// Everything in process: embedded mode.
    pub fn embedded() -> Self {
        Self {
            inventory: Arc::new(MemoryInventory::new()),
            // The pipeline's groups keep what is published before they subscribe; the
            // follow-ups nobody consumes are not kept.
            broker: Arc::new(MemoryBroker::with_groups(crate::consumer_groups())),
            orders: Arc::new(MemoryOrderStore::new()),
            results: None,
            ledger: None,
        }
    }
}

/// Everything the service is configured with: its own section and the sections of the
/// libraries it runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    /// `seckill`: flow control and asynchronous purchases.
    pub seckill: Settings,
    /// `orders`: the order lifecycle's `payment_timeout` and `sweep_interval`.
    pub orders: OrdersConfig,
    /// `auth`: who callers are.
    pub auth: AuthConfig,
    /// `antibot`: purchase tokens and the challenge before them.
    pub antibot: AntibotConfig,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The auth section is invalid (or the key file it names cannot be read).
    #[error("invalid auth.{}: {}", .0.key, .0.reason)]
    Auth(#[source] ConfigError),
    /// The antibot section is invalid.
    #[error("invalid antibot.{}: {}", .0.key, .0.reason)]
    Antibot(#[source] ConfigError),
    /// The broker refused a subscription of the pipeline.
    #[error("the broker refused a subscription")]
    Broker(#[from] seckill_mq::MqError),
}

/// The purchase service; cloning is one reference count.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) inventory: Arc<dyn Inventory>,
    pub(crate) orders: Arc<dyn OrderStore>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) flow: FlowControl,
    pub(crate) auth: Authenticator,
    pub(crate) antibot: Antibot,
    /// Each product's epoch and sale start, as last read (for purchase tokens).
    pub(crate) sales: parking_lot::Mutex<std::collections::HashMap<u64, purchase::SaleWindow>>,
    pub(crate) stats: Stats,
    pub(crate) results: Arc<dyn ResultStore>,
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) settings: Settings,
    /// The lever settings in force (the start's, then each reload's).
    pub(crate) levers: parking_lot::Mutex<Settings>,
    pub(crate) started: Instant,
    /// `seckill_purchase_duration_seconds`, resolved once.
    pub(crate) purchase_latency: metrics::Histogram,
}

impl Service {
    /// Builds the service on `components` and starts its pipeline.
    ///
    /// # Errors
    /// The auth section is unusable (a key file that cannot be read), or the broker refused a
    /// subscription of the pipeline.
    pub async fn start(
        config: ServiceConfig,
        components: Components,
    ) -> Result<(Self, Pipeline), StartError> {
        let ServiceConfig {
            seckill: settings,
            orders,
            auth,
            antibot,
        } = config;
        let auth = Authenticator::new(&auth).map_err(StartError::Auth)?;
        let ledger = components
            .ledger
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryLedger::default()) as Arc<dyn TokenLedger>);
        let antibot = Antibot::new(&antibot, ledger).map_err(StartError::Antibot)?;
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let results = components.results.clone().unwrap_or_else(|| {
            Arc::new(AsyncResults::with_capacity(
                settings.result_ttl,
                settings.result_capacity.get(),
            )) as Arc<dyn ResultStore>
        });
        let inner = Arc::new(Inner {
            inventory: components.inventory,
            orders: components.orders,
            broker: components.broker,
            flow: FlowControl::new(&settings),
            auth,
            antibot,
            sales: Default::default(),
            stats: Stats::default(),
            results,
            jobs: tx.clone(),
            levers: parking_lot::Mutex::new(settings.clone()),
            settings,
            started: Instant::now(),
            purchase_latency: metrics::histogram!("seckill_purchase_duration_seconds"),
        });
        tokio::spawn(report_gauges(Arc::downgrade(&inner)));
        let pipeline = Pipeline::start(inner.clone(), &orders, (tx, rx)).await?;
        Ok((Self(inner), pipeline))
    }

    /// Identifies a caller from the `Authorization` header (or metadata) value and the peer
    /// address; see [`Authenticator::authenticate`].
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for a token that is present but not valid.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, ServiceError> {
        self.0.auth.authenticate(authorization, peer)
    }

    /// Refuses `caller` unless they may use the admin plane, and logs who did `action`.
    ///
    /// # Errors
    /// See [`Caller::require_admin`].
    pub fn authorize_admin(&self, caller: &Caller, action: &str) -> Result<(), ServiceError> {
        caller.require_admin().inspect_err(|_| {
            tracing::warn!(who = %caller, action, "admin action refused");
        })?;
        tracing::info!(who = %caller, action, "admin action");
        Ok(())
    }

    /// The flow-control state (for operators and tests).
    pub fn flow(&self) -> &FlowControl {
        &self.0.flow
    }

    /// The settings the service started with.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Applies the levers of `settings` (validated: see [`Settings::validate`]) at once —
    /// rate limits, degradation, the breaker's settings; see [`FlowControl::reload`] — and
    /// returns the sections that changed since the start or the last reload. The operators'
    /// levers set over the API are replaced by the file's values for the sections that
    /// changed in it.
    pub fn reload(&self, settings: &Settings) -> Vec<&'static str> {
        let mut levers = self.0.levers.lock();
        let changed = self.0.flow.reload(&levers, settings);
        *levers = settings.clone();
        if !changed.is_empty() {
            tracing::warn!(?changed, "levers reloaded from the configuration");
        }
        changed
    }

    /// Request counters.
    pub fn stats(&self) -> &Stats {
        &self.0.stats
    }

    /// Records a purchase request a front refused before it reached the service (unreadable,
    /// too large), so the counters see every request.
    pub fn record_invalid(&self) {
        self.0.stats.count(Outcome::Invalid);
    }

    /// Time since the service started.
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    /// Whether the inventory backend answers.
    ///
    /// # Errors
    /// [`BusyReason::BackendUnavailable`] when it does not.
    pub async fn health(&self) -> Result<(), ServiceError> {
        self.0.inventory.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "health check: inventory backend unreachable");
            self.0.flow.busy(BusyReason::BackendUnavailable)
        })
    }
}

impl Inner {
    /// Logs a backend failure and answers "busy: backend unavailable".
    pub(crate) fn backend(&self, what: &str, e: &dyn std::fmt::Display) -> ServiceError {
        tracing::error!(error = %e, "{what} failed");
        self.flow.busy(BusyReason::BackendUnavailable)
    }
}

/// Exports the service's levels as gauges every second while the service lives: the request
/// queue, the load and degradation, and the pipeline's backlog.
async fn report_gauges(inner: std::sync::Weak<Inner>) {
    /// Products whose stock is exported at most (a bounded label set).
    const STOCK_PRODUCTS: usize = 1000;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        let Some(s) = inner.upgrade() else { return };
        if let Some((up, size)) = s.inventory.connections() {
            metrics::gauge!("seckill_redis_pool_connections", "state" => "connected")
                .set(up as f64);
            metrics::gauge!("seckill_redis_pool_connections", "state" => "configured")
                .set(size as f64);
        }
        // Every 5 s: the stock of each product on sale.
        if ticks % 5 == 1 {
            if let Ok(mut products) = s.inventory.products().await {
                products.sort_unstable();
                for p in products.into_iter().take(STOCK_PRODUCTS) {
                    if let Ok(Some(st)) = s.inventory.stats(p).await {
                        metrics::gauge!("seckill_stock_remaining", "product_id" => p.to_string())
                            .set(st.remaining_stock as f64);
                    }
                }
            }
        }
        let q = s.flow.queue();
        metrics::gauge!("seckill_requests_in_flight").set(q.in_flight() as f64);
        metrics::gauge!("seckill_request_queue_waiting").set(q.waiting() as f64);
        metrics::gauge!("seckill_load").set(s.flow.load());
        metrics::gauge!("seckill_degraded").set(if s.flow.is_degraded() { 1.0 } else { 0.0 });
        if let Ok(n) = s.inventory.outbox_len().await {
            metrics::gauge!("seckill_outbox_pending").set(n as f64);
        }
        if let Ok(Some(n)) = s
            .broker
            .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
        {
            metrics::gauge!("seckill_orders_queued").set(n as f64);
        }
    }
}
