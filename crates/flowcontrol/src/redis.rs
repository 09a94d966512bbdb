//! [`RedisLimiter`]: one GCRA limit shared by every server instance through Redis (feature
//! `redis`).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::{Options, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::{FromValue, Key, Value};
use parking_lot::RwLock;

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::keyed::KeyedLimiter;
use crate::limiter::{Quota, RateLimited};

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("../lua/gcra.lua")));
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("../lua/heartbeat.lua")));

/// A failure of the Redis backend (never a rate-limit decision: those are
/// [`RateLimited`] values).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLimitError {
    /// The configuration is invalid.
    #[error("invalid redis limiter configuration")]
    Config(#[from] ConfigError),
    /// The first connection did not succeed within `connect_timeout`.
    #[error("redis at {addr} did not answer within {timeout:?}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The configured `connect_timeout`.
        timeout: Duration,
    },
    /// No connection is up right now (the client keeps reconnecting in the background).
    #[error("redis is not connected")]
    NotConnected,
    /// A command took longer than `command_timeout`.
    #[error("redis command timed out")]
    Timeout,
    /// Redis or the connection reported an error.
    #[error("redis command failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Redis answered something the scripts never return.
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),
}

fn backend(e: fred::error::Error) -> RedisLimitError {
    match e.kind() {
        fred::error::ErrorKind::Timeout => RedisLimitError::Timeout,
        _ => RedisLimitError::Backend(Box::new(e)),
    }
}

/// Where Redis is, how to talk to it, and the limit. [`RedisLimiterConfig::new`] fills in the
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLimiterConfig {
    /// Host name or address (default `127.0.0.1`).
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// Password, if the server wants one.
    pub password: Option<String>,
    /// Database number (default 0).
    pub db: u8,
    /// Connections in the pool (default 4; 2–4 are enough, commands are pipelined).
    pub pool_size: usize,
    /// How long [`RedisLimiter::connect`] waits for the first connection (default 2 s).
    pub connect_timeout: Duration,
    /// How long one decision may wait for Redis before falling back (default 200 ms).
    pub command_timeout: Duration,
    /// Key prefix shared by every instance enforcing this limit. Buckets are `{prefix:key}`,
    /// heartbeats `{prefix}:instances`. Prefixes of different limiters must not be prefixes
    /// of one another ([`RedisLimiter::purge`] matches `{prefix` followed by `:` or `}`).
    pub prefix: String,
    /// The limit of each key, shared by all instances.
    pub quota: Quota,
    /// This instance's id in the heartbeat set (default: random).
    pub instance_id: Option<String>,
    /// How often the instance announces itself (default 2 s).
    pub heartbeat_interval: Duration,
    /// How long an instance counts as live after its last heartbeat (default 6 s; more than
    /// `heartbeat_interval`).
    pub heartbeat_ttl: Duration,
    /// The instance count assumed until a heartbeat has answered (default 1). Set it to the
    /// deployment's replica count so instances starting during an outage do not each admit
    /// the whole rate.
    pub assumed_instances: NonZeroU32,
    /// Keys tracked by the local fallback at most (default 100,000).
    pub fallback_max_keys: NonZeroUsize,
}

impl RedisLimiterConfig {
    /// The connection settings, as the shared Redis plumbing takes them.
    fn connection(&self) -> seckill_redis_support::Connection<'_> {
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

    /// `quota` under `prefix`, on Redis at 127.0.0.1:6379, with the defaults above.
    pub fn new(prefix: impl Into<String>, quota: Quota) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            password: None,
            db: 0,
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(200),
            prefix: prefix.into(),
            quota,
            instance_id: None,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_ttl: Duration::from_secs(6),
            assumed_instances: NonZeroU32::MIN,
            fallback_max_keys: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// Checks the configuration: a non-empty prefix and host, a pool of at least one
    /// connection, non-zero timeouts and heartbeat interval, and `heartbeat_ttl` longer than
    /// `heartbeat_interval`.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty() {
            return Err(ConfigError::Invalid {
                name: "prefix",
                reason: "must not be empty",
            });
        }
        if self.host.is_empty() {
            return Err(ConfigError::Invalid {
                name: "host",
                reason: "must not be empty",
            });
        }
        if self.pool_size == 0 {
            return Err(ConfigError::ZeroCount { name: "pool_size" });
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { name });
            }
        }
        if self.heartbeat_ttl <= self.heartbeat_interval {
            return Err(ConfigError::Invalid {
                name: "heartbeat_ttl",
                reason: "must be longer than heartbeat_interval",
            });
        }
        Ok(())
    }
}

