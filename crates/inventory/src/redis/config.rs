//! [`RedisConfig`]: the `redis:` configuration section, with its defaults and its checks.

use std::fmt;
use std::time::Duration;

use crate::InventoryError;
use crate::memory::DEFAULT_RECLAIM_AFTER;

/// Where Redis is, how to talk to it, and how the [`RedisInventory`](crate::RedisInventory)
/// uses it: the one configuration of the Redis backend (and of the [`RedisClient`](crate::RedisClient)
/// other components share).
///
/// With the `serde` feature it is the `redis:` section of a configuration file: the keys are
/// the field names, every key is optional (its default applies), unknown keys are refused and
/// durations are humantime strings (`"2s"`, `"500ms"`, `"24h"`). Check it with
/// [`validate`](Self::validate) (the `connect` functions do), whose errors name the key.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
pub struct RedisConfig {
    /// Host name or address (default `localhost`).
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// Connections in the pool (default 20), in `1..=256`. Commands are pipelined: a few
    /// connections serve a process, more spread the load of scripts.
    pub pool_size: usize,
    /// Password, if the server wants one (default none).
    pub password: Option<String>,
    /// Database number (default 0).
    pub db: u8,
    /// Prefix of every key (default `seckill`): isolates tenants and tests. Non-empty, without
    /// `{` or `}` (the keys' hash tags are the product ids).
    pub key_prefix: String,
    /// How long to wait for the first connection (default 2 s), more than zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub connect_timeout: Duration,
    /// How long one command may take before it fails with [`InventoryError::Timeout`]
    /// (default 1 s), more than zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub command_timeout: Duration,
    /// How long a claimed outbox entry may stay unacknowledged before another relay takes it
    /// (default 30 s, as [`MemoryInventory`](crate::MemoryInventory)).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub reclaim_after: Duration,
    /// How long after an activity's end its keys are kept (default 24 h).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub key_grace: Duration,
    /// How long this process answers purchases of a sold-out product from its own copy of the
    /// product's buyers, without a Redis round trip (default 500 ms; `0s` disables it).
    /// Answers stay exact — "already bought" for a buyer, "sold out" for anyone else, in the
    /// script's order of checks — except that an item returned by a cancel on another process
    /// becomes visible here up to this long later.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub sold_out_cache: Duration,
    /// How often an idle relay polls the outboxes (default 10 ms).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub poll_interval: Duration,
    /// Accept a Redis that persists nothing (neither AOF nor RDB snapshots), whose restart
    /// forgets every sale (default false: [`RedisInventory::check_durability`](crate::RedisInventory::check_durability)
    /// refuses it). For tests and benchmarks.
    pub allow_volatile: bool,
    /// Replicas that must confirm each purchase call (`WAIT`) before its sales are answered
    /// as sold (default 0: none). A call they do not confirm within `command_timeout` is
    /// answered [`InventoryError::OutcomeUnknown`], so a failover cannot forget a sale that
    /// was answered as sold.
    pub wait_replicas: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 6379,
            pool_size: 20,
            password: None,
            db: 0,
            key_prefix: "seckill".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            reclaim_after: DEFAULT_RECLAIM_AFTER,
            key_grace: Duration::from_secs(24 * 3600),
            sold_out_cache: Duration::from_millis(500),
            poll_interval: Duration::from_millis(10),
            allow_volatile: false,
            wait_replicas: 0,
        }
    }
}

