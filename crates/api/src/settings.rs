//! [`Settings`]: what the API needs to know, already validated by whoever built it.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use seckill_flowcontrol::BreakerConfig;

/// The rate-limiting algorithm of the global purchase limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitAlgorithm {
    /// GCRA token bucket: `rate` per second, bursts up to `burst`.
    #[default]
    TokenBucket,
    /// Rolling one-second window of `burst` requests (10 sub-buckets).
    SlidingWindow,
    /// Fixed one-second windows of `burst` requests.
    FixedWindow,
}

/// A rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Which algorithm.
    pub algorithm: LimitAlgorithm,
    /// Sustained requests per second.
    pub requests_per_second: NonZeroU32,
    /// Burst size.
    pub burst_size: NonZeroU32,
}

/// Load shedding.
#[derive(Clone, Debug)]
pub struct DegradationSettings {
    /// Whether automatic degradation is on.
    pub enable: bool,
    /// Load ratio (in-flight and waiting over `max_concurrent_requests`) that triggers it.
    pub threshold: f64,
    /// The message of every 503.
    pub response_message: Arc<str>,
}

/// Everything the API is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Purchases served at once.
    pub max_concurrent_requests: NonZeroUsize,
    /// Purchases waiting for a slot; beyond it, 503 at once.
    pub queue_size: usize,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// The global purchase limit; `None` for none.
    pub rate_limit: Option<RateLimitSettings>,
    /// Per-user purchase limit; `None` for none.
    pub per_user_limit: Option<RateLimitSettings>,
    /// Per-IP purchase limit; `None` for none.
    pub per_ip_limit: Option<RateLimitSettings>,
    /// Keys tracked by each keyed limiter at most.
    pub max_limiter_keys: NonZeroUsize,
    /// Circuit breaker around the inventory backend.
    pub circuit_breaker: BreakerConfig,
    /// Load shedding.
    pub degradation: DegradationSettings,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Workers running asynchronous purchases.
    pub async_workers: NonZeroUsize,
    /// How long an asynchronous purchase's result is kept.
    pub result_ttl: Duration,
    /// How long a graceful shutdown waits for the pipeline to drain.
    pub drain_timeout: Duration,
    /// Time a buyer has to pay an order, from the sale (`orders.payment_timeout`).
    pub payment_timeout: Duration,
    /// How often the sweeper looks for unpaid orders past their deadline.
    pub sweep_interval: Duration,
}

impl Default for Settings {
    /// The specification's defaults.
    fn default() -> Self {
        Self {
            max_concurrent_requests: NonZeroUsize::new(1000).expect("non-zero"),
            queue_size: 5000,
            queue_timeout: Duration::from_secs(1),
            rate_limit: Some(RateLimitSettings {
                algorithm: LimitAlgorithm::TokenBucket,
                requests_per_second: NonZeroU32::new(500).expect("non-zero"),
                burst_size: NonZeroU32::new(1000).expect("non-zero"),
            }),
            per_user_limit: None,
            per_ip_limit: None,
            max_limiter_keys: NonZeroUsize::new(100_000).expect("non-zero"),
            circuit_breaker: BreakerConfig::default(),
            degradation: DegradationSettings {
                enable: true,
                threshold: 0.8,
                response_message: "系统繁忙，请稍后重试".into(),
            },
            max_body_bytes: 4096,
            async_workers: NonZeroUsize::new(4).expect("non-zero"),
            result_ttl: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(10),
            payment_timeout: seckill_orders::DEFAULT_PAYMENT_TIMEOUT,
            sweep_interval: Duration::from_secs(1),
        }
    }
}
