//! Configuration: each section is the settings type of the crate it configures, with that
//! crate's defaults and validation; this module only composes them, merges a YAML file and
//! `SECKILL_*` environment variables over the defaults with figment, and names the key and the
//! source of every error.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::Deserialize;

use seckill_api::ServerConfig;
use seckill_inventory::RedisConfig;
use seckill_mq::{KafkaSettings, RabbitSettings};
use seckill_orders::OrdersConfig;
use seckill_service::{AntibotConfig, AuthConfig, ReconcilerConfig, Settings};

/// The default configuration file, used when it exists and no other is named.
pub const DEFAULT_FILE: &str = "config/seckill.yaml";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP and gRPC listeners.
    pub server: ServerConfig,
    /// Redis connection and the Redis inventory (used when `inventory.backend = redis`).
    pub redis: RedisConfig,
    /// The purchase service: flow control, asynchronous purchases.
    pub seckill: Settings,
    /// Stock backend.
    pub inventory: InventoryConfig,
    /// Message broker.
    pub mq: MqConfig,
    /// Order store and order lifecycle.
    pub orders: OrdersConfig,
    /// Who callers are: bearer tokens, roles, the admin plane's peers.
    pub auth: AuthConfig,
    /// Purchase tokens and the challenge before them.
    pub antibot: AntibotConfig,
    /// The background comparison of Redis with the order store (Redis with PostgreSQL only).
    pub reconciler: ReconcilerConfig,
    /// Logging and metrics.
    pub telemetry: TelemetryConfig,
}

/// Stock backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InventoryBackend {
    /// In process.
    #[default]
    Memory,
    /// Redis.
    Redis,
}

/// `inventory.*`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Which backend.
    pub backend: InventoryBackend,
}

/// Broker backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqBackend {
    /// In process.
    #[default]
    Memory,
    /// RabbitMQ.
    Rabbitmq,
    /// Kafka.
    Kafka,
}

/// `mq.*`
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqConfig {
    /// Which backend.
    pub backend: MqBackend,
    /// `mq.rabbitmq.*`
    pub rabbitmq: RabbitSettings,
    /// `mq.kafka.*`
    pub kafka: KafkaSettings,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Plain,
    /// One JSON object per line (fields, spans with the request id).
    Json,
}

/// `telemetry.*`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter (overridden by `RUST_LOG`).
    pub log_level: String,
    /// `plain` or `json`.
    pub log_format: LogFormat,
    /// Where spans are exported with OTLP over HTTP (e.g. `http://127.0.0.1:4318`; builds
    /// with the `otlp` feature); none: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// Whether `/metrics` serves the Prometheus exposition.
    pub metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Plain,
            otlp_endpoint: None,
            service_name: "seckill".into(),
            metrics: true,
        }
    }
}

/// Where the configuration file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChoice {
    /// Named by `--config` or `SECKILL_CONFIG`: must exist.
    Named(PathBuf),
    /// The default file, read when present.
    Default,
}

/// The merged providers: the file, then the environment (defaults are the types' own).
pub fn figment(file: &FileChoice) -> Result<Figment, String> {
    let mut f = Figment::new();
    match file {
        FileChoice::Named(path) => {
            if !path.is_file() {
                return Err(format!(
                    "configuration file {} does not exist",
                    path.display()
                ));
            }
            f = f.merge(Yaml::file_exact(path));
        }
        FileChoice::Default => {
            if std::path::Path::new(DEFAULT_FILE).is_file() {
                f = f.merge(Yaml::file_exact(DEFAULT_FILE));
            }
        }
    }
    Ok(f.merge(
        Env::prefixed("SECKILL_")
            .filter(|k| k.as_str() != "config")
            .split("__"),
    ))
}