impl RedisConfig {
    /// Checks the configuration: `pool_size` in `1..=256`, non-zero `connect_timeout` and
    /// `command_timeout`, and a non-empty `key_prefix` without braces.
    ///
    /// # Errors
    /// [`InventoryError::InvalidConfig`] naming the first invalid key.
    pub fn validate(&self) -> Result<(), InventoryError> {
        let invalid = |key, reason: &str| {
            Err(InventoryError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })
        };
        if !(1..=256).contains(&self.pool_size) {
            return invalid("pool_size", "must be between 1 and 256");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be longer than 0s");
        }
        if self.command_timeout.is_zero() {
            return invalid("command_timeout", "must be longer than 0s");
        }
        if self.wait_replicas > 16 {
            return invalid("wait_replicas", "must be at most 16");
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return invalid("key_prefix", "must be non-empty and free of braces");
        }
        Ok(())
    }

    /// The connection settings, as the shared Redis plumbing takes them.
    pub(crate) fn connection(&self) -> seckill_redis_support::Connection<'_> {
        seckill_redis_support::Connection {
            host: &self.host,
            port: self.port,
            password: self.password.as_deref(),
            db: self.db,
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
        }
    }
}

/// Every field but the password, which is only said to be set.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("pool_size", &self.pool_size)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reclaim_after", &self.reclaim_after)
            .field("key_grace", &self.key_grace)
            .field("sold_out_cache", &self.sold_out_cache)
            .field("poll_interval", &self.poll_interval)
            .field("allow_volatile", &self.allow_volatile)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specification() {
        let c = RedisConfig::default();
        assert_eq!(
            (c.host.as_str(), c.port, c.pool_size),
            ("localhost", 6379, 20)
        );
        assert_eq!((c.password.as_deref(), c.db), (None, 0));
        assert_eq!(c.key_prefix, "seckill");
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.command_timeout, Duration::from_secs(1));
        assert_eq!(c.reclaim_after, Duration::from_secs(30));
        assert_eq!(c.key_grace, Duration::from_secs(24 * 3600));
        assert_eq!(c.sold_out_cache, Duration::from_millis(500));
        assert_eq!(c.poll_interval, Duration::from_millis(10));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_names_the_key() {
        let key = |c: RedisConfig| match c.validate() {
            Err(InventoryError::InvalidConfig { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let d = RedisConfig::default;
        for pool_size in [0, 257] {
            assert_eq!(key(RedisConfig { pool_size, ..d() }), "pool_size");
        }
        assert!(
            RedisConfig {
                pool_size: 256,
                ..d()
            }
            .validate()
            .is_ok()
        );
        let zero = Duration::ZERO;
        assert_eq!(
            key(RedisConfig {
                connect_timeout: zero,
                ..d()
            }),
            "connect_timeout"
        );
        assert_eq!(
            key(RedisConfig {
                command_timeout: zero,
                ..d()
            }),
            "command_timeout"
        );
        for prefix in ["", "a{1}", "b}"] {
            let c = RedisConfig {
                key_prefix: prefix.into(),
                ..d()
            };
            assert_eq!(key(c), "key_prefix");
        }
        let e = RedisConfig {
            pool_size: 0,
            ..d()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `pool_size`: must be between 1 and 256"
        );
        assert!(!e.is_backend_fault());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = RedisConfig {
            password: Some("hunter2".into()),
            ..RedisConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reads_like_its_configuration_section() {
        let parse = |json: &str| serde_json::from_str::<RedisConfig>(json);
        assert_eq!(parse("{}").unwrap(), RedisConfig::default());
        let c = parse(
            r#"{"host": "redis", "pool_size": 8, "password": "pw", "key_prefix": "t1",
                "command_timeout": "250ms", "key_grace": "2h", "sold_out_cache": "0s"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            RedisConfig {
                host: "redis".into(),
                pool_size: 8,
                password: Some("pw".into()),
                key_prefix: "t1".into(),
                command_timeout: Duration::from_millis(250),
                key_grace: Duration::from_secs(7200),
                sold_out_cache: Duration::ZERO,
                ..RedisConfig::default()
            }
        );
        let unknown = parse(r#"{"pool": 8}"#).unwrap_err();
        assert!(unknown.to_string().contains("pool"), "{unknown}");
        assert!(
            parse(r#"{"connect_timeout": 2}"#).is_err(),
            "durations are strings"
        );
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""key_grace":"2h""#), "{json}");
        assert_eq!(parse(&json).unwrap(), c);
    }
}
