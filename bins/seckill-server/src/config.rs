//! Configuration: defaults in code (the specification's) → a YAML file → `SECKILL_*` environment
//! variables, merged with figment and validated before anything starts.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::{Deserialize, Serialize};

use seckill_api::{DegradationSettings, LimitAlgorithm, RateLimitSettings, Settings};
use seckill_flowcontrol::BreakerConfig;

/// The default configuration file, used when it exists and no other is named.
pub const DEFAULT_FILE: &str = "config/seckill.yaml";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP and gRPC listeners.
    pub server: ServerConfig,
    /// Redis connection (used when `inventory.backend = redis`).
    pub redis: RedisConfig,
    /// Flow control of the purchase path.
    pub seckill: SeckillConfig,
    /// Stock backend.
    pub inventory: InventoryConfig,
    /// Message broker.
    pub mq: MqConfig,
    /// Order store.
    pub orders: OrdersConfig,
    /// Logging and metrics.
    pub telemetry: TelemetryConfig,
}

/// `server.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// HTTP port.
    pub port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for pending sales to be delivered.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8083,
            grpc_port: 9083,
            max_body_bytes: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// `redis.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connections.
    pub pool_size: usize,
    /// Password, if any.
    pub password: Option<String>,
    /// Database number.
    pub db: u8,
    /// Prefix of every key (isolates tenants).
    pub key_prefix: String,
    /// Connection timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Command timeout.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long a sale claimed by a relay may stay unacknowledged before another relay takes it.
    #[serde(with = "humantime_serde")]
    pub reclaim_after: Duration,
    /// How long an activity's keys are kept after its end.
    #[serde(with = "humantime_serde")]
    pub key_grace: Duration,
    /// How long a sold-out product is answered locally (0s disables it).
    #[serde(with = "humantime_serde")]
    pub sold_out_cache: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 6379,
            pool_size: 20,
            password: None,
            db: 0,
            key_prefix: "seckill".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            reclaim_after: Duration::from_secs(30),
            key_grace: Duration::from_secs(24 * 3600),
            sold_out_cache: Duration::from_millis(500),
        }
    }
}

/// `seckill.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeckillConfig {
    /// Purchases served at once.
    pub max_concurrent_requests: usize,
    /// Purchases waiting for a slot.
    pub queue_size: usize,
    /// Longest wait in the queue.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Circuit breaker around the inventory.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Load shedding.
    pub degradation: DegradationConfig,
    /// Asynchronous purchase workers.
    pub async_workers: usize,
    /// How long an asynchronous purchase's result is kept.
    #[serde(with = "humantime_serde")]
    pub result_ttl: Duration,
}

impl Default for SeckillConfig {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 1000,
            queue_size: 5000,
            queue_timeout: Duration::from_secs(1),
            rate_limit: RateLimitConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            degradation: DegradationConfig::default(),
            async_workers: 4,
            result_ttl: Duration::from_secs(600),
        }
    }
}

/// Rate-limiting algorithm names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Token bucket.
    #[default]
    TokenBucket,
    /// Sliding window.
    SlidingWindow,
    /// Fixed window.
    FixedWindow,
}

/// `seckill.rate_limit.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether the global limit is on.
    pub enable: bool,
    /// Algorithm of the global limit.
    pub algorithm: Algorithm,
    /// Sustained purchases per second, all users together.
    pub requests_per_second: u32,
    /// Burst size.
    pub burst_size: u32,
    /// Per-user limit.
    pub per_user: KeyedLimitConfig,
    /// Per-IP limit (off by default: many buyers share a NAT).
    pub per_ip: KeyedLimitConfig,
    /// Keys each keyed limiter tracks at most.
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enable: true,
            algorithm: Algorithm::TokenBucket,
            requests_per_second: 500,
            burst_size: 1000,
            per_user: KeyedLimitConfig::default(),
            per_ip: KeyedLimitConfig::default(),
            max_keys: 100_000,
        }
    }
}

/// `seckill.rate_limit.per_user.*` and `per_ip.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyedLimitConfig {
    /// Whether this level is on.
    pub enable: bool,
    /// Sustained requests per second per key.
    pub requests_per_second: u32,
    /// Burst per key.
    pub burst_size: u32,
}

impl Default for KeyedLimitConfig {
    fn default() -> Self {
        Self {
            enable: false,
            requests_per_second: 5,
            burst_size: 10,
        }
    }
}

