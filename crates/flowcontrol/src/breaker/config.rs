//! [`BreakerConfig`]: the breaker's strategies and their validation.

use std::time::Duration;

use crate::error::ConfigError;

/// Configuration of a [`CircuitBreaker`]; see the module docs for the
/// strategies. [`Default`] gives the service's specification defaults.
///
/// With the `serde` feature it is the `circuit_breaker` section of a configuration file: the
/// keys are the field names, every key is optional (its default applies), unknown keys are
/// refused, durations are humantime strings (`"60s"`, `"200ms"`) and an absent strategy is
/// `null`. Check it with [`validate`](Self::validate), whose errors name the key.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 10); 0 disables
    /// this strategy.
    pub failure_threshold: u32,
    /// How long the breaker stays open (default 60 s), more than zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub recovery_timeout: Duration,
    /// Concurrent probes admitted while half-open (default 1), at least 1.
    pub half_open_max_probes: u32,
    /// Successful probes needed to close again (default 1), at least 1.
    pub success_threshold: u32,
    /// Rolling window of the ratio strategies (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// Calls needed in the window before a ratio applies (default 20).
    pub minimum_calls: u32,
    /// Open when `failures / calls >= failure_ratio` over the window
    /// (default `None`: off). In `0.0..=1.0`.
    pub failure_ratio: Option<f64>,
    /// A call at least this long is slow (default `None`).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_call_duration: Option<Duration>,
    /// Open when `slow / calls >= slow_call_ratio` over the window (default
    /// `None`: off). In `0.0..=1.0`; needs `slow_call_duration`.
    pub slow_call_ratio: Option<f64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 10,
            recovery_timeout: Duration::from_secs(60),
            half_open_max_probes: 1,
            success_threshold: 1,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            failure_ratio: None,
            slow_call_duration: None,
            slow_call_ratio: None,
        }
    }
}

/// Largest value of the packed probe and success counters.
pub(super) const FIELD_MAX: u32 = (1 << 20) - 1;

impl BreakerConfig {
    /// Checks the configuration: a non-zero `recovery_timeout`, probes and success threshold
    /// in `1..=1_048_575`, ratios in `0.0..=1.0`, a non-zero window when a ratio is set, and
    /// `slow_call_duration` when `slow_call_ratio` is set.
    ///
    /// # Errors
    /// The first invalid field, named by its key ([`ConfigError::name`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.recovery_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                name: "recovery_timeout",
            });
        }
        for (name, v) in [
            ("half_open_max_probes", self.half_open_max_probes),
            ("success_threshold", self.success_threshold),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroCount { name });
            }
            if v > FIELD_MAX {
                return Err(ConfigError::OutOfRange {
                    name,
                    value: f64::from(v),
                    expected: "1..=1048575",
                });
            }
        }
        for (name, r) in [
            ("failure_ratio", self.failure_ratio),
            ("slow_call_ratio", self.slow_call_ratio),
        ] {
            if let Some(r) = r {
                if !(0.0..=1.0).contains(&r) {
                    return Err(ConfigError::OutOfRange {
                        name,
                        value: r,
                        expected: "0.0..=1.0",
                    });
                }
                if self.window.is_zero() {
                    return Err(ConfigError::ZeroDuration { name: "window" });
                }
            }
        }
        if self.slow_call_ratio.is_some() && self.slow_call_duration.is_none() {
            return Err(ConfigError::Invalid {
                name: "slow_call_duration",
                reason: "must be set when slow_call_ratio is set",
            });
        }
        Ok(())
    }

    pub(super) fn uses_window(&self) -> bool {
        self.failure_ratio.is_some() || self.slow_call_ratio.is_some()
    }
}