/// A rate limit enforced across every server instance through Redis, with a local fallback
/// at the instance's share of the rate while Redis is unreachable. Cheap to clone (clones
/// share everything).
///
/// Must be created inside a tokio runtime: the connections and the heartbeat run as tasks.
///
/// # Design
/// - **Decision in Redis.** Each request runs `lua/gcra.lua` by `EVALSHA` (reloaded on
///   `NOSCRIPT`): the bucket is one string key holding the theoretical arrival time in
///   microseconds of Redis's own clock (`TIME`), so instances with skewed clocks agree and the
///   precision is sub-millisecond. Keys are `{prefix:key}`: hash-tagged, so each bucket lives
///   in one Redis Cluster slot. A rejection writes nothing; an idle bucket's key expires.
/// - **Heartbeats.** Every instance runs `lua/heartbeat.lua` every `heartbeat_interval`: it
///   puts `(instance id, Redis TIME in ms)` into the sorted set `{prefix}:instances`, removes
///   members older than `heartbeat_ttl`, and returns the count of live instances. One key, one
///   round trip, no `SCAN`, and dead instances drop out by themselves. The limiter remembers
///   the last count it saw.
/// - **Fallback.** When Redis cannot be reached (no connected client, a command error or a
///   timeout), the decision is taken locally by a [`KeyedLimiter`] at `rate / live` permits
///   per second (rounded down, at least 1) and `burst / live` burst (rounded up), where `live`
///   is the count last seen while Redis was up. N instances in fallback together admit at most
///   the global rate plus their bursts — not N times the rate. Before any heartbeat has
///   answered, `live` is [`RedisLimiterConfig::assumed_instances`]. The count does not change
///   during an outage (no heartbeat can answer), so the fallback buckets keep their state.
/// - **Observability.** Through the `metrics` facade, labelled `limiter = <prefix>`: the gauge
///   `seckill_ratelimit_fallback` (1 while decisions are local, 0 once Redis answers again),
///   the counter `seckill_ratelimit_fallback_decisions_total` (label `outcome` = `admitted` or
///   `rejected`) and the gauge `seckill_ratelimit_instances` (the live count last seen).
///   Handles are registered when the limiter is built.
///
/// # Example
/// ```no_run
/// use std::num::NonZeroU32;
/// use seckill_flowcontrol::{Quota, RedisLimitError, RedisLimiter, RedisLimiterConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RedisLimitError> {
/// // 1,000 permits per second for "global", shared by every instance using this prefix.
/// let quota = Quota::per_second(NonZeroU32::new(1_000).unwrap());
/// let limiter = RedisLimiter::connect(RedisLimiterConfig::new("seckill:rl", quota)).await?;
/// match limiter.try_acquire("global", 1).await {
///     Ok(()) => { /* serve the request */ }
///     Err(limited) => { /* 429, Retry-After: limited.retry_after */ }
/// }
/// limiter.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct RedisLimiter<C: Clock + Clone = SystemClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock + Clone> Clone for RedisLimiter<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C: Clock + Clone> {
    pool: Pool,
    options: Options,
    config: RedisLimiterConfig,
    instance_id: String,
    instances_key: Key,
    /// GCRA arguments: the emission interval in microseconds and the burst.
    interval_us: Value,
    burst: Value,
    live: AtomicU32,
    fallback: RwLock<Arc<KeyedLimiter<String, C>>>,
    clock: C,
    in_fallback: AtomicBool,
    fallback_decisions: AtomicU64,
    metrics: Metrics,
    heartbeat_task: OnceLock<tokio::task::AbortHandle>,
}

struct Metrics {
    fallback: metrics::Gauge,
    admitted: metrics::Counter,
    rejected: metrics::Counter,
    instances: metrics::Gauge,
}

impl Metrics {
    fn new(prefix: &str) -> Self {
        let label = prefix.to_owned();
        Self {
            fallback: metrics::gauge!("seckill_ratelimit_fallback", "limiter" => label.clone()),
            admitted: metrics::counter!(
                "seckill_ratelimit_fallback_decisions_total",
                "limiter" => label.clone(),
                "outcome" => "admitted"
            ),
            rejected: metrics::counter!(
                "seckill_ratelimit_fallback_decisions_total",
                "limiter" => label.clone(),
                "outcome" => "rejected"
            ),
            instances: metrics::gauge!("seckill_ratelimit_instances", "limiter" => label),
        }
    }
}

