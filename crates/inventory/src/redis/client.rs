//! [`RedisClient`]: a pool of Redis connections with the crate's scripts loaded.

use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig};
use fred::types::scripts::Script;
use fred::types::{FromValue, Key};

use crate::InventoryError;

/// Where and how to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Password, if the server wants one.
    pub password: Option<String>,
    /// Database number.
    pub db: u8,
    /// Connections in the pool (2–4 are enough for one process: commands are pipelined).
    pub pool_size: usize,
    /// How long to wait for the first connection.
    pub connect_timeout: Duration,
    /// How long one command may take before it fails with [`InventoryError::Timeout`].
    pub command_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            password: None,
            db: 0,
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
        }
    }
}

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
    /// Connects, waiting up to `connect_timeout` for the first connection.
    ///
    /// # Errors
    /// [`InventoryError::Backend`] when the server cannot be reached in time.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, InventoryError> {
        let config = Config {
            server: ServerConfig::Centralized {
                server: Server::new(settings.host.clone(), settings.port),
            },
            password: settings.password.clone(),
            database: Some(settings.db),
            ..Config::default()
        };
        let mut builder = fred::types::Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = settings.connect_timeout;
                c.internal_command_timeout = settings.command_timeout;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = settings.command_timeout;
            });
        let pool = builder
            .build_pool(settings.pool_size.max(1))
            .map_err(backend)?;
        pool.connect();
        tokio::time::timeout(settings.connect_timeout, pool.wait_for_connect())
            .await
            .map_err(|_| {
                InventoryError::Backend(
                    format!(
                        "redis at {}:{} did not answer within {:?}",
                        settings.host, settings.port, settings.connect_timeout
                    )
                    .into(),
                )
            })?
            .map_err(backend)?;
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
