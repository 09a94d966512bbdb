//! [`ServiceError`]: why a request was not served, with the stable code every front answers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::PurchaseOutcome;

/// Stable codes of the API's answers, the same on every front. `0` is success.
pub mod codes {
    /// Success.
    pub const OK: i32 = 0;
    /// Malformed input or an invalid field (the message names it).
    pub const INVALID_REQUEST: i32 = 40001;
    /// No valid bearer token (missing, malformed, expired, wrongly signed).
    pub const UNAUTHENTICATED: i32 = 40101;
    /// The activity is not active.
    pub const INACTIVE: i32 = 40301;
    /// The sale has not started.
    pub const NOT_STARTED: i32 = 40302;
    /// The sale has ended.
    pub const ENDED: i32 = 40303;
    /// The token names another buyer than the request.
    pub const NOT_THIS_BUYER: i32 = 40304;
    /// The admin plane (or paying) needs the admin (or payment) role, or an allowed peer.
    pub const NOT_ADMIN: i32 = 40305;
    /// A purchase needs a valid, unused purchase token.
    pub const PURCHASE_TOKEN: i32 = 40306;
    /// No activity for this product.
    pub const UNKNOWN_PRODUCT: i32 = 40401;
    /// No such order.
    pub const UNKNOWN_ORDER: i32 = 40402;
    /// No such asynchronous request (unknown or expired).
    pub const UNKNOWN_REQUEST: i32 = 40403;
    /// Sold out (fewer items left than asked for).
    pub const SOLD_OUT: i32 = 40901;
    /// This user already bought this product.
    pub const ALREADY_BOUGHT: i32 = 40902;
    /// Prewarm refused: the loaded activity's sale has started (send `"force": true`).
    pub const SALE_STARTED: i32 = 40903;
    /// Payment refused: the order's payment deadline passed (it is being cancelled).
    pub const ORDER_EXPIRED: i32 = 40904;
    /// The order was cancelled: it can no longer be paid.
    pub const ORDER_CANCELLED: i32 = 40905;
    /// The order was paid: it can no longer be cancelled.
    pub const ORDER_PAID: i32 = 40906;
    /// The idempotency key was used for a different request.
    pub const IDEMPOTENCY_KEY_REUSED: i32 = 42201;
    /// Rate limited (retry after the time given).
    pub const RATE_LIMITED: i32 = 42901;
    /// Internal error.
    pub const INTERNAL: i32 = 50001;
    /// Degraded: the service is shedding load.
    pub const DEGRADED: i32 = 50301;
    /// The request queue is full, or the wait in it timed out.
    pub const QUEUE_FULL: i32 = 50302;
    /// A backend is unavailable (circuit open or failing).
    pub const BACKEND_UNAVAILABLE: i32 = 50303;
    /// The purchase may have happened (the inventory timed out or lost the connection after
    /// it was sent): retry with the same Idempotency-Key, or look it up.
    pub const OUTCOME_UNKNOWN: i32 = 50304;
}

/// Which limit refused a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitLevel {
    /// The global limit (all buyers together).
    Global,
    /// The per-buyer limit.
    User,
    /// The per-IP limit.
    Ip,
}

impl LimitLevel {
    /// The level's name, as in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::User => "user",
            Self::Ip => "ip",
        }
    }
}

/// Why the service is shedding a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusyReason {
    /// Degradation is on (automatic or the operators' lever).
    Degraded,
    /// The request queue is full, or the wait timed out.
    QueueFull,
    /// A backend is unavailable: the breaker is open or the call failed. Nothing happened.
    BackendUnavailable,
    /// The inventory may have run the purchase; a retry with the same idempotency key (or
    /// by the same buyer) answers the sale if it happened.
    OutcomeUnknown,
}

/// What was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Missing {
    /// No activity for the product.
    Product,
    /// No such order (a new sale's order may still be in transit).
    Order,
    /// No such asynchronous request, or it expired.
    Request,
}

