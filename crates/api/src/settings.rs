//! [`ServerConfig`]: the `server` section of the configuration.

use std::time::Duration;

/// An invalid setting: the key (relative to the `server` section) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key}: {reason}")]
pub struct ConfigError {
    /// The key, e.g. `max_body_bytes`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// The listeners and the HTTP limits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct ServerConfig {
    /// Address to bind (default `0.0.0.0`).
    pub host: String,
    /// HTTP port (default 8083).
    pub port: u16,
    /// gRPC port (default 9083).
    pub grpc_port: u16,
    /// Largest request body in bytes, at least 64 (default 4096); larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for pending sales to be delivered (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8083,
            grpc_port: 9083,
            max_body_bytes: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Checks what the types cannot.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 64 {
            return Err(ConfigError {
                key: "max_body_bytes",
                reason: "must be at least 64".into(),
            });
        }
        if self.port == self.grpc_port && self.port != 0 {
            return Err(ConfigError {
                key: "grpc_port",
                reason: "must differ from server.port".into(),
            });
        }
        Ok(())
    }
}
