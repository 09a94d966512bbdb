//! Logging and the Prometheus exporter, installed once at start.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use seckill_api::MetricsRender;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, TelemetryConfig};

/// One layer of the subscriber, with its own filter: a span is only built when some layer
/// wants it, so the purchase path's debug spans cost nothing unless they are exported.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

#[cfg(feature = "otlp")]
static TRACER_PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();

/// The OpenTelemetry layer exporting spans over OTLP (HTTP/protobuf) to
/// `telemetry.otlp_endpoint`, when set.
#[cfg(feature = "otlp")]
fn otlp_layer(cfg: &TelemetryConfig) -> Option<BoxedLayer> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = cfg.otlp_endpoint.as_deref()?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("seckill-server: OTLP export to {endpoint} is off: {e}");
            return None;
        }
    };
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("seckill");
    let _ = TRACER_PROVIDER.set(provider);
    // The requests, and the purchase path's spans (debug: built only for this layer).
    let spans = EnvFilter::new(
        "info,seckill_service=debug,seckill_orders=debug,rskafka=warn,h2=warn,hyper=warn,tower=warn,reqwest=warn",
    );
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(spans)
            .boxed(),
    )
}

#[cfg(not(feature = "otlp"))]
fn otlp_layer(cfg: &TelemetryConfig) -> Option<BoxedLayer> {
    if let Some(endpoint) = &cfg.otlp_endpoint {
        eprintln!(
            "seckill-server: telemetry.otlp_endpoint is {endpoint}, but this build has no OTLP export (cargo feature otlp)"
        );
    }
    None
}

/// Sends the spans not exported yet (at exit).
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    if let Some(p) = TRACER_PROVIDER.get() {
        let _ = p.shutdown();
    }
}

/// Installs the log subscriber (`RUST_LOG` wins over `telemetry.log_level`), and the OTLP
/// span export when configured.
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
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt: BoxedLayer = match cfg.log_format {
        LogFormat::Plain => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let layers: Vec<BoxedLayer> = std::iter::once(fmt).chain(otlp_layer(cfg)).collect();
    tracing_subscriber::registry().with(layers).init();
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
    seckill_service::describe_metrics();
    // Process CPU, memory, open file descriptors and threads, read at each scrape.
    let process = metrics_process::Collector::default();
    process.describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Some(Arc::new(move || {
        process.collect();
        handle.render()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_service::{ActivityInput, Components, PurchaseInput, Service, ServiceConfig};

    /// Every family the running service exposes has help text (what `promtool check metrics`
    /// asks of it).
    #[tokio::test(flavor = "current_thread")]
    async fn every_family_has_help_text() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // The runtime has one thread: the service's tasks record here too.
        let _local = metrics::set_default_local_recorder(&recorder);
        seckill_service::describe_metrics();
        let (service, pipeline) = Service::start(ServiceConfig::default(), Components::embedded())
            .await
            .unwrap();
        let operator = service
            .authenticate(None, Some([127, 0, 0, 1].into()))
            .unwrap();
        let now = chrono::Utc::now();
        service
            .prewarm(
                &operator,
                ActivityInput {
                    product_id: 1,
                    product_name: "metrics".into(),
                    price: 1.0,
                    stock: 10,
                    start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
                    end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
                    ..ActivityInput::default()
                },
            )
            .await
            .unwrap();
        for user in 1..=3 {
            let p = service
                .purchase_request(
                    &operator,
                    PurchaseInput {
                        product_id: 1,
                        user_id: Some(user),
                        ..PurchaseInput::default()
                    },
                )
                .unwrap();
            service.purchase(&p, &operator).await.unwrap();
            service.record_purchase_latency(Duration::from_millis(1));
        }
        assert!(pipeline.shutdown(Duration::from_secs(10)).await);
        let text = handle.render();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(families.len() >= 5, "{text}");
        for f in families {
            assert!(
                text.contains(&format!("# HELP {f} ")),
                "{f} has no help text:\n{text}"
            );
        }
    }
}