/// The fallback quota of one instance out of `live`.
fn share(quota: Quota, live: u32) -> Quota {
    let live = live.max(1);
    let rate = NonZeroU32::new(quota.rate().get() / live).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(quota.burst().get().div_ceil(live)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).with_burst(burst)
}

fn random_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl RedisLimiter<SystemClock> {
    /// Connects (waiting up to `connect_timeout`), loads the scripts, sends the first
    /// heartbeat and starts the heartbeat task.
    ///
    /// # Errors
    /// [`RedisLimitError::Config`] for an invalid configuration,
    /// [`RedisLimitError::Unreachable`] when Redis does not answer in time, or the error of
    /// loading the scripts.
    pub async fn connect(config: RedisLimiterConfig) -> Result<Self, RedisLimitError> {
        Self::connect_with_clock(config, SystemClock).await
    }

    /// Builds the limiter without waiting for Redis: decisions fall back locally (at
    /// `rate / assumed_instances`) until a connection is up. Never fails on an unreachable
    /// server.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisLimitError::Config`] for an invalid configuration.
    pub fn connect_lazy(config: RedisLimiterConfig) -> Result<Self, RedisLimitError> {
        Self::connect_lazy_with_clock(config, SystemClock)
    }
}

impl<C: Clock + Clone> RedisLimiter<C> {
    /// [`connect`](RedisLimiter::connect) with the local fallback reading time from `clock`
    /// (decisions in Redis always use Redis's clock).
    ///
    /// # Errors
    /// As [`connect`](RedisLimiter::connect).
    pub async fn connect_with_clock(
        config: RedisLimiterConfig,
        clock: C,
    ) -> Result<Self, RedisLimitError> {
        let limiter = Self::build(config, clock)?;
        let connection = limiter.inner.config.connection();
        if seckill_redis_support::wait_connected(&limiter.inner.pool, &connection)
            .await
            .is_err()
        {
            limiter.shutdown().await;
            return Err(RedisLimitError::Unreachable {
                addr: connection.addr(),
                timeout: connection.connect_timeout,
            });
        }
        for client in limiter.inner.pool.clients() {
            if let Err(e) = GCRA.load(client).await {
                limiter.shutdown().await;
                return Err(backend(e));
            }
        }
        limiter.heartbeat().await?;
        limiter.spawn_heartbeat();
        Ok(limiter)
    }

    /// [`connect_lazy`](RedisLimiter::connect_lazy) with the local fallback reading time from
    /// `clock`.
    ///
    /// # Errors
    /// [`RedisLimitError::Config`] for an invalid configuration.
    pub fn connect_lazy_with_clock(
        config: RedisLimiterConfig,
        clock: C,
    ) -> Result<Self, RedisLimitError> {
        let limiter = Self::build(config, clock)?;
        limiter.spawn_heartbeat();
        Ok(limiter)
    }

