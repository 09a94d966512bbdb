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
    /// When set, the admin plane (prewarm, the levers, `/api/v1/system/*`, `/metrics`) is served
    /// on this port only, and not on the public one (default: none, one listener).
    pub admin_port: Option<u16>,
    /// Largest request body in bytes, at least 64 (default 4096); larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for pending sales to be delivered (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub shutdown_timeout: Duration,
    /// How long a client has to send a complete request head, counted from the accept for a
    /// connection's first request and from the first byte of each later one; past it the
    /// connection is closed (default 5 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive after its head; a handler waiting for the
    /// rest then gets an error and the client a 408 (default 5 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request, counted from the last
    /// response, before it is closed (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
    /// Most connections open at once per listener, at least 1 (default 10000); past it new
    /// connections are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8083,
            grpc_port: 9083,
            admin_port: None,
            max_body_bytes: 4096,
            shutdown_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    /// Checks what the types cannot.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, timeout) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError {
                    key,
                    reason: "must be longer than 0s".into(),
                });
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError {
                key: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
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
        if self
            .admin_port
            .is_some_and(|a| a != 0 && (a == self.port || a == self.grpc_port))
        {
            return Err(ConfigError {
                key: "admin_port",
                reason: "must differ from server.port and server.grpc_port".into(),
            });
        }
        Ok(())
    }
}
