//! The purchase path's protections, in order: degradation → rate limits → request queue →
//! circuit breaker.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use seckill_flowcontrol::{
    Algorithm, BreakerState, ChainLevel, CircuitBreaker, Degradation, KeyedLimiter, Limiter, Quota,
    RequestQueue, check_chain,
};

use crate::error::{BusyReason, LimitLevel, ServiceError};
use crate::settings::Settings;
use crate::stats::{Outcome, Rejection, Stats};

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
    auto_degrade: AtomicBool,
    /// The global limit; the operators' lever and a reload change it in place, keeping its
    /// spent state.
    global: Limiter,
    global_on: AtomicBool,
    per_user: KeyedLimiter<u64>,
    per_user_on: AtomicBool,
    per_ip: KeyedLimiter<IpAddr>,
    per_ip_on: AtomicBool,
    queue: Arc<RequestQueue>,
    breaker: ArcSwap<CircuitBreaker>,
    busy_message: RwLock<Arc<str>>,
    capacity: f64,
}

/// A breaker on `config` that logs its changes and exports its state.
fn breaker(config: &seckill_flowcontrol::BreakerConfig) -> CircuitBreaker {
    let breaker = CircuitBreaker::new(config.clone());
    breaker.on_state_change(|from, to| {
        tracing::warn!(?from, ?to, "inventory circuit breaker changed state");
        metrics::gauge!("seckill_circuit_breaker_state").set(breaker_gauge(to));
    });
    metrics::gauge!("seckill_circuit_breaker_state").set(breaker_gauge(breaker.state()));
    breaker
}

fn keyed_quota(l: &crate::settings::KeyedLimit) -> Quota {
    Quota::per_second(l.requests_per_second).with_burst(l.burst_size)
}

impl FlowControl {
    /// Builds the protections from settings.
    pub fn new(settings: &Settings) -> Self {
        let rl = &settings.rate_limit;
        let keys = rl.max_keys;
        Self {
            degradation: Degradation::new(settings.degradation.threshold, 0.1),
            auto_degrade: AtomicBool::new(settings.degradation.enable),
            global: Limiter::new(rl.algorithm, rl.quota()),
            global_on: AtomicBool::new(rl.enable),
            per_user: KeyedLimiter::new(keyed_quota(&rl.per_user), keys),
            per_user_on: AtomicBool::new(rl.per_user.enable),
            per_ip: KeyedLimiter::new(keyed_quota(&rl.per_ip), keys),
            per_ip_on: AtomicBool::new(rl.per_ip.enable),
            queue: Arc::new(RequestQueue::new(
                settings.max_concurrent_requests,
                settings.queue_size,
                settings.queue_timeout,
            )),
            breaker: ArcSwap::from_pointee(breaker(&settings.circuit_breaker)),
            busy_message: RwLock::new(settings.degradation.response_message.as_str().into()),
            capacity: (settings.max_concurrent_requests.get() + settings.queue_size) as f64,
        }
    }

    /// Applies the levers of `settings` — the rate limits, degradation and the breaker's
    /// settings — at once, without a restart: every limiter keeps what it has handed out, so
    /// a reload never hands out a fresh burst and a tightened limit applies to the next
    /// request. A changed breaker configuration starts a new (closed) breaker. The queue and
    /// `max_keys` keep their start values. Returns the sections that changed from `before`.
    pub fn reload(&self, before: &Settings, settings: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let rl = &settings.rate_limit;
        if rl != &before.rate_limit {
            self.global.set(rl.algorithm, rl.quota());
            self.global_on.store(rl.enable, Ordering::Relaxed);
            self.per_user.set_quota(keyed_quota(&rl.per_user));
            self.per_user_on
                .store(rl.per_user.enable, Ordering::Relaxed);
            self.per_ip.set_quota(keyed_quota(&rl.per_ip));
            self.per_ip_on.store(rl.per_ip.enable, Ordering::Relaxed);
            changed.push("seckill.rate_limit");
        }
        let d = &settings.degradation;
        if d != &before.degradation {
            // Validated with the rest of the settings: a bad threshold never gets here.
            if let Err(e) = self.degradation.set_threshold(d.threshold) {
                tracing::error!(error = %e, "seckill.degradation.threshold not applied");
            }
            self.auto_degrade.store(d.enable, Ordering::Relaxed);
            *self.busy_message.write() = d.response_message.as_str().into();
            changed.push("seckill.degradation");
        }
        if settings.circuit_breaker != before.circuit_breaker {
            self.breaker
                .store(Arc::new(breaker(&settings.circuit_breaker)));
            changed.push("seckill.circuit_breaker");
        }
        changed
    }

    /// A "busy" error with the configured message.
    pub fn busy(&self, reason: BusyReason) -> ServiceError {
        ServiceError::Busy {
            reason,
            message: self.busy_message(),
            retry_after: Some(BUSY_RETRY),
        }
    }

    /// The configured "busy" message.
    pub fn busy_message(&self) -> Arc<str> {
        self.busy_message.read().clone()
    }

    /// Load: purchases in flight and waiting over the total capacity (slots plus queue).
    pub fn load(&self) -> f64 {
        (self.queue.in_flight() + self.queue.waiting()) as f64 / self.capacity
    }

    /// Whether purchases are refused right now (automatically or by the operator).
    pub fn is_degraded(&self) -> bool {
        self.degradation
            .forced()
            .unwrap_or(self.auto_degrade.load(Ordering::Relaxed) && self.degradation.is_degraded())
    }

    /// Refuses the request when the service is degraded (automatically or by the operator).
    ///
    /// # Errors
    /// [`ServiceError::Busy`] with [`BusyReason::Degraded`].
    pub fn check_degradation(&self, stats: &Stats) -> Result<(), ServiceError> {
        let degraded = match self.degradation.forced() {
            Some(forced) => forced,
            None if self.auto_degrade.load(Ordering::Relaxed) => {
                self.degradation.evaluate(self.load())
            }
            None => false,
        };
        if degraded {
            stats.count(Outcome::Degraded);
            stats.reject(Rejection::Degraded);
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
        let user = self
            .per_user_on
            .load(Ordering::Relaxed)
            .then(|| self.per_user.level(&user_id));
        let ip_level = match &ip {
            Some(ip) if self.per_ip_on.load(Ordering::Relaxed) => Some(self.per_ip.level(ip)),
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
            stats.reject(match level {
                LimitLevel::Global => Rejection::Global,
                LimitLevel::User => Rejection::User,
                LimitLevel::Ip => Rejection::Ip,
            });
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

    /// The circuit breaker around the inventory backend (the one in force: a reload with
    /// other breaker settings replaces it).
    pub fn breaker(&self) -> Arc<CircuitBreaker> {
        self.breaker.load_full()
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