    fn build(config: RedisLimiterConfig, clock: C) -> Result<Self, RedisLimitError> {
        config.validate()?;
        let options = seckill_redis_support::PoolOptions {
            // Forever, 100 ms doubling up to 1 s: a limiter wants Redis back quickly.
            reconnect: ReconnectPolicy::new_exponential(0, 100, 1_000, 2),
            // Keep reconnecting in the background even if the first attempt fails.
            retry_first_connection: true,
        };
        let pool =
            seckill_redis_support::start_pool(&config.connection(), &options).map_err(backend)?;
        let quota = config.quota;
        let live = config.assumed_instances.get();
        let fallback =
            KeyedLimiter::with_clock(share(quota, live), config.fallback_max_keys, clock.clone());
        let metrics = Metrics::new(&config.prefix);
        metrics.fallback.set(0.0);
        metrics.instances.set(f64::from(live));
        let interval_us = 1e6 / f64::from(quota.rate().get());
        let inner = Inner {
            pool,
            // A decision must not wait for a reconnection: fail at once and fall back.
            options: Options {
                fail_fast: true,
                timeout: Some(config.command_timeout),
                max_attempts: Some(1),
                ..Options::default()
            },
            instance_id: config.instance_id.clone().unwrap_or_else(random_id),
            instances_key: Key::from(format!("{{{}}}:instances", config.prefix)),
            interval_us: Value::from(interval_us.to_string()),
            burst: Value::from(i64::from(quota.burst().get())),
            live: AtomicU32::new(live),
            fallback: RwLock::new(Arc::new(fallback)),
            clock,
            in_fallback: AtomicBool::new(false),
            fallback_decisions: AtomicU64::new(0),
            metrics,
            heartbeat_task: OnceLock::new(),
            config,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn spawn_heartbeat(&self) {
        let weak: Weak<Inner<C>> = Arc::downgrade(&self.inner);
        let period = self.inner.config.heartbeat_interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                // A failed heartbeat keeps the last count: that is the point.
                let _ = RedisLimiter { inner }.heartbeat().await;
            }
        });
        let _ = self.inner.heartbeat_task.set(task.abort_handle());
    }

    /// Takes `n` permits from `key`'s bucket: in Redis when it answers, otherwise from the
    /// local fallback (see [`RedisLimiter`]). `n == 0` always succeeds; `n > burst`
    /// never does ([`RateLimited::NEVER`]), nor, in fallback, `n` above the fallback's share
    /// of the burst. Never waits longer than `command_timeout` for Redis.
    pub async fn try_acquire(&self, key: &str, n: u32) -> Result<(), RateLimited> {
        match self.try_acquire_redis(key, n).await {
            Ok(decision) => {
                if self.inner.in_fallback.load(Ordering::Relaxed)
                    && self.inner.in_fallback.swap(false, Ordering::Relaxed)
                {
                    self.inner.metrics.fallback.set(0.0);
                }
                decision
            }
            Err(_) => self.try_acquire_fallback(key, n),
        }
    }

    /// Takes `n` permits from `key`'s bucket in Redis, without falling back: the outer
    /// `Result` is the backend's, the inner one the decision.
    ///
    /// # Errors
    /// [`RedisLimitError::NotConnected`] when no connection is up, [`RedisLimitError::Timeout`]
    /// after `command_timeout`, [`RedisLimitError::Backend`] for other failures.
    pub async fn try_acquire_redis(
        &self,
        key: &str,
        n: u32,
    ) -> Result<Result<(), RateLimited>, RedisLimitError> {
        let quota = self.inner.config.quota;
        if n == 0 {
            return Ok(Ok(()));
        }
        if n > quota.burst().get() {
            return Ok(Err(RateLimited::NEVER));
        }
        let bucket = Key::from(format!("{{{}:{key}}}", self.inner.config.prefix));
        let args = vec![
            self.inner.interval_us.clone(),
            self.inner.burst.clone(),
            Value::from(i64::from(n)),
        ];
        let reply: Vec<i64> = self.eval(&GCRA, bucket, args).await?;
        match reply.as_slice() {
            [1, _] => Ok(Ok(())),
            [0, us] => Ok(Err(RateLimited {
                retry_after: Duration::from_micros(u64::try_from(*us).unwrap_or(0)),
            })),
            other => Err(RedisLimitError::UnexpectedReply(format!("{other:?}"))),
        }
    }

    fn try_acquire_fallback(&self, key: &str, n: u32) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        if !inner.in_fallback.load(Ordering::Relaxed)
            && !inner.in_fallback.swap(true, Ordering::Relaxed)
        {
            inner.metrics.fallback.set(1.0);
        }
        inner.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        let limiter = Arc::clone(&inner.fallback.read());
        let decision = limiter.try_acquire(&key.to_owned(), n);
        match decision {
            Ok(()) => inner.metrics.admitted.increment(1),
            Err(_) => inner.metrics.rejected.increment(1),
        }
        decision
    }

    /// Runs a script by EVALSHA on a connected client, loading it on `NOSCRIPT` (a restart, a
    /// failover or `SCRIPT FLUSH` dropped it) and retrying once. Fails fast when no
    /// connection is up.
    async fn eval<R: FromValue>(
        &self,
        script: &Script,
        key: Key,
        args: Vec<Value>,
    ) -> Result<R, RedisLimitError> {
        let client: &Client = self.inner.pool.next_connected();
        if !client.is_connected() {
            return Err(RedisLimitError::NotConnected);
        }
        let with = client.with_options(&self.inner.options);
        match with
            .evalsha(script.sha1().clone(), key.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(client).await.map_err(backend)?;
                with.evalsha(script.sha1().clone(), key, args)
                    .await
                    .map_err(backend)
            }
            other => other.map_err(backend),
        }
    }

    /// Announces this instance and refreshes the live-instance count (the heartbeat task
    /// calls this every `heartbeat_interval`; call it yourself to refresh at once).
    ///
    /// # Errors
    /// The backend's; the count last seen is kept.
    pub async fn heartbeat(&self) -> Result<u32, RedisLimitError> {
        let live: i64 = self.heartbeat_command(true).await?;
        let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);
        self.set_live(live);
        Ok(live)
    }

    async fn heartbeat_command(&self, register: bool) -> Result<i64, RedisLimitError> {
        let ttl_ms = i64::try_from(self.inner.config.heartbeat_ttl.as_millis()).unwrap_or(i64::MAX);
        let args = vec![
            Value::from(self.inner.instance_id.as_str()),
            Value::from(ttl_ms),
            Value::from(if register { "1" } else { "0" }),
        ];
        self.eval(&HEARTBEAT, self.inner.instances_key.clone(), args)
            .await
    }

    fn set_live(&self, live: u32) {
        let inner = &*self.inner;
        inner.metrics.instances.set(f64::from(live));
        if inner.live.swap(live, Ordering::AcqRel) != live {
            // Only while Redis answers, so the fallback is not in use: starting fresh is fine.
            let fallback = KeyedLimiter::with_clock(
                share(inner.config.quota, live),
                inner.config.fallback_max_keys,
                inner.clock.clone(),
            );
            *inner.fallback.write() = Arc::new(fallback);
        }
    }

    /// The live-instance count last seen (or `assumed_instances` before any heartbeat).
    pub fn live_instances(&self) -> u32 {
        self.inner.live.load(Ordering::Acquire)
    }

    /// The quota of the local fallback: the configured quota divided among the live instances.
    pub fn fallback_quota(&self) -> Quota {
        self.inner.fallback.read().quota()
    }

    /// Whether the last decision was taken locally.
    pub fn is_fallback(&self) -> bool {
        self.inner.in_fallback.load(Ordering::Relaxed)
    }

    /// Decisions taken locally since the limiter was built (the sum of the
    /// `seckill_ratelimit_fallback_decisions_total` counters).
    pub fn fallback_decisions(&self) -> u64 {
        self.inner.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Whether at least one connection to Redis is up.
    pub fn is_connected(&self) -> bool {
        self.inner.pool.clients().iter().any(|c| c.is_connected())
    }

    /// This instance's id in the heartbeat set.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The configuration.
    pub fn config(&self) -> &RedisLimiterConfig {
        &self.inner.config
    }

    /// Deletes every key under this limiter's prefix (buckets and heartbeats), with `SCAN`,
    /// never `KEYS`. For tests and for retiring a limit.
    ///
    /// # Errors
    /// The backend's.
    pub async fn purge(&self) -> Result<u64, RedisLimitError> {
        let client = self.inner.pool.next_connected();
        let literal = format!("{{{}", self.inner.config.prefix);
        seckill_redis_support::purge(client, &literal, "[:}]*")
            .await
            .map_err(backend)
    }

    /// Stops the heartbeat, removes this instance from the heartbeat set (if Redis answers)
    /// and closes the connections. Clones stop working with Redis too (they fall back).
    pub async fn shutdown(&self) {
        if let Some(task) = self.inner.heartbeat_task.get() {
            task.abort();
        }
        if self.is_connected() {
            let _ = self.heartbeat_command(false).await;
        }
        let _ =
            tokio::time::timeout(self.inner.config.command_timeout, self.inner.pool.quit()).await;
    }
}

