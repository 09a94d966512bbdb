//! The crate's error type.

/// A failure of the message broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// The broker is closed or shutting down.
    #[error("broker closed")]
    Closed,
    /// A message could not be encoded or decoded.
    #[error("message codec failed")]
    Codec(#[source] serde_json::Error),
    /// The broker refused a message (a negative publisher confirm).
    #[error("broker refused the message")]
    Nacked,
    /// The broker returned a mandatory message: no queue is bound for it (a queue deleted or
    /// never declared). Nothing was delivered; publish it again once the topology is back.
    #[error("broker returned the message: no queue is bound for {0}")]
    Unroutable(String),
    /// The broker did not answer in time.
    #[error("broker timed out")]
    Timeout,
    /// A setting is invalid (see the settings' `validate`).
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The setting's name, as written in the configuration file (`prefetch`, `partitions`).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Connection or protocol failure of the backend.
    #[error("broker backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `Err(InvalidConfig)` for the settings' `validate`.
#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
pub(crate) fn invalid_config(key: &'static str, reason: &str) -> Result<(), MqError> {
    Err(MqError::InvalidConfig {
        key,
        reason: reason.to_owned(),
    })
}
