//! The crate's error type: failures only, never business rejections.

/// A failure of the inventory. Business rejections (sold out, already bought…) are
/// [`PurchaseOutcome`](crate::PurchaseOutcome) values, not errors, so a circuit breaker
/// can count every `Err` as a fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// An activity field is invalid; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidActivity {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A configuration value is invalid; nothing was connected.
    #[error("invalid `{key}`: {reason}")]
    InvalidConfig {
        /// The offending key, as spelled in the configuration section (`pool_size`…).
        key: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A string is not an order id.
    #[error("invalid order id {0:?}")]
    InvalidOrderId(String),
    /// The backend did not answer in time.
    #[error("inventory backend timed out")]
    Timeout,
    /// A purchase's call may or may not have run (it timed out or its connection was lost after
    /// it was sent, or its replicas did not confirm it): the buyer must retry with the same
    /// idempotency key or look the purchase up, never be told it failed.
    #[error("the purchase's outcome is unknown: the inventory backend may have run it")]
    OutcomeUnknown,
    /// The backend could not be reached or failed.
    #[error("inventory backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend answered something this crate cannot read.
    #[error("unexpected inventory backend reply: {0}")]
    Protocol(String),
}

impl InventoryError {
    /// True when the error is a fault of the backend (what a circuit breaker should count),
    /// false when it is the caller's input.
    pub fn is_backend_fault(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::OutcomeUnknown | Self::Backend(_) | Self::Protocol(_)
        )
    }
}
