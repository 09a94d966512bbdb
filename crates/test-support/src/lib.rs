//! Helpers shared by the seckill test suites: names no other test (or earlier run) uses,
//! non-zero numbers, and waits with a deadline that fail with a message instead of hanging.
//!
//! # Example
//! ```
//! let a = seckill_test_support::unique("orders");
//! let b = seckill_test_support::unique("orders");
//! assert_ne!(a, b);
//! assert!(a.starts_with("orders_"));
//! assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
//! ```

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

/// A name of `what` no other test uses, in this run or another: letters, digits and `_` only
/// (when `what` is), so it is a valid Redis key prefix, PostgreSQL schema, RabbitMQ name and
/// Kafka topic prefix alike.
pub fn unique(what: &str) -> String {
    format!(
        "{what}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// `v` as a [`NonZeroU32`].
///
/// # Panics
/// When `v` is zero.
pub fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

/// Awaits `f`, failing the test with `what` if it takes longer than `limit`.
///
/// # Panics
/// When `limit` passes first.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Calls `check` every `step` until it returns `Some`, failing the test with `what` after
/// `limit`.
///
/// # Panics
/// When `limit` passes first.
pub async fn eventually<T, F, Fut>(limit: Duration, step: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(step).await;
    }
}
