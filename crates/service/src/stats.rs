//! Request counters by outcome, mirrored to the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// How a purchase request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    /// Sold.
    Success,
    /// Sold out.
    SoldOut,
    /// Already bought.
    AlreadyBought,
    /// Activity not started, ended or inactive.
    NotOnSale,
    /// Unknown product.
    UnknownProduct,
    /// Malformed or invalid request.
    Invalid,
    /// Rate limited.
    RateLimited,
    /// Refused by degradation.
    Degraded,
    /// Request queue full or wait timed out.
    QueueFull,
    /// Inventory backend unavailable (breaker open or a backend failure).
    BackendUnavailable,
    /// Accepted for asynchronous processing.
    Accepted,
    /// The inventory may have run the purchase (a timeout or a lost connection after it was
    /// sent, or replicas that did not confirm it).
    OutcomeUnknown,
}

impl Outcome {
    const ALL: [Outcome; 12] = [
        Outcome::Success,
        Outcome::SoldOut,
        Outcome::AlreadyBought,
        Outcome::NotOnSale,
        Outcome::UnknownProduct,
        Outcome::Invalid,
        Outcome::RateLimited,
        Outcome::Degraded,
        Outcome::QueueFull,
        Outcome::BackendUnavailable,
        Outcome::Accepted,
        Outcome::OutcomeUnknown,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::SoldOut => "sold_out",
            Self::AlreadyBought => "already_bought",
            Self::NotOnSale => "not_on_sale",
            Self::UnknownProduct => "unknown_product",
            Self::Invalid => "invalid",
            Self::RateLimited => "rate_limited",
            Self::Degraded => "degraded",
            Self::QueueFull => "queue_full",
            Self::BackendUnavailable => "backend_unavailable",
            Self::Accepted => "accepted",
            Self::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// Purchase counters. Handles to the metrics are taken once, so counting costs two atomic adds.
pub struct Stats {
    counts: [AtomicU64; 12],
    metrics: [metrics::Counter; 12],
    rejections: [metrics::Counter; 6],
}

/// The protection that refused a purchase: `seckill_rejections_total{level}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Rejection {
    /// The global rate limit.
    Global,
    /// The buyer's rate limit.
    User,
    /// The client address's rate limit.
    Ip,
    /// The request queue was full, or the wait in it timed out.
    Queue,
    /// The circuit breaker is open.
    Breaker,
    /// Load shedding.
    Degraded,
}

impl Rejection {
    const ALL: [Rejection; 6] = [
        Rejection::Global,
        Rejection::User,
        Rejection::Ip,
        Rejection::Queue,
        Rejection::Breaker,
        Rejection::Degraded,
    ];

    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::User => "user",
            Self::Ip => "ip",
            Self::Queue => "queue",
            Self::Breaker => "breaker",
            Self::Degraded => "degraded",
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: Default::default(),
            metrics: Outcome::ALL.map(
                |o| metrics::counter!("seckill_purchase_requests_total", "outcome" => o.name()),
            ),
            // Registered now, so every level is a series from the start.
            rejections: Rejection::ALL
                .map(|r| metrics::counter!("seckill_rejections_total", "level" => r.name())),
        }
    }
}

impl Stats {
    /// Counts one request.
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics[outcome as usize].increment(1);
    }

    /// Counts a purchase a protection refused.
    pub fn reject(&self, by: Rejection) {
        self.rejections[by as usize].increment(1);
    }

    /// How many requests ended with `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    /// Every count, by label.
    pub fn snapshot(&self) -> Vec<OutcomeCount> {
        Outcome::ALL
            .iter()
            .map(|&o| OutcomeCount {
                outcome: o.name(),
                count: self.get(o),
            })
            .collect()
    }
}

/// One line of [`Stats::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeCount {
    /// The outcome's label.
    pub outcome: &'static str,
    /// Requests.
    pub count: u64,
}