impl<C: Clock + Clone> Drop for Inner<C> {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat_task.get() {
            task.abort();
        }
        // Stop the reconnecting connection tasks too.
        seckill_redis_support::close_in_background(self.pool.clone());
    }
}

impl<C: Clock + Clone> fmt::Debug for RedisLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.inner.config.prefix)
            .field("quota", &self.inner.config.quota)
            .field("instance_id", &self.inner.instance_id)
            .field("live_instances", &self.live_instances())
            .field("fallback", &self.is_fallback())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn share_divides_rate_down_and_burst_up() {
        let q = Quota::per_second(nz(300)).with_burst(nz(31));
        assert_eq!(share(q, 1), q);
        assert_eq!(share(q, 3), Quota::per_second(nz(100)).with_burst(nz(11)));
        assert_eq!(share(q, 1000), Quota::per_second(nz(1)).with_burst(nz(1)));
        assert_eq!(share(q, 0), q);
    }

    #[test]
    fn config_validation() {
        let q = Quota::per_second(nz(10));
        assert!(RedisLimiterConfig::new("p", q).validate().is_ok());
        assert!(RedisLimiterConfig::new("", q).validate().is_err());
        let mut c = RedisLimiterConfig::new("p", q);
        c.heartbeat_ttl = c.heartbeat_interval;
        assert!(c.validate().is_err());
        let mut c = RedisLimiterConfig::new("p", q);
        c.pool_size = 0;
        assert!(c.validate().is_err());
        let mut c = RedisLimiterConfig::new("p", q);
        c.command_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
