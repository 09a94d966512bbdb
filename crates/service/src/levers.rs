//! The operators' levers (degradation, the global rate limit) and the system view.

use std::num::NonZeroU32;

use seckill_flowcontrol::{Algorithm, BreakerState, Quota};
use seckill_mq::Topic;
use seckill_orders::ORDER_SERVICE_GROUP;
use serde::Serialize;

use crate::error::ServiceError;
use crate::flow::GlobalLimit;
use crate::stats::OutcomeCount;
use crate::{Caller, PURCHASE_WORKERS_GROUP, Service};

/// The degradation lever's positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DegradationMode {
    /// Refuse every purchase with the busy message.
    On,
    /// Never degrade.
    Off,
    /// Degrade by load (the configured behaviour).
    Auto,
}

impl DegradationMode {
    /// Parses `on`, `off` or `auto`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `mode`.
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        match raw {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            _ => Err(ServiceError::invalid_field(
                "mode",
                "must be \"on\", \"off\" or \"auto\"",
            )),
        }
    }

    fn forced(self) -> Option<bool> {
        match self {
            Self::On => Some(true),
            Self::Off => Some(false),
            Self::Auto => None,
        }
    }

    fn from_forced(forced: Option<bool>) -> Self {
        match forced {
            Some(true) => Self::On,
            Some(false) => Self::Off,
            None => Self::Auto,
        }
    }
}

/// A change of the global rate limit, as an operator asked for it: fields left out keep their
/// values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitChange {
    /// On or off.
    pub enable: bool,
    /// New sustained rate.
    pub requests_per_second: Option<u64>,
    /// New burst.
    pub burst_size: Option<u64>,
    /// New algorithm: `token_bucket`, `sliding_window` or `fixed_window`.
    pub algorithm: Option<String>,
}

/// The global rate limit, as answered by the lever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitView {
    /// Whether it is on.
    pub enable: bool,
    /// Its algorithm, when on.
    pub algorithm: Option<&'static str>,
    /// Its sustained rate, when on.
    pub requests_per_second: Option<u32>,
    /// Its burst, when on.
    pub burst_size: Option<u32>,
}

impl RateLimitView {
    fn of(limit: Option<GlobalLimit>) -> Self {
        Self {
            enable: limit.is_some(),
            algorithm: limit.map(|l| l.algorithm.as_str()),
            requests_per_second: limit.map(|l| l.quota.rate().get()),
            burst_size: limit.map(|l| l.quota.burst().get()),
        }
    }
}

/// The whole service at a glance.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SystemStats {
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Purchase requests by outcome.
    pub requests: Vec<OutcomeCount>,
    /// Purchases being served.
    pub in_flight: usize,
    /// Purchases waiting in the queue.
    pub queue_waiting: usize,
    /// Slots.
    pub max_concurrent_requests: usize,
    /// Queue capacity.
    pub queue_size: usize,
    /// In flight and waiting over slots plus queue.
    pub load: f64,
    /// Whether purchases are refused right now.
    pub degraded: bool,
    /// The degradation lever's position.
    pub degradation_mode: DegradationMode,
    /// `closed`, `open` or `half_open`.
    pub circuit_breaker: &'static str,
    /// Sales waiting in the outbox, when the inventory answers.
    pub outbox_pending: Option<u64>,
    /// Sales in the broker for the order service, when the broker can tell.
    pub orders_queued: Option<u64>,
    /// Asynchronous purchases in the broker for the workers, when the broker can tell.
    pub async_queued: Option<u64>,
    /// Asynchronous purchases still pending, when the result store can count them.
    pub async_pending: Option<usize>,
}

impl Service {
    /// Sets the degradation lever (the admin plane); answers the position and whether
    /// purchases are refused now.
    ///
    /// # Errors
    /// A caller without the admin plane (see [`Caller::require_admin`]).
    pub fn set_degradation(
        &self,
        caller: &Caller,
        mode: DegradationMode,
    ) -> Result<(DegradationMode, bool), ServiceError> {
        self.authorize_admin(caller, "degradation")?;
        let flow = &self.0.flow;
        flow.degradation().set_forced(mode.forced());
        tracing::warn!(who = %caller, ?mode, "degradation mode set by an operator");
        Ok((mode, flow.is_degraded()))
    }

    /// The global rate limit in force (the admin plane).
    ///
    /// # Errors
    /// A caller without the admin plane.
    pub fn rate_limit(&self, caller: &Caller) -> Result<RateLimitView, ServiceError> {
        caller.require_admin()?;
        Ok(RateLimitView::of(self.0.flow.global_limit()))
    }

    /// The operators' lever to tighten or relax the global limit at run time (per instance).
    /// What the limiter has handed out stays spent: setting a limit never hands out a fresh
    /// burst.
    ///
    /// # Errors
    /// A caller without the admin plane; [`ServiceError::Invalid`] naming the field. Nothing
    /// changes.
    pub fn set_rate_limit(
        &self,
        caller: &Caller,
        change: RateLimitChange,
    ) -> Result<RateLimitView, ServiceError> {
        self.authorize_admin(caller, "rate-limit")?;
        let flow = &self.0.flow;
        let next = if change.enable {
            let base = flow.configured_global();
            let positive = |v: Option<u64>, field: &str, current: NonZeroU32| match v {
                None => Ok(current),
                Some(v) => u32::try_from(v)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        ServiceError::invalid_field(field, "must be between 1 and 4294967295")
                    }),
            };
            let algorithm = match change.algorithm.as_deref() {
                None => base.algorithm,
                Some(a) => a.parse::<Algorithm>().map_err(|_| {
                    ServiceError::invalid_field(
                        "algorithm",
                        "must be \"token_bucket\", \"sliding_window\" or \"fixed_window\"",
                    )
                })?,
            };
            let rate = positive(
                change.requests_per_second,
                "requests_per_second",
                base.quota.rate(),
            )?;
            let burst = positive(change.burst_size, "burst_size", base.quota.burst())?;
            Some(GlobalLimit {
                algorithm,
                quota: Quota::per_second(rate).with_burst(burst),
            })
        } else {
            None
        };
        flow.set_global_limit(next);
        tracing::warn!(who = %caller, limit = ?next, "global rate limit set by an operator");
        Ok(RateLimitView::of(next))
    }

    /// Uptime, requests by outcome, the queue, load and degradation, the breaker and the
    /// pipeline's backlog (the admin plane).
    ///
    /// # Errors
    /// A caller without the admin plane.
    pub async fn system_stats(&self, caller: &Caller) -> Result<SystemStats, ServiceError> {
        caller.require_admin()?;
        let s = &*self.0;
        let q = s.flow.queue();
        let queued =
            |topic, group| async move { s.broker.pending(topic, group).await.ok().flatten() };
        let (outbox_pending, orders_queued, async_queued) = tokio::join!(
            async { s.inventory.outbox_len().await.ok() },
            queued(Topic::OrderCreated, ORDER_SERVICE_GROUP),
            queued(Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP),
        );
        Ok(SystemStats {
            uptime_seconds: s.started.elapsed().as_secs(),
            requests: s.stats.snapshot(),
            in_flight: q.in_flight(),
            queue_waiting: q.waiting(),
            max_concurrent_requests: q.max_concurrent(),
            queue_size: q.queue_size(),
            load: s.flow.load(),
            degraded: s.flow.is_degraded(),
            degradation_mode: DegradationMode::from_forced(s.flow.degradation().forced()),
            circuit_breaker: match s.flow.breaker().state() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            },
            outbox_pending,
            orders_queued,
            async_queued,
            async_pending: s.results.pending(),
        })
    }
}
