//! [`DegradeLayer`]: refuses every request while a [`Degradation`] switch is on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, ResponseFuture};
use crate::degrade::{Degradation, Degraded};

type Load = dyn Fn() -> f64 + Send + Sync;

/// Refuses requests with [`Degraded`] while the shared [`Degradation`] is on.
///
/// Without a load signal the switch only follows the operator override
/// ([`Degradation::set_forced`]) and whatever else calls [`Degradation::evaluate`]. With
/// [`with_load`](Self::with_load), every request first feeds the current load to
/// [`Degradation::evaluate`] (threshold and hysteresis apply).
pub struct DegradeLayer {
    degradation: Arc<Degradation>,
    load: Option<Arc<Load>>,
}

impl DegradeLayer {
    /// A layer following `degradation` as it is.
    pub fn new(degradation: Arc<Degradation>) -> Self {
        Self {
            degradation,
            load: None,
        }
    }

    /// Evaluates `load()` on every request (for example a
    /// [`RequestQueue::load`](crate::RequestQueue::load) or a cached
    /// [`CpuLoad`](crate::CpuLoad) reading; it must be cheap).
    #[must_use]
    pub fn with_load(mut self, load: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.load = Some(Arc::new(load));
        self
    }

    /// The shared switch.
    pub fn degradation(&self) -> &Arc<Degradation> {
        &self.degradation
    }
}

impl Clone for DegradeLayer {
    fn clone(&self) -> Self {
        Self {
            degradation: Arc::clone(&self.degradation),
            load: self.load.clone(),
        }
    }
}

impl fmt::Debug for DegradeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeLayer")
            .field("degradation", &self.degradation)
            .field("load", &self.load.is_some())
            .finish()
    }
}

impl<S> Layer<S> for DegradeLayer {
    type Service = Degrade<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Degrade {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`DegradeLayer`]; clones share the switch.
pub struct Degrade<S> {
    inner: S,
    layer: DegradeLayer,
}

impl<S> Degrade<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Degrade<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Degrade<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Degrade")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, Req> Service<Req> for Degrade<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let d = &self.layer.degradation;
        let degraded = match &self.layer.load {
            Some(load) => d.evaluate(load()),
            None => d.is_degraded(),
        };
        if degraded {
            ResponseFuture::rejected(Degraded)
        } else {
            ResponseFuture::called(self.inner.call(req))
        }
    }
}