/// A refusal decided by who the caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Denied {
    /// The token names another buyer than the request (or none).
    NotThisBuyer,
    /// The admin plane needs the admin role (mode jwt) or an allowed peer (mode none); paying
    /// needs the payment or admin role.
    NotAdmin,
    /// A purchase needs a valid, unused purchase token.
    PurchaseToken,
}

impl Denied {
    fn message(self) -> &'static str {
        match self {
            Self::NotThisBuyer => "the token does not name this buyer",
            Self::NotAdmin => "not allowed for this caller",
            Self::PurchaseToken => "a valid, unused purchase token is required",
        }
    }

    fn code(self) -> i32 {
        match self {
            Self::NotThisBuyer => codes::NOT_THIS_BUYER,
            Self::NotAdmin => codes::NOT_ADMIN,
            Self::PurchaseToken => codes::PURCHASE_TOKEN,
        }
    }
}

/// A refusal decided by the state of a sale or an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The activity is not active.
    Inactive,
    /// The sale has not started.
    NotStarted,
    /// The sale has ended.
    Ended,
    /// Fewer items left than asked for.
    SoldOut,
    /// This buyer already bought this product.
    AlreadyBought,
    /// Prewarm refused: the loaded activity's sale has started.
    SaleStarted,
    /// Payment refused: the deadline passed.
    OrderExpired,
    /// The order was cancelled: it cannot be paid.
    OrderCancelled,
    /// The order was paid: it cannot be cancelled.
    OrderPaid,
    /// The idempotency key was used for a different request (another quantity).
    IdempotencyKeyReused,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Self::Inactive => "activity not active",
            Self::NotStarted => "activity not started",
            Self::Ended => "activity ended",
            Self::SoldOut => "sold out",
            Self::AlreadyBought => "already bought",
            Self::SaleStarted => {
                "the activity's sale has started; send \"force\": true to replace it"
            }
            Self::OrderExpired => "payment deadline passed; the order is being cancelled",
            Self::OrderCancelled => "order cancelled; it can no longer be paid",
            Self::OrderPaid => "order paid; it can no longer be cancelled",
            Self::IdempotencyKeyReused => "this Idempotency-Key was used for a different request",
        }
    }

    fn code(self) -> i32 {
        match self {
            Self::Inactive => codes::INACTIVE,
            Self::NotStarted => codes::NOT_STARTED,
            Self::Ended => codes::ENDED,
            Self::SoldOut => codes::SOLD_OUT,
            Self::AlreadyBought => codes::ALREADY_BOUGHT,
            Self::SaleStarted => codes::SALE_STARTED,
            Self::OrderExpired => codes::ORDER_EXPIRED,
            Self::OrderCancelled => codes::ORDER_CANCELLED,
            Self::OrderPaid => codes::ORDER_PAID,
            Self::IdempotencyKeyReused => codes::IDEMPOTENCY_KEY_REUSED,
        }
    }
}

/// A request that was not served: a rejection or a failure, in domain terms. Every front maps it
/// to its wire form; [`ServiceError::code`] is the code they all answer with, and the message
/// ([`Display`](std::fmt::Display)) never carries internal detail.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Malformed input or an invalid field.
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    /// No valid bearer token; the reason is safe to answer.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Refused because of who the caller is.
    #[error("{}", .0.message())]
    Denied(Denied),
    /// A limit refused the request.
    #[error("rate limited")]
    RateLimited {
        /// Which level refused.
        level: LimitLevel,
        /// Earliest useful retry.
        retry_after: Duration,
    },
    /// Shedding load; the message is the configured degradation message.
    #[error("{message}")]
    Busy {
        /// Why.
        reason: BusyReason,
        /// The configured `degradation.response_message`.
        message: Arc<str>,
        /// Earliest useful retry, when known.
        retry_after: Option<Duration>,
    },
    /// Something does not exist.
    #[error("{}", match .0 {
        Missing::Product => "unknown product",
        Missing::Order => "unknown order (a new sale's order may still be in transit)",
        Missing::Request => "unknown or expired request id",
    })]
    NotFound(Missing),
    /// Refused by the state of the sale or the order.
    #[error("{}", .0.message())]
    Refused(Refusal),
    /// A failure the caller cannot act on (details are logged, never answered).
    #[error("internal error")]
    Internal,
}

