//! The purchase path's protections, in order: degradation → rate limits → request queue →
//! circuit breaker.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use seckill_flowcontrol::{
    Algorithm, BreakerState, ChainLevel, CircuitBreaker, Degradation, KeyedLimiter, Limiter, Quota,
    RequestQueue, check_chain,
};

use crate::error::{BusyReason, LimitLevel, ServiceError};
use crate::settings::Settings;
use crate::stats::{Outcome, Stats};

/// How long a "busy" answer asks the client to wait.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The global limit in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalLimit {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// Sustained rate and burst.
    pub quota: Quota,
}

/// The flow-control state shared by every request.
pub struct FlowControl {
    degradation: Degradation,
    auto_degrade: bool,
    /// The global limit; the operators' lever changes it in place, keeping its spent state.
    global: Limiter,
    global_on: AtomicBool,
    per_user: Option<KeyedLimiter<u64>>,
    per_ip: Option<KeyedLimiter<IpAddr>>,
    queue: Arc<RequestQueue>,
    breaker: CircuitBreaker,
    busy_message: Arc<str>,
    capacity: f64,
}

impl FlowControl {
    /// Builds the protections from settings.
    pub fn new(settings: &Settings) -> Self {
        let breaker = CircuitBreaker::new(settings.circuit_breaker.clone());
        breaker.on_state_change(|from, to| {
            tracing::warn!(?from, ?to, "inventory circuit breaker changed state");
            metrics::gauge!("seckill_circuit_breaker_state").set(breaker_gauge(to));
        });
        metrics::gauge!("seckill_circuit_breaker_state").set(breaker_gauge(breaker.state()));
        let rl = &settings.rate_limit;
        let keys = rl.max_keys;
        Self {
            degradation: Degradation::new(settings.degradation.threshold, 0.1),
            auto_degrade: settings.degradation.enable,
            global: Limiter::new(rl.algorithm, rl.quota()),
            global_on: AtomicBool::new(rl.enable),
            per_user: rl.per_user.quota().map(|q| KeyedLimiter::new(q, keys)),
            per_ip: rl.per_ip.quota().map(|q| KeyedLimiter::new(q, keys)),
            queue: Arc::new(RequestQueue::new(
                settings.max_concurrent_requests,
                settings.queue_size,
                settings.queue_timeout,
            )),
            breaker,
            busy_message: settings.degradation.response_message.as_str().into(),
            capacity: (settings.max_concurrent_requests.get() + settings.queue_size) as f64,
        }
    }

    /// A "busy" error with the configured message.
    pub fn busy(&self, reason: BusyReason) -> ServiceError {
        ServiceError::Busy {
            reason,
            message: self.busy_message.clone(),
            retry_after: Some(BUSY_RETRY),
        }
    }

    /// The configured "busy" message.
    pub fn busy_message(&self) -> &Arc<str> {
        &self.busy_message
    }

    /// Load: purchases in flight and waiting over the total capacity (slots plus queue).
    pub fn load(&self) -> f64 {
        (self.queue.in_flight() + self.queue.waiting()) as f64 / self.capacity
    }

    /// Whether purchases are refused right now (automatically or by the operator).
    pub fn is_degraded(&self) -> bool {
        self.degradation
            .forced()
            .unwrap_or(self.auto_degrade && self.degradation.is_degraded())
    }

    /// Refuses the request when the service is degraded (automatically or by the operator).
    ///
    /// # Errors
    /// [`ServiceError::Busy`] with [`BusyReason::Degraded`].
    pub fn check_degradation(&self, stats: &Stats) -> Result<(), ServiceError> {
        let degraded = match self.degradation.forced() {
            Some(forced) => forced,
            None if self.auto_degrade => self.degradation.evaluate(self.load()),
            None => false,
        };
        if degraded {
            stats.count(Outcome::Degraded);
            return Err(self.busy(BusyReason::Degraded));
        }
        Ok(())
    }

    /// Takes one permit from every level that applies — global, the buyer's, the client
    /// address's — or from none: a level that refuses leaves the levels before it as they were.
    ///
    /// # Errors
    /// [`ServiceError::RateLimited`] naming the level that refused.
    pub fn check_limits(
        &self,
        stats: &Stats,
        user_id: u64,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let user = self.per_user.as_ref().map(|l| l.level(&user_id));
        let ip_level = match (&self.per_ip, &ip) {
            (Some(l), Some(ip)) => Some(l.level(ip)),
            _ => None,
        };
        let mut levels: [(&dyn ChainLevel, LimitLevel); 3] = [
            (&self.global, LimitLevel::Global),
            (&self.global, LimitLevel::Global),
            (&self.global, LimitLevel::Global),
        ];
        let mut n = 0;
        if self.global_on.load(Ordering::Relaxed) {
            n += 1;
        }
        if let Some(u) = &user {
            levels[n] = (u, LimitLevel::User);
            n += 1;
        }
        if let Some(i) = &ip_level {
            levels[n] = (i, LimitLevel::Ip);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        let chain: [&dyn ChainLevel; 3] = [levels[0].0, levels[1].0, levels[2].0];
        check_chain(&chain[..n], 1).map_err(|r| {
            stats.count(Outcome::RateLimited);
            let level = levels[r.level].1;
            metrics::counter!("seckill_rate_limited_total", "level" => level.as_str()).increment(1);
            ServiceError::RateLimited {
                level,
                retry_after: r.retry_after,
            }
        })
    }

    /// The global limit in force (`None`: off).
    pub fn global_limit(&self) -> Option<GlobalLimit> {
        self.global_on
            .load(Ordering::Relaxed)
            .then(|| self.configured_global())
    }

    /// The global limit's algorithm and quota, on or off.
    pub(crate) fn configured_global(&self) -> GlobalLimit {
        GlobalLimit {
            algorithm: self.global.algorithm(),
            quota: self.global.quota(),
        }
    }

    /// Changes the global limit at run time (`None` turns it off): the operators' lever to
    /// tighten or relax admission during a sale. The limiter keeps what it has handed out, so
    /// re-setting a limit never hands out a fresh burst.
    pub fn set_global_limit(&self, limit: Option<GlobalLimit>) {
        match limit {
            Some(l) => {
                self.global.set(l.algorithm, l.quota);
                self.global_on.store(true, Ordering::Relaxed);
            }
            None => self.global_on.store(false, Ordering::Relaxed),
        }
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

fn breaker_gauge(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    }
}
