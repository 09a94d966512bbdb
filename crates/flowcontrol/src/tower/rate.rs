//! [`RateLimitLayer`]: any [`RateLimiter`] in front of a service, shared by every clone;
//! rejects with [`RateLimited`](crate::RateLimited).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, ResponseFuture};
use crate::limiter::RateLimiter;

/// Applies one shared [`RateLimiter`] to every request: each request takes one permit, and a
/// request without one is answered with the limiter's [`RateLimited`](crate::RateLimited) at once (never delayed).
pub struct RateLimitLayer<L: ?Sized> {
    limiter: Arc<L>,
}

impl<L: ?Sized> RateLimitLayer<L> {
    /// A layer whose services all draw on `limiter` (a `TokenBucket`, a window, an
    /// `Arc<dyn RateLimiter>`…).
    pub fn new(limiter: Arc<L>) -> Self {
        Self { limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Arc<L> {
        &self.limiter
    }
}

impl<L: ?Sized> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<L: ?Sized> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<S, L: ?Sized> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimit<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The service built by [`RateLimitLayer`]; clones share the limiter.
pub struct RateLimit<S, L: ?Sized> {
    inner: S,
    limiter: Arc<L>,
}

impl<S, L: ?Sized> RateLimit<S, L> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: Arc<L>) -> Self {
        Self { inner, limiter }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, L: ?Sized> Clone for RateLimit<S, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S: fmt::Debug, L: ?Sized> fmt::Debug for RateLimit<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, L, Req> Service<Req> for RateLimit<S, L>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    L: RateLimiter + ?Sized,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire(1) {
            Ok(()) => ResponseFuture::called(self.inner.call(req)),
            Err(limited) => ResponseFuture::rejected(limited),
        }
    }
}