impl ServiceError {
    /// An invalid-field error naming the field and the reason.
    pub fn invalid_field(field: &str, reason: &str) -> Self {
        Self::Invalid(Cow::Owned(format!("invalid {field}: {reason}")))
    }

    /// The stable code.
    pub fn code(&self) -> i32 {
        match self {
            Self::Invalid(_) => codes::INVALID_REQUEST,
            Self::Unauthenticated(_) => codes::UNAUTHENTICATED,
            Self::Denied(d) => d.code(),
            Self::RateLimited { .. } => codes::RATE_LIMITED,
            Self::Busy { reason, .. } => match reason {
                BusyReason::Degraded => codes::DEGRADED,
                BusyReason::QueueFull => codes::QUEUE_FULL,
                BusyReason::BackendUnavailable => codes::BACKEND_UNAVAILABLE,
                BusyReason::OutcomeUnknown => codes::OUTCOME_UNKNOWN,
            },
            Self::NotFound(m) => match m {
                Missing::Product => codes::UNKNOWN_PRODUCT,
                Missing::Order => codes::UNKNOWN_ORDER,
                Missing::Request => codes::UNKNOWN_REQUEST,
            },
            Self::Refused(r) => r.code(),
            Self::Internal => codes::INTERNAL,
        }
    }

    /// True when the same request may succeed later unchanged: shed load, a limit, or a backend
    /// that is unavailable for now.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::RateLimited { .. })
    }

    /// When a retry can succeed, where known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error a purchase outcome other than a sale answers with; `None` for a sale.
    pub fn from_outcome(outcome: &PurchaseOutcome) -> Option<Self> {
        Some(match outcome {
            PurchaseOutcome::Success { .. } => return None,
            PurchaseOutcome::SoldOut { .. } => Self::Refused(Refusal::SoldOut),
            PurchaseOutcome::AlreadyBought => Self::Refused(Refusal::AlreadyBought),
            PurchaseOutcome::NotStarted => Self::Refused(Refusal::NotStarted),
            PurchaseOutcome::Ended => Self::Refused(Refusal::Ended),
            PurchaseOutcome::Inactive => Self::Refused(Refusal::Inactive),
            PurchaseOutcome::UnknownProduct => Self::NotFound(Missing::Product),
            PurchaseOutcome::InvalidQuantity { max } => {
                Self::invalid_field("quantity", &format!("must be between 1 and {max}"))
            }
            PurchaseOutcome::KeyReused => Self::Refused(Refusal::IdempotencyKeyReused),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_transience() {
        let busy = ServiceError::Busy {
            reason: BusyReason::BackendUnavailable,
            message: "busy".into(),
            retry_after: None,
        };
        assert_eq!(busy.code(), codes::BACKEND_UNAVAILABLE);
        assert!(busy.is_transient());
        let sold =
            ServiceError::from_outcome(&PurchaseOutcome::SoldOut { remaining_stock: 0 }).unwrap();
        assert_eq!(
            (sold.code(), sold.to_string().as_str()),
            (40901, "sold out")
        );
        assert!(!sold.is_transient());
        assert_eq!(ServiceError::NotFound(Missing::Order).code(), 40402);
        assert!(
            ServiceError::from_outcome(&PurchaseOutcome::Success {
                order_id: "1-1".parse().unwrap(),
                remaining_stock: 1
            })
            .is_none()
        );
    }
}
