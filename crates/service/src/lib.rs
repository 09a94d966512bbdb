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
//! - `stats`: request counters by [`Outcome`].
//! - `error`: [`ServiceError`] and [`codes`].
//!
//! # Example
//! ```
//! use seckill_service::{ActivityInput, Components, PurchaseInput, Sale, Service, ServiceError, Settings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (service, pipeline) =
//!     Service::start(Settings::default(), &Default::default(), Components::embedded()).await?;
//! let now = chrono::Utc::now();
//! service
//!     .prewarm(ActivityInput {
//!         product_id: 1001,
//!         product_name: "iPhone 15 Pro".into(),
//!         price: 8999.0,
//!         stock: 1,
//!         start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
//!         end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
//!         ..Default::default()
//!     })
//!     .await?;
//! let buy = |user_id| PurchaseInput { product_id: 1001, user_id, ..Default::default() };
//! let request = service.purchase_request(buy(2001))?;
//! let outcome = service.purchase(&request, None).await?;
//! let sale = Sale::from_outcome(&request, &outcome).expect("sold");
//! assert_eq!(sale.remaining_stock, 0);
//! // Business outcomes are values; each maps to the code every front answers with.
//! let outcome = service.purchase(&service.purchase_request(buy(2002))?, None).await?;
//! let refused = ServiceError::from_outcome(&outcome).expect("not a sale");
//! assert_eq!(refused.code(), seckill_service::codes::SOLD_OUT);
//! assert!(pipeline.shutdown(std::time::Duration::from_secs(5)).await, "the sale reached the order store");
//! assert_eq!(service.order(&sale.order_id).await?.user_id, 2001);
//! # Ok(())
//! # }
//! ```

mod activity;
mod error;
mod flow;
mod levers;
mod lifecycle;
mod orders;
mod pipeline;
mod purchase;
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

pub use activity::{ActivityInput, Prewarmed, ProductStats};
pub use error::{BusyReason, LimitLevel, Missing, Refusal, ServiceError, codes};
pub use flow::{FlowControl, GlobalLimit};
pub use levers::{DegradationMode, RateLimitChange, RateLimitView, SystemStats};
pub use lifecycle::{ReturnFailed, return_stock, sweep_once};
pub use pipeline::{
    PURCHASE_WORKERS_GROUP, Pipeline, consumer_groups, order_created, purchase_requested,
};
pub use purchase::{Accepted, PurchaseInput, Sale};
#[cfg(feature = "redis")]
pub use results::RedisResults;
pub use results::{AsyncResults, AsyncStatus, ResultStore, ResultStoreError};
pub use settings::{ConfigError, DegradationSettings, KeyedLimit, RateLimits, Settings};
pub use stats::{Outcome, OutcomeCount, Stats};

use crate::pipeline::Job;

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
    /// settings' `result_ttl`.
    pub results: Option<Arc<dyn ResultStore>>,
}

impl Components {
    /// Everything in process: embedded mode.
    pub fn embedded() -> Self {
        Self {
            inventory: Arc::new(MemoryInventory::new()),
            broker: Arc::new(MemoryBroker::new()),
            orders: Arc::new(MemoryOrderStore::new()),
            results: None,
        }
    }
}

/// The purchase service; cloning is one reference count.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) inventory: Arc<dyn Inventory>,
    pub(crate) orders: Arc<dyn OrderStore>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) flow: FlowControl,
    pub(crate) stats: Stats,
    pub(crate) results: Arc<dyn ResultStore>,
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) settings: Settings,
    pub(crate) started: Instant,
    /// `seckill_purchase_duration_seconds`, resolved once.
    pub(crate) purchase_latency: metrics::Histogram,
}

impl Service {
    /// Builds the service on `components` and starts its pipeline. `orders` gives the order
    /// lifecycle's `payment_timeout` and `sweep_interval`.
    ///
    /// # Errors
    /// The broker refused a subscription of the pipeline.
    pub async fn start(
        settings: Settings,
        orders: &OrdersConfig,
        components: Components,
    ) -> Result<(Self, Pipeline), seckill_mq::MqError> {
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let results = components.results.clone().unwrap_or_else(|| {
            Arc::new(AsyncResults::new(settings.result_ttl)) as Arc<dyn ResultStore>
        });
        let inner = Arc::new(Inner {
            inventory: components.inventory,
            orders: components.orders,
            broker: components.broker,
            flow: FlowControl::new(&settings),
            stats: Stats::default(),
            results,
            jobs: tx.clone(),
            settings,
            started: Instant::now(),
            purchase_latency: metrics::histogram!("seckill_purchase_duration_seconds"),
        });
        tokio::spawn(report_gauges(Arc::downgrade(&inner)));
        let pipeline = Pipeline::start(inner.clone(), orders, (tx, rx)).await?;
        Ok((Self(inner), pipeline))
    }

    /// The flow-control state (for operators and tests).
    pub fn flow(&self) -> &FlowControl {
        &self.0.flow
    }

    /// The settings the service runs with.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = inner.upgrade() else { return };
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
