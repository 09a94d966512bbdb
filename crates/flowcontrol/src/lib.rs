//! Flow control for hot services: rate limiters, a circuit breaker, a
//! request queue and a degradation switch.
//!
//! The core is in-process and dependency-light (no HTTP, Redis or server
//! code): services import the pieces they need. The limiters are lock-free
//! and allocation-free on the single-key path, reject with a value
//! ([`RateLimited`]) rather than an error, and read time through a
//! [`Clock`] so tests can drive them deterministically with a
//! [`ManualClock`]. The default [`SystemClock`] reads the CPU's time-stamp
//! counter (through `quanta`) where it can, a few nanoseconds per reading.
//! [`Limiter`] puts the three limiting algorithms behind one [`Quota`]: the
//! same quota admits the same burst and the same sustained rate under each,
//! and an operator can switch algorithm or quota at run time without
//! handing out a fresh burst.
//!
//! Each primitive's type documentation has a short runnable example; where
//! time matters it is driven by a [`ManualClock`] (tokio's paused time for
//! [`RequestQueue`]).
//!
//! # Features
//! - `tower`: module `tower`, tower layers and services for every primitive, sharing one
//!   state across clones (off by default).
//! - `redis`: `RedisLimiter`, one limit for every server instance through Redis, falling
//!   back to a local share of the rate when Redis is unreachable (off by default).
//! - `serde`: `Deserialize`/`Serialize` for [`BreakerConfig`] and [`Algorithm`], as
//!   configuration sections with humantime durations (off by default).
//!
//! # Layout
//! One public path per type: everything is re-exported here, except the tower middleware,
//! which lives in `seckill_flowcontrol::tower`. The source files:
//! - `clock`: [`Clock`], [`SystemClock`] (monotonic, TSC when usable), [`ManualClock`].
//! - `limiter`: the [`RateLimiter`] trait, [`RateLimited`], [`Quota`].
//! - `token_bucket`: [`TokenBucket`], GCRA in one atomic.
//! - `window/`: [`FixedWindow`] and [`SlidingWindow`] counters over one shared atomic cell.
//! - `spin`: the lock bit a quota change sets in a limiter's state word (internal).
//! - `algorithm`: [`Algorithm`] and [`Limiter`], any of the three over one [`Quota`],
//!   switchable at run time.
//! - `keyed`: [`KeyedLimiter`], per-key token buckets under a hard memory cap.
//! - `chain`: [`check_chain`], multi-level limits that spend nothing on rejection.
//! - `breaker`: [`CircuitBreaker`] (closed / open / half-open), [`BreakerConfig`].
//! - `queue`: [`RequestQueue`], bounded FIFO waiting for a concurrency slot (tokio).
//! - `degrade`: [`Degradation`], a load switch with hysteresis and override.
//! - `cpu`: [`CpuLoad`], container-aware CPU utilisation.
//! - `error`: [`ConfigError`] for invalid configuration.
//! - `tower/` (feature `tower`, public module `tower`): `RateLimitLayer`,
//!   `KeyedRateLimitLayer`, `BreakerLayer`, `QueueLayer`, `DegradeLayer`, one file each; they
//!   reject with the primitives' own values ([`RateLimited`], [`BreakerOpen`],
//!   [`QueueRejected`], [`Degraded`]).
//! - `redis` (feature `redis`): `RedisLimiter`, `RedisLimiterConfig` and `RedisLimitError`;
//!   the scripts are `lua/gcra.lua` and `lua/heartbeat.lua`.
//!
//! # Example
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use seckill_flowcontrol::{ManualClock, Quota, RateLimiter, TokenBucket};
//!
//! let clock = ManualClock::new();
//! let quota = Quota::per_second(NonZeroU32::new(10).unwrap())
//!     .with_burst(NonZeroU32::new(2).unwrap());
//! let bucket = TokenBucket::with_clock(quota, clock.clone());
//!
//! assert!(bucket.try_acquire(1).is_ok());
//! assert!(bucket.try_acquire(1).is_ok());
//! let limited = bucket.try_acquire(1).unwrap_err();
//! assert_eq!(limited.retry_after, Duration::from_millis(100));
//!
//! clock.advance(limited.retry_after);
//! assert!(bucket.try_acquire(1).is_ok());
//! ```

mod algorithm;
mod breaker;
mod chain;
mod clock;
mod cpu;
mod degrade;
mod error;
mod keyed;
mod limiter;
mod queue;
#[cfg(feature = "redis")]
mod redis;
mod spin;
mod token_bucket;
#[cfg(feature = "tower")]
pub mod tower;
mod window;

pub use algorithm::{Algorithm, Limiter};
pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerState, CallOutcome, CallPermit, CircuitBreaker,
    OwnedCallPermit,
};
pub use chain::{ChainLevel, ChainRejected, KeyedLevel, check_chain};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cpu::{CpuLoad, CpuSource};
pub use degrade::{Degradation, Degraded};
pub use error::ConfigError;
pub use keyed::KeyedLimiter;
pub use limiter::{Quota, RateLimited, RateLimiter};
pub use queue::{QueuePermit, QueueRejected, RequestQueue};
#[cfg(feature = "redis")]
pub use redis::{RedisLimitError, RedisLimiter, RedisLimiterConfig};
pub use token_bucket::TokenBucket;
pub use window::{FixedWindow, SlidingWindow};

/// Compiles the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
