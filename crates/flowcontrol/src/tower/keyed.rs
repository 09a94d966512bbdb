//! [`KeyedRateLimitLayer`]: a [`KeyedLimiter`] in front of a service, keyed by a closure over
//! the request (user id, client IP, product…).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, ResponseFuture};
use crate::clock::Clock;
use crate::keyed::KeyedLimiter;

/// Applies one shared [`KeyedLimiter`] to every request, under the key `extract(&request)`
/// returns. Each request takes one permit of its key; a request whose key has none left is
/// answered with [`RateLimited`](crate::RateLimited) (its `retry_after` is the key's). A request for which `extract` returns `None` is
/// not limited by this layer (put a rule for unkeyed requests elsewhere, or make the
/// extractor return a catch-all key).
pub struct KeyedRateLimitLayer<K, C: Clock, F> {
    limiter: Arc<KeyedLimiter<K, C>>,
    extract: Arc<F>,
}

impl<K, C: Clock, F> KeyedRateLimitLayer<K, C, F> {
    /// A layer whose services all draw on `limiter`, keyed by `extract`.
    pub fn new(limiter: Arc<KeyedLimiter<K, C>>, extract: F) -> Self {
        Self {
            limiter,
            extract: Arc::new(extract),
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Arc<KeyedLimiter<K, C>> {
        &self.limiter
    }
}

impl<K, C: Clock, F> Clone for KeyedRateLimitLayer<K, C, F> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

impl<K, C: Clock, F> fmt::Debug for KeyedRateLimitLayer<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, C: Clock, F> Layer<S> for KeyedRateLimitLayer<K, C, F> {
    type Service = KeyedRateLimit<S, K, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

/// The service built by [`KeyedRateLimitLayer`]; clones share the limiter.
pub struct KeyedRateLimit<S, K, C: Clock, F> {
    inner: S,
    limiter: Arc<KeyedLimiter<K, C>>,
    extract: Arc<F>,
}

impl<S, K, C: Clock, F> KeyedRateLimit<S, K, C, F> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, C: Clock, F> Clone for KeyedRateLimit<S, K, C, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            extract: Arc::clone(&self.extract),
        }
    }
}

impl<S: fmt::Debug, K, C: Clock, F> fmt::Debug for KeyedRateLimit<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, F, Req> Service<Req> for KeyedRateLimit<S, K, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + Send + Sync,
    C: Clock + Clone,
    F: Fn(&Req) -> Option<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(key) = (self.extract)(&req) {
            if let Err(limited) = self.limiter.try_acquire(&key, 1) {
                return ResponseFuture::rejected(limited);
            }
        }
        ResponseFuture::called(self.inner.call(req))
    }
}
