//! The purchase path's protections, in order: degradation → rate limits → request queue →
//! circuit breaker.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use seckill_flowcontrol::{
    CircuitBreaker, Degradation, FixedWindow, KeyedLimiter, Quota, RateLimiter, RequestQueue,
    SlidingWindow, TokenBucket,
};

use crate::error::codes;
use crate::settings::{LimitAlgorithm, RateLimitSettings};
use crate::stats::{Outcome, Stats};
use crate::{ApiError, Settings};

/// The flow-control state shared by every connection.
pub struct FlowControl {
    degradation: Degradation,
    auto_degrade: bool,
    /// The global limit, replaceable at run time by the operators' lever.
    global: ArcSwapOption<Global>,
    per_user: Option<KeyedLimiter<u64>>,
    per_ip: Option<KeyedLimiter<IpAddr>>,
    queue: Arc<RequestQueue>,
    breaker: CircuitBreaker,
    busy_message: Arc<str>,
    capacity: f64,
}

/// A global limiter with the settings it was built from.
struct Global {
    settings: RateLimitSettings,
    limiter: Box<dyn RateLimiter>,
}

fn global(s: &RateLimitSettings) -> Arc<Global> {
    Arc::new(Global {
        settings: *s,
        limiter: limiter(s),
    })
}

fn quota(s: &RateLimitSettings) -> Quota {
    Quota::per_second(s.requests_per_second).with_burst(s.burst_size)
}

fn limiter(s: &RateLimitSettings) -> Box<dyn RateLimiter> {
    let second = std::time::Duration::from_secs(1);
    match s.algorithm {
        LimitAlgorithm::TokenBucket => Box::new(TokenBucket::new(quota(s))),
        LimitAlgorithm::SlidingWindow => Box::new(SlidingWindow::new(
            s.burst_size,
            second,
            std::num::NonZeroU32::new(10).expect("non-zero"),
        )),
        LimitAlgorithm::FixedWindow => Box::new(FixedWindow::new(s.burst_size, second)),
    }
}

impl FlowControl {
    /// Builds the protections from settings.
    pub fn new(settings: &Settings) -> Self {
        let breaker = CircuitBreaker::new(settings.circuit_breaker.clone());
        breaker.on_state_change(|from, to| {
            tracing::warn!(?from, ?to, "inventory circuit breaker changed state");
            metrics::gauge!("seckill_circuit_breaker_state").set(match to {
                seckill_flowcontrol::BreakerState::Closed => 0.0,
                seckill_flowcontrol::BreakerState::HalfOpen => 1.0,
                seckill_flowcontrol::BreakerState::Open => 2.0,
            });
        });
        Self {
            degradation: Degradation::new(settings.degradation.threshold, 0.1),
            auto_degrade: settings.degradation.enable,
            global: ArcSwapOption::new(settings.rate_limit.as_ref().map(global)),
            per_user: settings
                .per_user_limit
                .as_ref()
                .map(|s| KeyedLimiter::new(quota(s), settings.max_limiter_keys)),
            per_ip: settings
                .per_ip_limit
                .as_ref()
                .map(|s| KeyedLimiter::new(quota(s), settings.max_limiter_keys)),
            queue: Arc::new(RequestQueue::new(
                settings.max_concurrent_requests,
                settings.queue_size,
                settings.queue_timeout,
            )),
            breaker,
            busy_message: settings.degradation.response_message.clone(),
            capacity: (settings.max_concurrent_requests.get() + settings.queue_size) as f64,
        }
    }

    /// A 503 with the configured message.
    pub fn busy(&self, code: i32) -> ApiError {
        ApiError::Busy {
            code,
            message: self.busy_message.clone(),
            retry_after: Some(std::time::Duration::from_secs(1)),
        }
    }

    /// Load: purchases in flight and waiting over the total capacity (slots plus queue).
    pub fn load(&self) -> f64 {
        (self.queue.in_flight() + self.queue.waiting()) as f64 / self.capacity
    }

    /// Refuses the request when the service is degraded (automatically or by the operator).
    ///
    /// # Errors
    /// [`ApiError::Busy`] with code [`codes::DEGRADED`].
    pub fn check_degradation(&self, stats: &Stats) -> Result<(), ApiError> {
        let degraded = match self.degradation.forced() {
            Some(forced) => forced,
            None if self.auto_degrade => self.degradation.evaluate(self.load()),
            None => false,
        };
        if degraded {
            stats.count(Outcome::Degraded);
            return Err(self.busy(codes::DEGRADED));
        }
        Ok(())
    }

    /// Applies the global limit.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`].
    pub fn check_global(&self, stats: &Stats) -> Result<(), ApiError> {
        if let Some(g) = &*self.global.load() {
            g.limiter.try_acquire(1).map_err(|r| {
                stats.count(Outcome::RateLimited);
                ApiError::RateLimited {
                    retry_after: r.retry_after,
                }
            })?;
        }
        Ok(())
    }

    /// The global limit in force (`None`: off).
    pub fn global_limit(&self) -> Option<RateLimitSettings> {
        self.global.load().as_ref().map(|g| g.settings)
    }

    /// Replaces the global limit at run time (`None` turns it off): the operators' lever to
    /// tighten or relax admission during a sale. The new limiter starts full (its burst).
    pub fn set_global_limit(&self, settings: Option<RateLimitSettings>) {
        self.global.store(settings.as_ref().map(global));
    }

    /// Applies the per-user and per-IP limits.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`].
    pub fn check_keyed(
        &self,
        stats: &Stats,
        user_id: u64,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let limited = |r: seckill_flowcontrol::RateLimited| {
            stats.count(Outcome::RateLimited);
            ApiError::RateLimited {
                retry_after: r.retry_after,
            }
        };
        if let Some(l) = &self.per_user {
            l.try_acquire(&user_id, 1).map_err(limited)?;
        }
        if let (Some(l), Some(ip)) = (&self.per_ip, ip) {
            l.try_acquire(&ip, 1).map_err(limited)?;
        }
        Ok(())
    }

    /// The request queue.
    pub fn queue(&self) -> &Arc<RequestQueue> {
        &self.queue
    }

    /// The circuit breaker around the inventory backend.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The degradation switch (for the operators' lever).
    pub fn degradation(&self) -> &Degradation {
        &self.degradation
    }
}
