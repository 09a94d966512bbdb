//! Logging and the Prometheus exporter, installed once at start.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use seckill_api::MetricsRender;
use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// Installs the log subscriber (`RUST_LOG` wins over `telemetry.log_level`).
pub fn init_logging(cfg: &TelemetryConfig) {
    // rskafka logs every broker connection at info, and warns whenever a batch producer is
    // dropped, pending records or not (a publish that really lost records fails, and that is
    // logged where it happens).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},rskafka=warn,rskafka::client::producer::broadcast=error",
            cfg.log_level
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Installs the Prometheus recorder and returns what renders `/metrics`; `None` when disabled.
///
/// # Errors
/// A recorder was already installed.
pub fn init_metrics(cfg: &TelemetryConfig) -> anyhow::Result<Option<MetricsRender>> {
    if !cfg.metrics {
        return Ok(None);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Some(Arc::new(move || handle.render())))
}