/// `seckill.circuit_breaker.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open.
    #[serde(with = "humantime_serde")]
    pub recovery_timeout: Duration,
    /// Concurrent probes admitted when half-open.
    pub half_open_max_probes: u32,
    /// Successful probes needed to close it again.
    pub success_threshold: u32,
    /// Rolling window of the ratio strategies.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Calls in the window before a ratio can open it.
    pub minimum_calls: u32,
    /// Open when failures / calls in the window reach this (off when absent).
    pub failure_ratio: Option<f64>,
    /// A call slower than this counts as slow (off when absent).
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Option<Duration>,
    /// Open when slow calls / calls in the window reach this.
    pub slow_call_ratio: Option<f64>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        let b = BreakerConfig::default();
        Self {
            failure_threshold: 10,
            recovery_timeout: Duration::from_secs(60),
            half_open_max_probes: 1,
            success_threshold: b.success_threshold,
            window: b.window,
            minimum_calls: b.minimum_calls,
            failure_ratio: None,
            slow_call_duration: None,
            slow_call_ratio: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// The breaker's own configuration.
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.failure_threshold,
            recovery_timeout: self.recovery_timeout,
            half_open_max_probes: self.half_open_max_probes,
            success_threshold: self.success_threshold,
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_ratio: self.failure_ratio,
            slow_call_duration: self.slow_call_duration,
            slow_call_ratio: self.slow_call_ratio,
        }
    }
}

/// `seckill.degradation.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationConfig {
    /// Whether automatic degradation is on.
    pub enable: bool,
    /// Load ratio that triggers it.
    pub threshold: f64,
    /// Message of every 503.
    pub response_message: String,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        Self {
            enable: true,
            threshold: 0.8,
            response_message: "系统繁忙，请稍后重试".into(),
        }
    }
}

/// Stock backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InventoryBackend {
    /// In process.
    #[default]
    Memory,
    /// Redis.
    Redis,
}

/// `inventory.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Which backend.
    pub backend: InventoryBackend,
}

/// Broker backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqConfig {
    /// Which backend.
    pub backend: MqBackend,
    /// `mq.rabbitmq.*`
    pub rabbitmq: RabbitConfig,
    /// `mq.kafka.*`
    pub kafka: KafkaConfig,
}

/// `mq.rabbitmq.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// AMQP URL.
    pub url: String,
    /// Prefix of exchange and queue names.
    pub prefix: String,
    /// Unacknowledged messages per consumer.
    pub prefetch: u16,
    /// Failed handlings before a message is dead-lettered.
    pub max_attempts: u32,
}

impl Default for RabbitConfig {
    /// The broker library's defaults.
    fn default() -> Self {
        let d = seckill_mq::RabbitSettings::default();
        Self {
            url: d.url,
            prefix: d.prefix,
            prefetch: d.prefetch,
            max_attempts: d.max_attempts,
        }
    }
}

/// `mq.kafka.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Prefix of topic names.
    pub topic_prefix: String,
    /// Partitions of topics created by the service.
    pub partitions: i32,
    /// How long a produce waits to batch with others.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Failed handlings before a message goes to the `.dlq` topic.
    pub max_attempts: u32,
}

impl Default for KafkaConfig {
    /// The broker library's defaults.
    fn default() -> Self {
        let d = seckill_mq::KafkaSettings::default();
        Self {
            brokers: d.brokers,
            topic_prefix: d.topic_prefix,
            partitions: d.partitions,
            linger: d.linger,
            max_attempts: d.max_attempts,
        }
    }
}

/// Order stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStoreBackend {
    /// In process.
    #[default]
    Memory,
    /// PostgreSQL.
    Postgres,
}

/// `orders.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Which store.
    pub store: OrderStoreBackend,
    /// PostgreSQL URL (`orders.store = postgres`).
    pub database_url: String,
    /// Schema of the tables (`None`: the database's default).
    pub schema: Option<String>,
    /// Connections to PostgreSQL.
    pub pool_size: usize,
    /// Longest a database call may take (client-side bound and server `statement_timeout`).
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Time a buyer has to pay, from the sale; then the order is cancelled and its items go
    /// back on sale.
    #[serde(with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// How often unpaid orders past their deadline are looked for.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for OrdersConfig {
    /// The order library's defaults.
    fn default() -> Self {
        let d = seckill_orders::PgSettings::default();
        Self {
            store: OrderStoreBackend::Memory,
            database_url: d.url,
            schema: d.schema,
            pool_size: d.pool_size,
            query_timeout: d.query_timeout,
            payment_timeout: seckill_orders::DEFAULT_PAYMENT_TIMEOUT,
            sweep_interval: seckill_api::Settings::default().sweep_interval,
        }
    }
}

