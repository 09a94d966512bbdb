//! The seckill HTTP API: an adapter over [`seckill_service::Service`].
//!
//! Each handler extracts the request (JSON body, path, headers, the peer address), calls the
//! service and maps its answer to the envelope `{"code", "message", "data"}` with an HTTP
//! status. The purchase path, the pipeline and every rule live in the service, so any other
//! front behaves the same.
//!
//! # Layout
//! - [`router`]: the route table. Handlers live in private modules.
//! - [`ServerConfig`] (`settings`): the `server` section.
//! - [`error`]: [`ApiError`] and the envelope's [`codes`](error::codes).
//!
//! # Example
//! ```
//! use seckill_api::{App, ServerConfig};
//! use seckill_service::{Components, Service, Settings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (service, pipeline) =
//!     Service::start(Settings::default(), &Default::default(), Components::embedded()).await?;
//! let app = App::new(service, pipeline, ServerConfig::default(), None);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // The shutdown future is already complete: serve stops at once and drains the pipeline.
//! seckill_api::serve(listener, app, async {}).await?;
//! # Ok(())
//! # }
//! ```

mod handlers;

pub mod error;
pub mod router;
mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use seckill_service::{Pipeline, Service};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use settings::{ConfigError, ServerConfig};

/// Renders the metrics exposition text (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler shares; cloning is a few reference counts.
#[derive(Clone)]
pub struct AppState {
    pub(crate) service: Service,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics_render: Option<MetricsRender>,
}

/// A started application: the routes over a running service and its pipeline.
pub struct App {
    /// The routes, ready to serve.
    pub router: axum::Router,
    /// The service behind them.
    pub service: Service,
    /// The background pipeline, drained by [`serve`] at shutdown.
    pub pipeline: Pipeline,
    /// The `server` section.
    pub config: ServerConfig,
}

impl App {
    /// The routes over `service`; `/metrics` serves `metrics_render` when given.
    pub fn new(
        service: Service,
        pipeline: Pipeline,
        config: ServerConfig,
        metrics_render: Option<MetricsRender>,
    ) -> Self {
        let state = AppState {
            service: service.clone(),
            max_body_bytes: config.max_body_bytes,
            metrics_render,
        };
        Self {
            router: router::router(state),
            service,
            pipeline,
            config,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, finishes the
/// requests in flight and drains the pipeline (bounded by `server.shutdown_timeout`).
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    tracing::info!("HTTP server stopped; draining the order pipeline");
    let drained = app.pipeline.shutdown(app.config.shutdown_timeout).await;
    tracing::info!(drained, "order pipeline stopped");
    served
}
