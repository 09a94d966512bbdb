//! [`OrdersConfig`]: the `orders` section of the configuration — which store, the PostgreSQL
//! connection and the order lifecycle — with its defaults and its validation.

use std::time::Duration;

use crate::OrderError;

/// Time a buyer has to pay, from the sale, unless configured otherwise.
pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Which order store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum OrderStoreKind {
    /// In process ([`MemoryOrderStore`](crate::MemoryOrderStore)).
    #[default]
    Memory,
    /// PostgreSQL (`PgOrderStore`, feature `postgres`).
    Postgres,
}

/// The order store and the order lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct OrdersConfig {
    /// Which store (default memory).
    pub store: OrderStoreKind,
    /// `postgres://user[:password]@host:port/database` (store postgres).
    pub database_url: String,
    /// The schema holding the tables, created when missing (`None`: the server's default,
    /// usually `public`). Letters, digits and `_` only.
    pub schema: Option<String>,
    /// Connections in the pool, 1 to 256 (default 8).
    pub pool_size: usize,
    /// Time to wait for a connection, to connect or from the pool (default 5 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub connect_timeout: Duration,
    /// Longest a database call may take, enforced by the client and, as `statement_timeout`,
    /// by the server (default 10 s, at least 10 ms).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub query_timeout: Duration,
    /// Time a buyer has to pay, from the sale; then the order is cancelled and its items go
    /// back on sale (default 15 min, at least 1 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub payment_timeout: Duration,
    /// How often unpaid orders past their deadline are looked for (default 1 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub sweep_interval: Duration,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            store: OrderStoreKind::Memory,
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            schema: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(10),
            payment_timeout: DEFAULT_PAYMENT_TIMEOUT,
            sweep_interval: Duration::from_secs(1),
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), OrderError> {
    Err(OrderError::InvalidConfig {
        key,
        reason: reason.into(),
    })
}

impl OrdersConfig {
    /// Checks every value; the PostgreSQL ones only when the store is PostgreSQL.
    ///
    /// # Errors
    /// [`OrderError::InvalidConfig`] naming the first invalid key.
    pub fn validate(&self) -> Result<(), OrderError> {
        if self.store == OrderStoreKind::Postgres {
            self.validate_postgres()?;
        }
        if self.payment_timeout < Duration::from_secs(1) {
            return invalid("payment_timeout", "must be at least 1s");
        }
        if self.sweep_interval.is_zero() {
            return invalid("sweep_interval", "must be longer than 0s");
        }
        Ok(())
    }

    /// Checks the PostgreSQL connection values.
    ///
    /// # Errors
    /// [`OrderError::InvalidConfig`] naming the first invalid key.
    pub fn validate_postgres(&self) -> Result<(), OrderError> {
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return invalid(
                "database_url",
                "must start with postgres:// or postgresql://",
            );
        }
        if self.schema.as_ref().is_some_and(|s| {
            s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return invalid("schema", "only letters, digits and _ are allowed");
        }
        if self.pool_size == 0 || self.pool_size > 256 {
            return invalid("pool_size", "must be between 1 and 256");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than 0s");
        }
        if self.query_timeout < Duration::from_millis(10) {
            return invalid("query_timeout", "must be at least 10ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &OrdersConfig) -> &'static str {
        match c.validate() {
            Err(OrderError::InvalidConfig { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(OrdersConfig::default().validate().is_ok());
        let pg = OrdersConfig {
            store: OrderStoreKind::Postgres,
            ..OrdersConfig::default()
        };
        assert!(pg.validate().is_ok());
        let c = OrdersConfig {
            database_url: "mysql://x".into(),
            ..pg.clone()
        };
        assert_eq!(key(&c), "database_url");
        // The connection is only checked when it is used.
        assert!(
            OrdersConfig {
                store: OrderStoreKind::Memory,
                ..c
            }
            .validate()
            .is_ok()
        );
        let c = OrdersConfig {
            schema: Some("a-b".into()),
            ..pg.clone()
        };
        assert_eq!(key(&c), "schema");
        let c = OrdersConfig {
            pool_size: 0,
            ..pg.clone()
        };
        assert_eq!(key(&c), "pool_size");
        let c = OrdersConfig {
            payment_timeout: Duration::from_millis(10),
            ..pg
        };
        assert_eq!(key(&c), "payment_timeout");
    }
}
