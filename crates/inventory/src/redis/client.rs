//! [`RedisClient`]: a pool of Redis connections with the crate's functions loaded.

use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::ClientLike;
use fred::types::config::ReconnectPolicy;
use fred::types::{FromValue, Key};
use seckill_redis_support::{ConnectError, PoolOptions};

use super::RedisConfig;
use crate::InventoryError;

/// A connection pool to one Redis server, reconnecting with exponential backoff (100 ms up to
/// 5 s, forever) after a connection is lost, plus one connection of its own for blocking reads
/// (a blocking command would hold up every command pipelined behind it). Cheap to clone.
#[derive(Clone)]
pub struct RedisClient {
    pool: Pool,
    blocking: Pool,
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
    /// The pool's connections: `(connected, configured)`.
    pub fn connections(&self) -> (usize, usize) {
        let clients = self.pool.clients();
        let up = clients.iter().filter(|c| c.is_connected()).count();
        (up, clients.len())
    }

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
        let failed = |e| match e {
            ConnectError::Failed(e) => backend(e),
            unreachable => InventoryError::Backend(Box::new(unreachable)),
        };
        let pool = seckill_redis_support::connect_pool(&config.connection(), &options)
            .await
            .map_err(failed)?;
        let mut one = config.connection();
        one.pool_size = 1;
        let blocking = seckill_redis_support::connect_pool(&one, &options)
            .await
            .map_err(failed)?;
        let client = Self { pool, blocking };
        client.load_functions().await?;
        Ok(client)
    }

    /// The connection for blocking reads.
    pub(crate) fn blocking(&self) -> &fred::clients::Client {
        self.blocking.next()
    }

    /// Loads (or replaces) the crate's function library.
    pub(crate) async fn load_functions(&self) -> Result<(), InventoryError> {
        use fred::interfaces::FunctionInterface;
        self.next()
            .function_load::<String, _>(true, super::functions::SOURCE.as_str())
            .await
            .map(drop)
            .map_err(backend)
    }

    /// Calls one of the crate's functions; a server that does not have them (flushed, or a
    /// new empty one after a failover without persistence) gets the library loaded again and
    /// the call retried, so the caller never sees "function not found".
    pub(crate) async fn fcall<R: FromValue>(
        &self,
        function: super::functions::Function,
        keys: Vec<Key>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, InventoryError> {
        self.fcall_on(self.next(), function, keys, args)
            .await
            .map_err(backend)
    }

    /// [`fcall`](Self::fcall) on one connection of the pool (to `WAIT` on it afterwards),
    /// with the client's own error.
    pub(crate) async fn fcall_on<R: FromValue>(
        &self,
        conn: &fred::clients::Client,
        function: super::functions::Function,
        keys: Vec<Key>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, fred::error::Error> {
        use fred::interfaces::FunctionInterface;
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            match conn
                .fcall::<R, _, _, _>(function.name(), keys.clone(), args.clone())
                .await
            {
                Err(e) if attempt < ATTEMPTS && super::functions::is_missing(e.details()) => {
                    attempt += 1;
                    conn.function_load::<String, _>(true, super::functions::SOURCE.as_str())
                        .await?;
                }
                other => return other,
            }
        }
    }

    /// What the server persists: `(aof, rdb)` — `appendonly yes`, and a non-empty `save`
    /// schedule.
    ///
    /// # Errors
    /// Backend failures, or a server that refuses `CONFIG GET`.
    pub async fn persistence(&self) -> Result<(bool, bool), InventoryError> {
        use fred::interfaces::ConfigInterface;
        let conn = self.next();
        let aof: std::collections::HashMap<String, String> =
            conn.config_get("appendonly").await.map_err(backend)?;
        let save: std::collections::HashMap<String, String> =
            conn.config_get("save").await.map_err(backend)?;
        Ok((
            aof.get("appendonly").is_some_and(|v| v == "yes"),
            save.get("save").is_some_and(|v| !v.trim().is_empty()),
        ))
    }

    pub(crate) fn next(&self) -> &fred::clients::Client {
        self.pool.next()
    }

    /// Drops every script the server has loaded (SCRIPT FLUSH), as a restart without
    /// persistence or a failover to a fresh replica did to EVALSHA scripts. The crate's
    /// functions are not scripts: they stay.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn script_flush(&self) -> Result<(), InventoryError> {
        use fred::interfaces::LuaInterface;
        self.next().script_flush(false).await.map_err(backend)
    }

    /// Deletes every function library (FUNCTION FLUSH): the next call reloads the crate's.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn function_flush(&self) -> Result<(), InventoryError> {
        use fred::interfaces::FunctionInterface;
        self.next().function_flush(false).await.map_err(backend)
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
        let _ = self.blocking.quit().await;
    }
}
