//! The seckill HTTP API.
//!
//! Composes the inventory, the broker and the order store behind the routes of the flash-sale
//! service, with the purchase path guarded in this order: degradation → rate limits → request
//! queue → circuit breaker → inventory. The embedded order pipeline (outbox relay, order
//! consumer, asynchronous purchase workers) runs beside it and drains on shutdown.
//!
//! # Layout
//! - [`router`]: the route table. Handlers live in private modules.
//! - [`state`]: [`AppState`], shared by the handlers.
//! - [`flow`]: [`FlowControl`], the purchase path's protections.
//! - [`pipeline`]: the relay, the workers and [`Pipeline`]'s drain.
//! - [`lifecycle`]: pay, cancel and the sweeper of unpaid orders.
//! - [`settings`]: the validated [`Settings`].
//! - [`stats`]: request counters.
//! - [`error`]: [`ApiError`] and the envelope's [`codes`](error::codes).
//!
//! # Example
//! ```
//! use seckill_api::{App, Components, Settings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::start(Settings::default(), Components::embedded(), None).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(seckill_api::serve(listener, app, async {}));
//! server.await??; // the shutdown future above is already complete: serve drains and returns
//! # let _ = addr;
//! # Ok(())
//! # }
//! ```

mod handlers;

pub mod error;
pub mod flow;
pub mod lifecycle;
pub mod pipeline;
pub mod router;
pub mod settings;
pub mod state;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use seckill_inventory::{Inventory, MemoryInventory};
use seckill_mq::{Broker, MemoryBroker};
use seckill_orders::{MemoryOrderStore, OrderStore};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use error::ApiError;
pub use flow::FlowControl;
pub use pipeline::Pipeline;
pub use settings::{DegradationSettings, LimitAlgorithm, RateLimitSettings, Settings};
pub use state::{AppState, MetricsRender};

use crate::pipeline::{AsyncResults, JobRunner, PipelineParts, ResultStore};
use crate::state::Inner;
use crate::stats::Stats;

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

/// A started application: routes plus the running pipeline.
pub struct App {
    /// The routes, ready to serve.
    pub router: axum::Router,
    /// The background pipeline.
    pub pipeline: Pipeline,
    /// The shared state.
    pub state: AppState,
}

impl App {
    /// Builds the state and starts the pipeline.
    ///
    /// # Errors
    /// The broker refused the order consumer's subscription.
    pub async fn start(
        settings: Settings,
        components: Components,
        metrics_render: Option<MetricsRender>,
    ) -> Result<Self, seckill_mq::MqError> {
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let results = components.results.clone().unwrap_or_else(|| {
            Arc::new(AsyncResults::new(settings.result_ttl)) as Arc<dyn ResultStore>
        });
        let inner = Arc::new(Inner {
            inventory: components.inventory.clone(),
            orders: components.orders.clone(),
            broker: components.broker.clone(),
            flow: FlowControl::new(&settings),
            stats: Stats::default(),
            results: results.clone(),
            jobs: tx.clone(),
            settings: settings.clone(),
            started: tokio::time::Instant::now(),
            metrics_render,
            purchase_latency: metrics::histogram!("seckill_purchase_duration_seconds"),
        });
        tokio::spawn(report_gauges(Arc::downgrade(&inner)));
        let pipeline = Pipeline::start(
            PipelineParts {
                inventory: components.inventory,
                broker: components.broker,
                orders: components.orders,
                runner: inner.clone() as Arc<dyn JobRunner>,
                results,
                workers: settings.async_workers.get(),
                payment_timeout: settings.payment_timeout,
                sweep_interval: settings.sweep_interval,
                result_ttl: settings.result_ttl,
            },
            (tx, rx),
        )
        .await?;
        let state = AppState(inner);
        Ok(Self {
            router: router::router(state.clone()),
            pipeline,
            state,
        })
    }
}

/// Exports the service's levels as gauges every second while the application lives: the
/// request queue, the load and degradation, and the pipeline's backlog.
async fn report_gauges(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = inner.upgrade() else { return };
        let q = s.flow.queue();
        metrics::gauge!("seckill_requests_in_flight").set(q.in_flight() as f64);
        metrics::gauge!("seckill_request_queue_waiting").set(q.waiting() as f64);
        metrics::gauge!("seckill_load").set(s.flow.load());
        let degraded = s
            .flow
            .degradation()
            .forced()
            .unwrap_or(s.flow.degradation().is_degraded());
        metrics::gauge!("seckill_degraded").set(if degraded { 1.0 } else { 0.0 });
        if let Ok(n) = s.inventory.outbox_len().await {
            metrics::gauge!("seckill_outbox_pending").set(n as f64);
        }
        if let Ok(Some(n)) = s
            .broker
            .pending(
                seckill_mq::Topic::OrderCreated,
                seckill_orders::ORDER_SERVICE_GROUP,
            )
            .await
        {
            metrics::gauge!("seckill_orders_queued").set(n as f64);
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, finishes the
/// requests in flight and drains the pipeline (bounded by the settings' `drain_timeout`).
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain_timeout = app.state.0.settings.drain_timeout;
    // The peer address is only needed by the per-IP limit; without it, requests skip the layer.
    let served = if app.state.0.settings.per_ip_limit.is_some() {
        axum::serve(
            listener,
            app.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    } else {
        axum::serve(listener, app.router)
            .with_graceful_shutdown(shutdown)
            .await
    };
    tracing::info!("HTTP server stopped; draining the order pipeline");
    let drained = app.pipeline.shutdown(drain_timeout).await;
    tracing::info!(drained, "order pipeline stopped");
    served
}
