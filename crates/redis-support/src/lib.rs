//! Redis plumbing shared by `seckill-flowcontrol` and `seckill-inventory`: building a `fred`
//! connection pool from the usual connection settings, and deleting every key under a prefix.
//!
//! This is an **internal** crate: it exists so that the two libraries' `redis` features do not
//! each carry a copy of the same code. Its API speaks `fred` types freely and may change with
//! them; the public APIs of the libraries that use it never expose it.
//!
//! # Layout
//! - [`Connection`], [`PoolOptions`]: where Redis is and how the pool reconnects.
//! - [`start_pool`], [`wait_connected`], [`connect_pool`]: build a pool, start connecting, wait
//!   for the first connection ([`ConnectError`] when it does not come);
//!   [`close_in_background`] stops one without waiting.
//! - [`purge`], [`glob_escape`]: `SCAN` + `UNLINK` of every key whose name starts with a
//!   literal prefix.
//!
//! # Example
//! ```
//! use seckill_redis_support::glob_escape;
//!
//! // `purge(client, "tenant*1:", "*")` scans for this pattern: the prefix matches only
//! // itself, the suffix is a glob.
//! assert_eq!(format!("{}*", glob_escape("tenant*1:")), r"tenant\*1:*");
//! ```

use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{Config, ReconnectPolicy, Server, ServerConfig};

/// Where a Redis server is and how long to wait for it. Borrowed from the caller's own
/// configuration type, so each library keeps its configuration and its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Password, if the server wants one.
    pub password: Option<&'a str>,
    /// Database number.
    pub db: u8,
    /// Connections in the pool; 0 is taken as 1.
    pub pool_size: usize,
    /// How long to wait for a connection to be established (also the bound of
    /// [`wait_connected`]).
    pub connect_timeout: Duration,
    /// How long one command may take by default.
    pub command_timeout: Duration,
}

impl Connection<'_> {
    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How a pool (re)connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// How a lost connection is re-established.
    pub reconnect: ReconnectPolicy,
    /// Whether a failed first connection is retried under `reconnect` (true), or reported at
    /// once by [`wait_connected`] (false).
    pub retry_first_connection: bool,
}

/// The first connection did not come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No connection within `connect_timeout`.
    #[error("redis at {addr} did not answer within {timeout:?}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The `connect_timeout` waited.
        timeout: Duration,
    },
    /// The pool could not be built, or the first connection failed (without retries).
    #[error("redis connection failed")]
    Failed(#[source] fred::error::Error),
}

/// Builds a pool for `connection` and starts connecting in the background (tokio tasks: call
/// it inside a runtime). Commands wait at most `command_timeout` by default.
///
/// # Errors
/// `fred`'s, for a configuration it refuses.
pub fn start_pool(
    connection: &Connection<'_>,
    options: &PoolOptions,
) -> Result<Pool, fred::error::Error> {
    let config = Config {
        fail_fast: !options.retry_first_connection,
        server: ServerConfig::Centralized {
            server: Server::new(connection.host, connection.port),
        },
        password: connection.password.map(str::to_owned),
        database: Some(connection.db),
        ..Config::default()
    };
    let mut builder = fred::types::Builder::from_config(config);
    builder
        .set_policy(options.reconnect.clone())
        .with_connection_config(|c| {
            c.connection_timeout = connection.connect_timeout;
            c.internal_command_timeout = connection.command_timeout;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = connection.command_timeout;
        });
    let pool = builder.build_pool(connection.pool_size.max(1))?;
    pool.connect();
    Ok(pool)
}

/// Waits up to `connect_timeout` for every connection of a started pool.
///
/// # Errors
/// [`ConnectError::Unreachable`] after the timeout; [`ConnectError::Failed`] when a first
/// connection failed and the pool does not retry it.
pub async fn wait_connected(pool: &Pool, connection: &Connection<'_>) -> Result<(), ConnectError> {
    match tokio::time::timeout(connection.connect_timeout, pool.wait_for_connect()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ConnectError::Failed(e)),
        Err(_elapsed) => Err(ConnectError::Unreachable {
            addr: connection.addr(),
            timeout: connection.connect_timeout,
        }),
    }
}

/// [`start_pool`] and [`wait_connected`]; a pool that did not connect is closed again (in the
/// background, without delaying the error), so nothing keeps reconnecting.
///
/// # Errors
/// As [`wait_connected`], or [`ConnectError::Failed`] when the pool could not be built.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use fred::types::config::ReconnectPolicy;
/// use seckill_redis_support::{Connection, PoolOptions, connect_pool, purge};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let connection = Connection {
///     host: "127.0.0.1",
///     port: 6379,
///     password: None,
///     db: 0,
///     pool_size: 2,
///     connect_timeout: Duration::from_secs(2),
///     command_timeout: Duration::from_secs(1),
/// };
/// let options = PoolOptions {
///     reconnect: ReconnectPolicy::new_exponential(0, 100, 1_000, 2),
///     retry_first_connection: false,
/// };
/// let pool = connect_pool(&connection, &options).await?;
/// let removed = purge(pool.next(), "tenant*1:", "*").await?;
/// println!("removed {removed} keys");
/// # Ok(())
/// # }
/// ```
pub async fn connect_pool(
    connection: &Connection<'_>,
    options: &PoolOptions,
) -> Result<Pool, ConnectError> {
    let pool = start_pool(connection, options).map_err(ConnectError::Failed)?;
    if let Err(e) = wait_connected(&pool, connection).await {
        close_in_background(pool);
        return Err(e);
    }
    Ok(pool)
}

/// Closes `pool` from a task of the current runtime (if any), stopping its reconnection
/// attempts without waiting for them: a `QUIT` to a pool that never connected would wait for
/// the command timeout.
pub fn close_in_background(pool: Pool) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = pool.quit().await;
        });
    }
}

/// Deletes every key whose name is `literal_prefix` (matched character for character, glob
/// metacharacters included) followed by a match of the glob `glob_suffix`: `SCAN` (never
/// `KEYS`), 500 keys a step, and `UNLINK`, so large values are freed in the background.
/// Returns the number of keys removed.
///
/// # Errors
/// `fred`'s, on the first command that fails; keys removed before it stay removed.
pub async fn purge(
    client: &Client,
    literal_prefix: &str,
    glob_suffix: &str,
) -> Result<u64, fred::error::Error> {
    let pattern = format!("{}{glob_suffix}", glob_escape(literal_prefix));
    let mut cursor = "0".to_owned();
    let mut removed = 0u64;
    loop {
        let (next, keys): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor,
                    "MATCH".into(),
                    pattern.clone(),
                    "COUNT".into(),
                    "500".into(),
                ],
            )
            .await?;
        if !keys.is_empty() {
            removed += client.unlink::<u64, _>(keys).await?;
        }
        if next == "0" {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// `s` with Redis's glob metacharacters (`*`, `?`, `[`, `]`, `\`) escaped, so it matches only
/// itself in `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("plain:{7}"), "plain:{7}");
    }

    #[test]
    fn addr_for_messages() {
        let c = Connection {
            host: "redis.local",
            port: 6380,
            password: None,
            db: 0,
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
        };
        assert_eq!(c.addr(), "redis.local:6380");
    }
}
