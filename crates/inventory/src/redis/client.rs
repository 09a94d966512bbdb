//! [`RedisClient`]: a pool of Redis connections with the crate's scripts loaded.

use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::ClientLike;
use fred::types::config::ReconnectPolicy;
use fred::types::scripts::Script;
use fred::types::{FromValue, Key};
use seckill_redis_support::{ConnectError, PoolOptions};

use super::RedisConfig;
use crate::InventoryError;

/// A connection pool to one Redis server, reconnecting with exponential backoff (100 ms up to
/// 5 s, forever) after a connection is lost. Cheap to clone.
#[derive(Clone)]
pub struct RedisClient {
    pool: Pool,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

pub(crate) fn backend(e: fred::error::Error) -> InventoryError {
    match e.kind() {
        fred::error::ErrorKind::Timeout => InventoryError::Timeout,
        _ => InventoryError::Backend(Box::new(e)),
    }
}

impl RedisClient {
    /// Connects to the server of `config` (its `host`, `port`, `password`, `db`,
    /// `pool_size` and timeouts), waiting up to `connect_timeout` for the first connection.
    ///
    /// # Errors
    /// [`InventoryError::InvalidConfig`] for an invalid `config`; [`InventoryError::Backend`]
    /// when the server refuses the connection or does not answer in time.
    pub async fn connect(config: &RedisConfig) -> Result<Self, InventoryError> {
        config.validate()?;
        let options = PoolOptions {
            reconnect: ReconnectPolicy::new_exponential(0, 100, 5_000, 2),
            // A server that is not there at start-up is reported at once.
            retry_first_connection: false,
        };
        let pool = seckill_redis_support::connect_pool(&config.connection(), &options)
            .await
            .map_err(|e| match e {
                ConnectError::Failed(e) => backend(e),
                unreachable => InventoryError::Backend(Box::new(unreachable)),
            })?;
        Ok(Self { pool })
    }

    pub(crate) fn next(&self) -> &fred::clients::Client {
        self.pool.next()
    }

    /// Runs a script by EVALSHA; a server that lost its scripts (restart, failover, SCRIPT
    /// FLUSH) gets it loaded again and the call retried, so the caller never sees NOSCRIPT.
    /// The scripts can vanish again between the reload and the retry (another flush), so the
    /// reload is tried a few times.
    pub(crate) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<Key>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, InventoryError> {
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            match script
                .evalsha_with_reload(self.next(), keys.clone(), args.clone())
                .await
            {
                Err(e) if attempt < ATTEMPTS && e.details().starts_with("NOSCRIPT") => {
                    attempt += 1;
                }
                other => return other.map_err(backend),
            }
        }
    }

    /// Loads scripts on the server ahead of their first use.
    pub(crate) async fn load(&self, scripts: &[&Script]) -> Result<(), InventoryError> {
        for s in scripts {
            s.load(self.next()).await.map_err(backend)?;
        }
        Ok(())
    }

    /// Drops every script the server has loaded (SCRIPT FLUSH), as a restart or failover does.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn script_flush(&self) -> Result<(), InventoryError> {
        use fred::interfaces::LuaInterface;
        self.next().script_flush(false).await.map_err(backend)
    }

    /// Deletes keys.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, InventoryError> {
        use fred::interfaces::KeysInterface;
        self.next().del(keys.to_vec()).await.map_err(backend)
    }

    /// Sets a plain string key with a time-to-live (for callers sharing this connection, such
    /// as the API's result store).
    ///
    /// # Errors
    /// Backend failures.
    pub async fn set_px(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), InventoryError> {
        use fred::interfaces::KeysInterface;
        use fred::types::Expiration;
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.next()
            .set::<(), _, _>(key, value, Some(Expiration::PX(ms)), None, false)
            .await
            .map_err(backend)
    }

    /// Sets a plain string key with a time-to-live only if it does not exist (SET NX PX):
    /// `true` when this call set it, `false` when it was there. Among concurrent callers on
    /// one server exactly one gets `true` (for single-use ledgers).
    ///
    /// # Errors
    /// Backend failures.
    pub async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, InventoryError> {
        use fred::interfaces::KeysInterface;
        use fred::types::{Expiration, SetOptions};
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        // "OK" when set, nil when the key exists.
        let reply: Option<String> = self
            .next()
            .set(
                key,
                value,
                Some(Expiration::PX(ms)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(backend)?;
        Ok(reply.is_some())
    }

    /// Reads a plain string key.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn get_string(&self, key: &str) -> Result<Option<String>, InventoryError> {
        use fred::interfaces::KeysInterface;
        self.next().get(key).await.map_err(backend)
    }

    /// Closes every connection.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }
}