/// Reads and validates the configuration; the error lists every problem, naming the key and
/// where its value came from.
pub fn load(file: &FileChoice) -> Result<Config, String> {
    let figment = figment(file)?;
    let config: Config = figment.extract().map_err(|e| {
        e.into_iter()
            .map(|e| {
                let key = e.path.join(".").to_lowercase();
                let from = describe(e.metadata.as_ref(), &key);
                if key.is_empty() {
                    format!("{} ({from})", e.kind)
                } else {
                    format!("invalid {key} ({from}): {}", e.kind)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let problems = config.problems();
    if problems.is_empty() {
        return Ok(config);
    }
    Err(problems
        .into_iter()
        .map(|(key, why)| {
            format!(
                "invalid {key} ({}): {why}",
                describe(figment.find_metadata(&key), &key)
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Names where a key's value came from: the environment variable, the file, or the default.
fn describe(md: Option<&figment::Metadata>, key: &str) -> String {
    let Some(md) = md else {
        return "default".into();
    };
    if md.name.contains("environment") {
        return format!(
            "from environment variable SECKILL_{}",
            key.replace('.', "__").to_uppercase()
        );
    }
    match &md.source {
        Some(src) => format!("from {src}"),
        None => format!("from {}", md.name),
    }
}

impl Config {
    /// Every invalid value, as (full key, why): each section's own validation, the backends'
    /// only when they are selected.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut add = |section: &str, key: &str, why: String| {
            p.push((format!("{section}.{key}"), why));
        };
        if let Err(e) = self.server.validate() {
            add("server", e.key, e.reason);
        }
        if let Err(e) = self.seckill.validate() {
            add("seckill", &e.key, e.reason);
        }
        if let Err(e) = self.auth.validate() {
            add("auth", &e.key, e.reason);
        }
        if let Err(e) = self.antibot.validate() {
            add("antibot", &e.key, e.reason);
        }
        if self.inventory.backend == InventoryBackend::Redis {
            if let Err(seckill_inventory::InventoryError::InvalidConfig { key, reason }) =
                self.redis.validate()
            {
                add("redis", key, reason);
            }
        }
        let mq = match self.mq.backend {
            MqBackend::Memory => Ok(()),
            MqBackend::Rabbitmq => self.mq.rabbitmq.validate().map_err(|e| ("mq.rabbitmq", e)),
            MqBackend::Kafka => self.mq.kafka.validate().map_err(|e| ("mq.kafka", e)),
        };
        if let Err((section, seckill_mq::MqError::InvalidConfig { key, reason })) = mq {
            add(section, key, reason);
        }
        if let Err(seckill_orders::OrderError::InvalidConfig { key, reason }) =
            self.orders.validate()
        {
            add("orders", key, reason);
        }
        p
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_are_the_specification_s() {
        figment::Jail::expect_with(|_jail| {
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.server.port, 8083);
            assert_eq!(c.server.grpc_port, 9083);
            assert_eq!(c.redis.host, "localhost");
            assert_eq!(c.redis.pool_size, 20);
            assert_eq!(c.seckill.max_concurrent_requests.get(), 1000);
            assert_eq!(c.seckill.queue_size, 5000);
            assert_eq!(c.seckill.rate_limit.requests_per_second.get(), 500);
            assert_eq!(c.seckill.rate_limit.burst_size.get(), 1000);
            assert_eq!(c.seckill.circuit_breaker.failure_threshold, 10);
            assert_eq!(
                c.seckill.circuit_breaker.recovery_timeout,
                Duration::from_secs(60)
            );
            assert!(c.seckill.degradation.enable);
            assert_eq!(c.seckill.degradation.threshold, 0.8);
            assert_eq!(
                c.seckill.degradation.response_message,
                "系统繁忙，请稍后重试"
            );
            assert_eq!(c.inventory.backend, InventoryBackend::Memory);
            assert_eq!(c.mq.backend, MqBackend::Memory);
            assert_eq!(c.orders.store, seckill_orders::OrderStoreKind::Memory);
            Ok(())
        });
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        figment::Jail::expect_with(|_jail| {
            let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/seckill.yaml");
            let c = load(&FileChoice::Named(file.into())).map_err(|e| e.to_string())?;
            assert_eq!(
                c,
                Config::default(),
                "config/seckill.yaml lists the defaults"
            );
            Ok(())
        });
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/seckill.yaml",
                "server:\n  port: 9000\nseckill:\n  rate_limit:\n    requests_per_second: 42\n    burst_size: 7\n",
            )?;
            jail.set_env("SECKILL_SERVER__PORT", "18083");
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.server.port, 18083, "env wins over the file");
            assert_eq!(
                c.seckill.rate_limit.requests_per_second.get(),
                42,
                "file wins over defaults"
            );
            assert_eq!(c.seckill.rate_limit.burst_size.get(), 7);
            jail.set_env("SECKILL_SECKILL__RATE_LIMIT__REQUESTS_PER_SECOND", "50");
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.seckill.rate_limit.requests_per_second.get(), 50);
            Ok(())
        });
    }

    #[test]
    fn a_named_file_is_read_and_must_exist() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("other.yaml", "seckill:\n  queue_size: 12\n")?;
            let c = load(&FileChoice::Named("other.yaml".into())).map_err(|e| e.to_string())?;
            assert_eq!(c.seckill.queue_size, 12);
            let err = load(&FileChoice::Named("missing.yaml".into())).unwrap_err();
            assert!(err.contains("missing.yaml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_the_key_and_the_source() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SECKILL_SECKILL__DEGRADATION__THRESHOLD", "1.5");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("seckill.degradation.threshold"), "{err}");
            assert!(
                err.contains("SECKILL_SECKILL__DEGRADATION__THRESHOLD"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file("config/seckill.yaml", "server:\n  port: not-a-port\n")?;
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("port"), "{err}");
            assert!(err.contains("seckill.yaml"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/seckill.yaml",
                "seckill:\n  rate_limit:\n    burst: 3\n",
            )?;
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("burst"), "unknown keys are refused: {err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SECKILL_SECKILL__RATE_LIMIT__BURST_SIZE", "0");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("seckill.rate_limit.burst_size"), "{err}");
            assert!(
                err.contains("SECKILL_SECKILL__RATE_LIMIT__BURST_SIZE"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_redis_inventory_is_selectable_and_its_settings_validated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SECKILL_INVENTORY__BACKEND", "redis");
            jail.set_env("SECKILL_REDIS__KEY_PREFIX", "shop-a");
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.inventory.backend, InventoryBackend::Redis);
            assert_eq!(
                (c.redis.host.as_str(), c.redis.port, c.redis.pool_size),
                ("localhost", 6379, 20)
            );
            assert_eq!(c.redis.key_prefix, "shop-a");
            jail.set_env("SECKILL_REDIS__POOL_SIZE", "0");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("redis.pool_size"), "{err}");
            assert!(err.contains("SECKILL_REDIS__POOL_SIZE"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn breaker_strategies_are_configurable_and_validated() {
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/seckill.yaml",
                "seckill:\n  circuit_breaker:\n    failure_ratio: 0.5\n    slow_call_duration: 200ms\n    slow_call_ratio: 0.8\n    window: 5s\n",
            )?;
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            let b = &c.seckill.circuit_breaker;
            assert_eq!(b.failure_ratio, Some(0.5));
            assert_eq!(b.slow_call_duration, Some(Duration::from_millis(200)));
            assert_eq!(b.slow_call_ratio, Some(0.8));
            assert_eq!(b.window, Duration::from_secs(5));
            assert_eq!(b.failure_threshold, 10);
            jail.set_env("SECKILL_SECKILL__CIRCUIT_BREAKER__FAILURE_RATIO", "1.5");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(
                err.contains("seckill.circuit_breaker.failure_ratio"),
                "{err}"
            );
            assert!(
                err.contains("SECKILL_SECKILL__CIRCUIT_BREAKER__FAILURE_RATIO"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn broker_and_order_store_settings_are_read_and_validated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SECKILL_MQ__BACKEND", "kafka");
            jail.set_env("SECKILL_ORDERS__STORE", "postgres");
            jail.set_env("SECKILL_ORDERS__PAYMENT_TIMEOUT", "2m");
            let c = load(&FileChoice::Default).unwrap();
            assert_eq!(c.mq.backend, MqBackend::Kafka);
            assert_eq!(c.mq.kafka.brokers, ["127.0.0.1:9092"]);
            assert_eq!(c.orders.store, seckill_orders::OrderStoreKind::Postgres);
            assert_eq!(
                c.orders.database_url,
                "postgres://postgres@127.0.0.1:5432/postgres"
            );
            assert_eq!(c.orders.payment_timeout, Duration::from_secs(120));
            jail.set_env("SECKILL_MQ__KAFKA__BROKERS", r#"["k1:9092", "k2:9092"]"#);
            let c = load(&FileChoice::Default).unwrap();
            assert_eq!(c.mq.kafka.brokers, ["k1:9092", "k2:9092"]);
            jail.set_env("SECKILL_MQ__KAFKA__PARTITIONS", "0");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("mq.kafka.partitions"), "{err}");
            assert!(err.contains("SECKILL_MQ__KAFKA__PARTITIONS"), "{err}");
            jail.set_env("SECKILL_MQ__KAFKA__PARTITIONS", "2");
            jail.set_env("SECKILL_MQ__BACKEND", "rabbitmq");
            jail.set_env("SECKILL_MQ__RABBITMQ__URL", "http://x");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("mq.rabbitmq.url"), "{err}");
            jail.set_env(
                "SECKILL_MQ__RABBITMQ__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            );
            jail.set_env("SECKILL_ORDERS__DATABASE_URL", "mysql://x");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("orders.database_url"), "{err}");
            jail.set_env("SECKILL_MQ__BACKEND", "pigeon");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("mq.backend"), "{err}");
            assert!(err.contains("SECKILL_MQ__BACKEND"), "{err}");
            Ok(())
        });
    }
}
