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
    /// The store refused the data for good (PostgreSQL SQLSTATE classes 22 data exception,
    /// 23 integrity constraint violation, 42 syntax error or access rule violation): retrying
    /// the same message cannot succeed.
    #[error("order store refused the order (SQLSTATE {sqlstate}): {reason}")]
    Rejected {
        /// The five-character SQLSTATE.
        sqlstate: String,
        /// The store's message.
        reason: String,
    },
    /// A message carries a sale under an order id that is stored for a different sale: an
    /// integrity alarm, never taken for a redelivery.
    #[error("order {order_id} is stored for a different sale: {reason}")]
    Conflict {
        /// The id both sales claim.
        order_id: String,
        /// Which field differs.
        reason: String,
    },
    /// Publishing a follow-up message failed.
    #[error("publishing a follow-up message failed")]
    Publish(#[from] seckill_mq::MqError),
}

impl OrderError {
    /// True when retrying cannot help (the message or a stored value is invalid, the store
    /// refused the data, or the id belongs to another sale); false for
    /// failures of the store or the broker, which pass.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::InvalidConfig { .. }
                | Self::Rejected { .. }
                | Self::Conflict { .. }
        )
    }
}
