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
//!
//! Each primitive's type documentation has a short runnable example; where
//! time matters it is driven by a [`ManualClock`] (tokio's paused time for
//! [`RequestQueue`]).
//!
//! # Features
//! - `tower`: module `tower`, tower layers and services for every primitive, sharing one
//!   state across clones (off by default).
//! - `redis`: module `redis`, `RedisLimiter`: one limit for every server
//!   instance through Redis, falling back to a local share of the rate when Redis is
//!   unreachable (off by default).
//!
//! # Layout
//! - [`clock`]: [`Clock`], [`SystemClock`] (monotonic, TSC when usable), [`ManualClock`].
//! - [`limiter`]: the [`RateLimiter`] trait, [`RateLimited`], [`Quota`].
//! - [`token_bucket`]: [`TokenBucket`], GCRA in one atomic.
//! - [`window`]: [`FixedWindow`] and [`SlidingWindow`] counters.
//! - [`keyed`]: [`KeyedLimiter`], per-key token buckets under a hard memory cap.
//! - [`chain`]: [`check_chain`], multi-level limits that spend nothing on rejection.
//! - [`breaker`]: [`CircuitBreaker`] (closed / open / half-open).
//! - [`queue`]: [`RequestQueue`], bounded FIFO waiting for a concurrency slot (tokio).
//! - [`degrade`]: [`Degradation`], a load switch with hysteresis and override.
//! - [`cpu`]: [`CpuLoad`], container-aware CPU utilisation.
//! - [`error`]: [`Error`] for invalid configuration.
//! - `tower` (feature `tower`): `RateLimitLayer`, `KeyedRateLimitLayer`, `BreakerLayer`,
//!   `QueueLayer`, `DegradeLayer` and their rejection errors, one module each.
//! - `redis` (feature `redis`): `RedisLimiter`, its config and `RedisLimitError`; the
//!   scripts are `lua/gcra.lua` and `lua/heartbeat.lua`.
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

pub mod breaker;
pub mod chain;
pub mod clock;
pub mod cpu;
pub mod degrade;
pub mod error;
pub mod keyed;
pub mod limiter;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod token_bucket;
#[cfg(feature = "tower")]
pub mod tower;
pub mod window;

pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerState, CallOutcome, CallPermit, CircuitBreaker,
    OwnedCallPermit,
};
pub use chain::{ChainLevel, ChainRejected, KeyedLevel, check_chain};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cpu::{CpuLoad, CpuSource};
pub use degrade::Degradation;
pub use error::Error;
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
