//! [`Settings`]: the `seckill` section of the configuration, with its defaults (the
//! specification's) and its validation.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use seckill_flowcontrol::{Algorithm, BreakerConfig, Quota};

/// An invalid setting: the key (relative to the `seckill` section) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key}: {reason}")]
pub struct ConfigError {
    /// The key, e.g. `degradation.threshold`.
    pub key: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Everything the purchase service is configured with: the `seckill` section.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Settings {
    /// Purchases served at once (default 1000).
    pub max_concurrent_requests: NonZeroUsize,
    /// Purchases waiting for a slot; beyond it, "busy" at once (default 5000).
    pub queue_size: usize,
    /// Longest wait in the queue (default 1 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub queue_timeout: Duration,
    /// Workers running asynchronous purchases, 1 to 1024 (default 4).
    pub async_workers: NonZeroUsize,
    /// How long an asynchronous purchase's result is kept (default 10 min); older requests are
    /// not run any more.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub result_ttl: Duration,
    /// Results of asynchronous purchases kept in this process at most (default 100,000): when
    /// full the oldest finished ones go first, and a store of pending requests only answers
    /// "busy" rather than growing.
    pub result_capacity: NonZeroUsize,
    /// The purchase limits.
    pub rate_limit: RateLimits,
    /// The circuit breaker around the inventory backend.
    pub circuit_breaker: BreakerConfig,
    /// Load shedding.
    pub degradation: DegradationSettings,
}

/// `seckill.rate_limit`: the global limit and the per-user and per-IP levels.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RateLimits {
    /// Whether the global limit is on (default true).
    pub enable: bool,
    /// Its algorithm (default token bucket). Every algorithm admits the same sustained rate and
    /// the same largest burst for the same numbers.
    pub algorithm: Algorithm,
    /// Sustained purchases per second, all buyers together (default 500).
    pub requests_per_second: NonZeroU32,
    /// The most purchases admitted at once (default 1000).
    pub burst_size: NonZeroU32,
    /// Per-buyer limit (off by default).
    pub per_user: KeyedLimit,
    /// Per-IP limit (off by default: many buyers share a NAT).
    pub per_ip: KeyedLimit,
    /// Keys each keyed limiter tracks at most (default 100,000).
    pub max_keys: NonZeroUsize,
}

impl RateLimits {
    /// The global limit's quota.
    pub fn quota(&self) -> Quota {
        Quota::per_second(self.requests_per_second).with_burst(self.burst_size)
    }
}

/// A per-key token bucket: `seckill.rate_limit.per_user` and `per_ip`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct KeyedLimit {
    /// Whether this level is on (default false).
    pub enable: bool,
    /// Sustained requests per second per key (default 5).
    pub requests_per_second: NonZeroU32,
    /// Burst per key (default 10).
    pub burst_size: NonZeroU32,
}

impl KeyedLimit {
    /// The quota, when the level is on.
    pub fn quota(&self) -> Option<Quota> {
        self.enable
            .then(|| Quota::per_second(self.requests_per_second).with_burst(self.burst_size))
    }
}

/// `seckill.degradation`: load shedding.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct DegradationSettings {
    /// Whether automatic degradation is on (default true).
    pub enable: bool,
    /// Load ratio (in flight and waiting over slots plus queue) that triggers it, in (0, 1]
    /// (default 0.8).
    pub threshold: f64,
    /// The message of every "busy" answer (default "系统繁忙，请稍后重试").
    pub response_message: String,
}

const fn nz32(v: u32) -> NonZeroU32 {
    match NonZeroU32::new(v) {
        Some(v) => v,
        None => panic!("zero"),
    }
}

const fn nzu(v: usize) -> NonZeroUsize {
    match NonZeroUsize::new(v) {
        Some(v) => v,
        None => panic!("zero"),
    }
}

impl Default for Settings {
    /// The specification's defaults.
    fn default() -> Self {
        Self {
            max_concurrent_requests: nzu(1000),
            queue_size: 5000,
            queue_timeout: Duration::from_secs(1),
            async_workers: nzu(4),
            result_ttl: Duration::from_secs(600),
            result_capacity: nzu(crate::DEFAULT_RESULT_CAPACITY),
            rate_limit: RateLimits::default(),
            circuit_breaker: BreakerConfig::default(),
            degradation: DegradationSettings::default(),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enable: true,
            algorithm: Algorithm::TokenBucket,
            requests_per_second: nz32(500),
            burst_size: nz32(1000),
            per_user: KeyedLimit::default(),
            per_ip: KeyedLimit::default(),
            max_keys: nzu(100_000),
        }
    }
}

impl Default for KeyedLimit {
    fn default() -> Self {
        Self {
            enable: false,
            requests_per_second: nz32(5),
            burst_size: nz32(10),
        }
    }
}

impl Default for DegradationSettings {
    fn default() -> Self {
        Self {
            enable: true,
            threshold: 0.8,
            response_message: "系统繁忙，请稍后重试".into(),
        }
    }
}

/// Most asynchronous purchase workers.
const MAX_WORKERS: usize = 1024;

impl Settings {
    /// Checks what the types cannot: ranges and non-empty values. The key of the error is
    /// relative to the section (`degradation.threshold`).
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.async_workers.get() > MAX_WORKERS {
            return Err(ConfigError::new(
                "async_workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            ));
        }
        if self.queue_timeout.is_zero() {
            return Err(ConfigError::new("queue_timeout", "must be longer than 0s"));
        }
        if self.result_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("result_ttl", "must be at least 1s"));
        }
        self.circuit_breaker.validate().map_err(|e| {
            ConfigError::new(format!("circuit_breaker.{}", e.name()), e.to_string())
        })?;
        let d = &self.degradation;
        if !(d.threshold > 0.0 && d.threshold <= 1.0) {
            return Err(ConfigError::new(
                "degradation.threshold",
                format!("{} is not in (0, 1]", d.threshold),
            ));
        }
        if d.response_message.trim().is_empty() {
            return Err(ConfigError::new(
                "degradation.response_message",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_specification_s_and_valid() {
        let s = Settings::default();
        assert_eq!(s.max_concurrent_requests.get(), 1000);
        assert_eq!(s.queue_size, 5000);
        assert_eq!(s.rate_limit.requests_per_second.get(), 500);
        assert_eq!(s.rate_limit.burst_size.get(), 1000);
        assert_eq!(s.circuit_breaker.failure_threshold, 10);
        assert_eq!(s.circuit_breaker.recovery_timeout, Duration::from_secs(60));
        assert!(s.degradation.enable);
        assert_eq!(s.degradation.threshold, 0.8);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut s = Settings::default();
        s.degradation.threshold = 1.5;
        assert_eq!(s.validate().unwrap_err().key, "degradation.threshold");
        let s = Settings {
            async_workers: nzu(5000),
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().key, "async_workers");
        let mut s = Settings::default();
        s.degradation.response_message = " ".into();
        assert_eq!(
            s.validate().unwrap_err().key,
            "degradation.response_message"
        );
        let mut s = Settings::default();
        s.circuit_breaker.failure_ratio = Some(2.0);
        assert_eq!(
            s.validate().unwrap_err().key,
            "circuit_breaker.failure_ratio"
        );
    }
}
