//! The crate's error type.

/// A failure of the order service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The order store failed.
    #[error("order store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A setting or a stored value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A configuration value is invalid.
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The key, as in the `orders` section (`pool_size`).
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// Publishing a follow-up message failed.
    #[error("publishing a follow-up message failed")]
    Publish(#[from] seckill_mq::MqError),
}

impl OrderError {
    /// True when retrying cannot help (the message or a stored value is invalid); false for
    /// failures of the store or the broker, which pass.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::InvalidConfig { .. })
    }
}
