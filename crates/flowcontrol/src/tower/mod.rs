//! tower [`Layer`](tower_layer::Layer)s and [`Service`](tower_service::Service)s for the
//! limiters, the circuit breaker, the request queue and degradation (feature `tower`).
//!
//! One file per middleware (`rate`, `keyed`, `breaker`, `queue`, `degrade`), each with an
//! `XxxLayer` and the `Xxx<S>` service it builds. A rejection is the core primitive's own
//! rejection value, the same type the primitive returns when called directly:
//!
//! | layer | rejection | `retry_after` | suggested HTTP answer |
//! | --- | --- | --- | --- |
//! | [`RateLimitLayer`] (any [`RateLimiter`](crate::RateLimiter)) | [`RateLimited`](crate::RateLimited) | yes | 429 + `Retry-After` |
//! | [`KeyedRateLimitLayer`] ([`KeyedLimiter`](crate::KeyedLimiter) + key extractor) | [`RateLimited`](crate::RateLimited) | yes | 429 + `Retry-After` |
//! | [`BreakerLayer`] ([`CircuitBreaker`](crate::CircuitBreaker) + classifier) | [`BreakerOpen`](crate::BreakerOpen) | yes | 503 + `Retry-After` |
//! | [`QueueLayer`] ([`RequestQueue`](crate::RequestQueue)) | [`QueueRejected`](crate::QueueRejected) | no | 503 |
//! | [`DegradeLayer`] ([`Degradation`](crate::Degradation) + load signal) | [`Degraded`](crate::Degraded) | no | 503 |
//!
//! # Shared state
//! A layer holds its primitive in an `Arc`, and every service it builds — and every clone of
//! those services — uses that one `Arc`. A limit set on an axum router therefore holds across
//! all connections (hyper clones the service per connection). tower's own `RateLimit` keeps its
//! state per clone and does not.
//!
//! # Errors
//! Like tower's middleware, the services answer `Result<S::Response, BoxError>`: the inner
//! service's error boxed, or the middleware's rejection. Rejections are checked in `call`
//! (never by waiting in `poll_ready`), so an overloaded service answers at once; `poll_ready`
//! only forwards to the inner service.
//!
//! # Mapping rejections to HTTP
//! axum routers need infallible services: put a `HandleErrorLayer` outside the layers and
//! downcast the error.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//! use axum::error_handling::HandleErrorLayer;
//! use axum::http::{HeaderValue, StatusCode, header};
//! use axum::response::{IntoResponse, Response};
//! use axum::{Router, routing::get};
//! use seckill_flowcontrol::tower::{BoxError, RateLimitLayer, retry_after_secs};
//! use seckill_flowcontrol::{Quota, RateLimited, TokenBucket};
//! use tower::ServiceBuilder;
//!
//! async fn rejected(err: BoxError) -> Response {
//!     if let Some(limited) = err.downcast_ref::<RateLimited>() {
//!         let mut resp = StatusCode::TOO_MANY_REQUESTS.into_response();
//!         let secs = retry_after_secs(limited.retry_after);
//!         resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
//!         return resp;
//!     }
//!     // Other rejections: 503; failures of the inner service: 500 (log `err`, never send it).
//!     StatusCode::INTERNAL_SERVER_ERROR.into_response()
//! }
//!
//! let bucket = TokenBucket::new(Quota::per_second(NonZeroU32::new(100).unwrap()));
//! let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(rejected))
//!         .layer(RateLimitLayer::new(Arc::new(bucket))),
//! );
//! # let _ = app;
//! ```

mod breaker;
mod degrade;
mod future;
mod keyed;
mod queue;
mod rate;

use std::time::Duration;

pub use breaker::{Breaker, BreakerFuture, BreakerLayer, Classify, ErrorIsFailure};
pub use degrade::{Degrade, DegradeLayer};
pub use future::ResponseFuture;
pub use keyed::{KeyedRateLimit, KeyedRateLimitLayer};
pub use queue::{Queue, QueueFuture, QueueLayer};
pub use rate::{RateLimit, RateLimitLayer};

/// The error type of every service here: the inner service's error, boxed, or a rejection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `Retry-After` value in whole seconds: `retry_after` rounded up, at least 1 and at most
/// 3600 (so [`Duration::MAX`], "never", still gives a usable header).
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    let secs = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
    secs.clamp(1, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_clamps() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::MAX), 3600);
    }
}
