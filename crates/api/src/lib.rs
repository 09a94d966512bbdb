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
//! use seckill_service::{Components, Service, ServiceConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (service, pipeline) = Service::start(ServiceConfig::default(), Components::embedded()).await?;
//! let app = App::new(service, pipeline, ServerConfig::default(), None);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // The shutdown future is already complete: serve stops at once and drains the pipeline.
//! seckill_api::serve(listener, app, async {}).await?;
//! # Ok(())
//! # }
//! ```

mod handlers;

pub mod error;
pub mod openapi;
pub mod request_id;
pub mod router;
mod serve;
mod settings;

use std::future::Future;
use std::sync::Arc;

use seckill_service::{Pipeline, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// The routes, ready to serve: every route, or the public ones only when
    /// `server.admin_port` is set.
    pub router: axum::Router,
    /// The admin plane's own routes, when `server.admin_port` is set.
    pub admin: Option<axum::Router>,
    /// The service behind them.
    pub service: Service,
    /// The background pipeline, drained by [`serve()`] at shutdown.
    pub pipeline: Pipeline,
    /// The `server` section.
    pub config: ServerConfig,
}

impl App {
    /// The routes over `service`; `/metrics` serves `metrics_render` when given. With
    /// `server.admin_port` the admin plane gets a router of its own.
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
        let (router, admin) = if config.admin_port.is_some() {
            let (public, admin) = router::split(state);
            (public, Some(admin))
        } else {
            (router::router(state), None)
        };
        Self {
            router,
            admin,
            service,
            pipeline,
            config,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, finishes the
/// requests in flight and drains the pipeline, each bounded by `server.shutdown_timeout`.
///
/// Connections are held to the `server` section's limits: `header_read_timeout`,
/// `body_read_timeout` (a late body is answered 408), `idle_timeout` and `max_connections`
/// (past it new connections are closed at once).
///
/// # Errors
/// None today: a failed accept (no file descriptors left, say) is logged and retried rather
/// than ending the server.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_admin(listener, None, app, shutdown).await
}

/// [`serve()`] with the admin plane on its own listener (`server.admin_port`): both stop
/// together.
///
/// # Errors
/// The application has an admin router but no admin listener was given, or the other way
/// round.
pub async fn serve_with_admin(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let App {
        router,
        admin,
        pipeline,
        config,
        ..
    } = app;
    let admin = match (admin, admin_listener) {
        (Some(r), Some(l)) => Some((r, l)),
        (None, None) => None,
        _ => {
            return Err(std::io::Error::other(
                "server.admin_port needs its own listener (and only then)",
            ));
        }
    };
    let stop = CancellationToken::new();
    let signal = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
    };
    let http = async {
        let served = serve::serve_router(listener, router, &config, stop.clone()).await;
        stop.cancel();
        served
    };
    let admin_http = async {
        let Some((router, listener)) = admin else {
            return Ok(());
        };
        let served = serve::serve_router(listener, router, &config, stop.clone()).await;
        stop.cancel();
        served
    };
    let (served, admin_served, ()) = tokio::join!(http, admin_http, signal);
    let served = served.and(admin_served);
    tracing::info!("HTTP server stopped; draining the order pipeline");
    let drained = pipeline.shutdown(config.shutdown_timeout).await;
    tracing::info!(drained, "order pipeline stopped");
    served
}