/// `telemetry.*`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter (overridden by `RUST_LOG`).
    pub log_level: String,
    /// Whether `/metrics` serves the Prometheus exposition.
    pub metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
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

/// The merged providers: defaults → file → environment.
pub fn figment(file: &FileChoice) -> Result<Figment, String> {
    let mut f = Figment::from(Serialized::defaults(Config::default()));
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
                describe(figment.find_metadata(key), key)
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
    /// Every invalid value: (key, why).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let s = &self.seckill;
        if s.max_concurrent_requests == 0 {
            p.push((
                "seckill.max_concurrent_requests",
                "must be at least 1".into(),
            ));
        }
        if s.async_workers == 0 || s.async_workers > 1024 {
            p.push(("seckill.async_workers", "must be between 1 and 1024".into()));
        }
        let rl = &s.rate_limit;
        if rl.enable && rl.requests_per_second == 0 {
            p.push((
                "seckill.rate_limit.requests_per_second",
                "must be at least 1".into(),
            ));
        }
        if rl.enable && rl.burst_size == 0 {
            p.push(("seckill.rate_limit.burst_size", "must be at least 1".into()));
        }
        for (on, rps, burst, k_rps, k_burst) in [
            (
                rl.per_user.enable,
                rl.per_user.requests_per_second,
                rl.per_user.burst_size,
                "seckill.rate_limit.per_user.requests_per_second",
                "seckill.rate_limit.per_user.burst_size",
            ),
            (
                rl.per_ip.enable,
                rl.per_ip.requests_per_second,
                rl.per_ip.burst_size,
                "seckill.rate_limit.per_ip.requests_per_second",
                "seckill.rate_limit.per_ip.burst_size",
            ),
        ] {
            if on && rps == 0 {
                p.push((k_rps, "must be at least 1".into()));
            }
            if on && burst == 0 {
                p.push((k_burst, "must be at least 1".into()));
            }
        }
        if rl.max_keys == 0 {
            p.push(("seckill.rate_limit.max_keys", "must be at least 1".into()));
        }
        let cb = &s.circuit_breaker;
        if cb.half_open_max_probes == 0 {
            p.push((
                "seckill.circuit_breaker.half_open_max_probes",
                "must be at least 1".into(),
            ));
        }
        if let Err(e) = cb.breaker().validate() {
            p.push(("seckill.circuit_breaker", e.to_string()));
        }
        if cb.recovery_timeout.is_zero() {
            p.push((
                "seckill.circuit_breaker.recovery_timeout",
                "must be longer than 0s".into(),
            ));
        }
        let d = &s.degradation;
        if !(d.threshold > 0.0 && d.threshold <= 1.0) {
            p.push((
                "seckill.degradation.threshold",
                format!("{} is not in (0, 1]", d.threshold),
            ));
        }
        if d.response_message.trim().is_empty() {
            p.push((
                "seckill.degradation.response_message",
                "must not be empty".into(),
            ));
        }
        if self.server.max_body_bytes < 64 {
            p.push(("server.max_body_bytes", "must be at least 64".into()));
        }
        if self.server.port == self.server.grpc_port && self.server.port != 0 {
            p.push(("server.grpc_port", "must differ from server.port".into()));
        }
        if self.redis.pool_size == 0 || self.redis.pool_size > 256 {
            p.push(("redis.pool_size", "must be between 1 and 256".into()));
        }
        if self.redis.command_timeout.is_zero() {
            p.push(("redis.command_timeout", "must be longer than 0s".into()));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            p.push((
                "redis.key_prefix",
                "must be non-empty and free of braces".into(),
            ));
        }
        let mq = &self.mq;
        if mq.backend == MqBackend::Rabbitmq {
            if !(mq.rabbitmq.url.starts_with("amqp://") || mq.rabbitmq.url.starts_with("amqps://"))
            {
                p.push((
                    "mq.rabbitmq.url",
                    "must start with amqp:// or amqps://".into(),
                ));
            }
            if mq.rabbitmq.prefix.is_empty() {
                p.push(("mq.rabbitmq.prefix", "must be non-empty".into()));
            }
            if mq.rabbitmq.prefetch == 0 {
                p.push(("mq.rabbitmq.prefetch", "must be at least 1".into()));
            }
            if mq.rabbitmq.max_attempts == 0 {
                p.push(("mq.rabbitmq.max_attempts", "must be at least 1".into()));
            }
        }
        if mq.backend == MqBackend::Kafka {
            if mq.kafka.brokers.is_empty() || mq.kafka.brokers.iter().any(|b| !b.contains(':')) {
                p.push(("mq.kafka.brokers", "must list host:port addresses".into()));
            }
            if !(1..=1024).contains(&mq.kafka.partitions) {
                p.push(("mq.kafka.partitions", "must be between 1 and 1024".into()));
            }
            if mq.kafka.max_attempts == 0 {
                p.push(("mq.kafka.max_attempts", "must be at least 1".into()));
            }
            if mq.kafka.linger > Duration::from_secs(1) {
                p.push(("mq.kafka.linger", "must be at most 1s".into()));
            }
        }
        let o = &self.orders;
        if o.store == OrderStoreBackend::Postgres {
            if !(o.database_url.starts_with("postgres://")
                || o.database_url.starts_with("postgresql://"))
            {
                p.push((
                    "orders.database_url",
                    "must start with postgres:// or postgresql://".into(),
                ));
            }
            if o.schema.as_ref().is_some_and(|s| {
                s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) {
                p.push((
                    "orders.schema",
                    "only letters, digits and _ are allowed".into(),
                ));
            }
            if o.pool_size == 0 || o.pool_size > 256 {
                p.push(("orders.pool_size", "must be between 1 and 256".into()));
            }
            if o.query_timeout < Duration::from_millis(10) {
                p.push(("orders.query_timeout", "must be at least 10ms".into()));
            }
        }
        if o.payment_timeout < Duration::from_secs(1) {
            p.push(("orders.payment_timeout", "must be at least 1s".into()));
        }
        if o.sweep_interval.is_zero() {
            p.push(("orders.sweep_interval", "must be longer than 0s".into()));
        }
        p
    }

    /// Connection settings of the Redis inventory.
    pub fn redis_settings(
        &self,
    ) -> (
        seckill_inventory::RedisSettings,
        seckill_inventory::RedisInventoryOptions,
    ) {
        let r = &self.redis;
        (
            seckill_inventory::RedisSettings {
                host: r.host.clone(),
                port: r.port,
                password: r.password.clone(),
                db: r.db,
                pool_size: r.pool_size,
                connect_timeout: r.connect_timeout,
                command_timeout: r.command_timeout,
            },
            seckill_inventory::RedisInventoryOptions {
                key_prefix: r.key_prefix.clone(),
                reclaim_after: r.reclaim_after,
                key_grace: r.key_grace,
                sold_out_cache: r.sold_out_cache,
                ..seckill_inventory::RedisInventoryOptions::default()
            },
        )
    }

    /// Settings of the RabbitMQ broker. The order service's and the purchase workers' queues
    /// are declared at connect, so nothing published before they first subscribe is dropped.
    pub fn rabbit_settings(&self) -> seckill_mq::RabbitSettings {
        let r = &self.mq.rabbitmq;
        seckill_mq::RabbitSettings {
            url: r.url.clone(),
            prefix: r.prefix.clone(),
            prefetch: r.prefetch,
            max_attempts: r.max_attempts,
            groups: vec![
                (
                    seckill_mq::Topic::OrderCreated,
                    seckill_orders::ORDER_SERVICE_GROUP.to_owned(),
                ),
                (
                    seckill_mq::Topic::PurchaseRequested,
                    seckill_api::pipeline::PURCHASE_WORKERS_GROUP.to_owned(),
                ),
            ],
            ..seckill_mq::RabbitSettings::default()
        }
    }

    /// Settings of the Kafka broker.
    pub fn kafka_settings(&self) -> seckill_mq::KafkaSettings {
        let k = &self.mq.kafka;
        seckill_mq::KafkaSettings {
            brokers: k.brokers.clone(),
            topic_prefix: k.topic_prefix.clone(),
            partitions: k.partitions,
            linger: k.linger,
            max_attempts: k.max_attempts,
            ..seckill_mq::KafkaSettings::default()
        }
    }

    /// Settings of the PostgreSQL order store.
    pub fn pg_settings(&self) -> seckill_orders::PgSettings {
        let o = &self.orders;
        seckill_orders::PgSettings {
            url: o.database_url.clone(),
            schema: o.schema.clone(),
            pool_size: o.pool_size,
            query_timeout: o.query_timeout,
            ..seckill_orders::PgSettings::default()
        }
    }

    /// The API's settings. Call only on a configuration without [`Config::problems`].
    pub fn api_settings(&self) -> Settings {
        let s = &self.seckill;
        let nz = |v: u32| NonZeroU32::new(v.max(1)).expect("non-zero");
        let algorithm = match s.rate_limit.algorithm {
            Algorithm::TokenBucket => LimitAlgorithm::TokenBucket,
            Algorithm::SlidingWindow => LimitAlgorithm::SlidingWindow,
            Algorithm::FixedWindow => LimitAlgorithm::FixedWindow,
        };
        let keyed = |k: &KeyedLimitConfig| {
            k.enable.then(|| RateLimitSettings {
                algorithm: LimitAlgorithm::TokenBucket,
                requests_per_second: nz(k.requests_per_second),
                burst_size: nz(k.burst_size),
            })
        };
        Settings {
            max_concurrent_requests: NonZeroUsize::new(s.max_concurrent_requests.max(1))
                .expect("non-zero"),
            queue_size: s.queue_size,
            queue_timeout: s.queue_timeout,
            rate_limit: s.rate_limit.enable.then(|| RateLimitSettings {
                algorithm,
                requests_per_second: nz(s.rate_limit.requests_per_second),
                burst_size: nz(s.rate_limit.burst_size),
            }),
            per_user_limit: keyed(&s.rate_limit.per_user),
            per_ip_limit: keyed(&s.rate_limit.per_ip),
            max_limiter_keys: NonZeroUsize::new(s.rate_limit.max_keys.max(1)).expect("non-zero"),
            circuit_breaker: s.circuit_breaker.breaker(),
            degradation: DegradationSettings {
                enable: s.degradation.enable,
                threshold: s.degradation.threshold,
                response_message: Arc::from(s.degradation.response_message.as_str()),
            },
            max_body_bytes: self.server.max_body_bytes,
            async_workers: NonZeroUsize::new(s.async_workers.max(1)).expect("non-zero"),
            result_ttl: s.result_ttl,
            drain_timeout: self.server.shutdown_timeout,
            payment_timeout: self.orders.payment_timeout,
            sweep_interval: self.orders.sweep_interval,
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specification_s() {
        figment::Jail::expect_with(|_jail| {
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.server.port, 8083);
            assert_eq!(c.server.grpc_port, 9083);
            assert_eq!(c.redis.host, "localhost");
            assert_eq!(c.redis.pool_size, 20);
            assert_eq!(c.seckill.max_concurrent_requests, 1000);
            assert_eq!(c.seckill.queue_size, 5000);
            assert_eq!(c.seckill.rate_limit.requests_per_second, 500);
            assert_eq!(c.seckill.rate_limit.burst_size, 1000);
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
            assert_eq!(c.orders.store, OrderStoreBackend::Memory);
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
                c.seckill.rate_limit.requests_per_second, 42,
                "file wins over defaults"
            );
            assert_eq!(c.seckill.rate_limit.burst_size, 7);
            jail.set_env("SECKILL_SECKILL__RATE_LIMIT__REQUESTS_PER_SECOND", "50");
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.seckill.rate_limit.requests_per_second, 50);
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
    }

    #[test]
    fn the_redis_inventory_is_selectable_and_its_settings_validated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SECKILL_INVENTORY__BACKEND", "redis");
            jail.set_env("SECKILL_REDIS__KEY_PREFIX", "shop-a");
            let c = load(&FileChoice::Default).map_err(|e| e.to_string())?;
            assert_eq!(c.inventory.backend, InventoryBackend::Redis);
            let (settings, options) = c.redis_settings();
            assert_eq!(
                (settings.host.as_str(), settings.port, settings.pool_size),
                ("localhost", 6379, 20)
            );
            assert_eq!(options.key_prefix, "shop-a");
            jail.set_env("SECKILL_REDIS__POOL_SIZE", "0");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("redis.pool_size"), "{err}");
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
            let b = c.api_settings().circuit_breaker;
            assert_eq!(b.failure_ratio, Some(0.5));
            assert_eq!(b.slow_call_duration, Some(Duration::from_millis(200)));
            assert_eq!(b.slow_call_ratio, Some(0.8));
            assert_eq!(b.window, Duration::from_secs(5));
            assert_eq!(b.failure_threshold, 10);
            jail.set_env("SECKILL_SECKILL__CIRCUIT_BREAKER__FAILURE_RATIO", "1.5");
            let err = load(&FileChoice::Default).unwrap_err();
            assert!(err.contains("seckill.circuit_breaker"), "{err}");
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
            assert_eq!(c.orders.store, OrderStoreBackend::Postgres);
            assert_eq!(
                c.orders.database_url,
                "postgres://postgres@127.0.0.1:5432/postgres"
            );
            assert_eq!(c.api_settings().payment_timeout, Duration::from_secs(120));
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
