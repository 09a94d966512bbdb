//! [`BreakerLayer`]: a shared [`CircuitBreaker`] around a service, with a classifier deciding
//! which results count as failures.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxError;
use crate::breaker::{BreakerOpen, CallOutcome, CircuitBreaker, OwnedCallPermit};
use crate::clock::{Clock, SystemClock};

/// Decides what a call's result means to the breaker.
///
/// Implementers must return [`CallOutcome::Failure`] only for faults of the dependency
/// (timeouts, connection errors, 5xx), and [`CallOutcome::Success`] or
/// [`CallOutcome::Ignored`] for business rejections (sold out, invalid input, 4xx): those say
/// nothing about the dependency's health and must never open the circuit.
///
/// Implemented for every `Fn(&Result<T, E>) -> CallOutcome`.
pub trait Classify<T, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<T, E>) -> CallOutcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> CallOutcome,
{
    fn classify(&self, result: &Result<T, E>) -> CallOutcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, any `Err` a failure. Right when the service
/// reports business rejections inside `Ok` responses; otherwise pass a closure to
/// [`BreakerLayer::with_classifier`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorIsFailure;

impl<T, E> Classify<T, E> for ErrorIsFailure {
    fn classify(&self, result: &Result<T, E>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Success,
            Err(_) => CallOutcome::Failure,
        }
    }
}

/// Guards a service with one shared [`CircuitBreaker`]: while it is open, requests are refused
/// with the breaker's [`BreakerOpen`] without reaching the service; otherwise the result of each call is
/// classified and recorded. A response future dropped before completing records nothing
/// ([`CallOutcome::Ignored`]).
pub struct BreakerLayer<C: Clock = SystemClock, F = ErrorIsFailure> {
    breaker: Arc<CircuitBreaker<C>>,
    classify: Arc<F>,
}

impl<C: Clock> BreakerLayer<C, ErrorIsFailure> {
    /// A layer over `breaker` with the [`ErrorIsFailure`] classifier.
    pub fn new(breaker: Arc<CircuitBreaker<C>>) -> Self {
        Self {
            breaker,
            classify: Arc::new(ErrorIsFailure),
        }
    }
}

impl<C: Clock, F> BreakerLayer<C, F> {
    /// The same layer with another classifier, typically a closure
    /// `|r: &Result<Response, Error>| -> CallOutcome`.
    pub fn with_classifier<G>(self, classify: G) -> BreakerLayer<C, G> {
        BreakerLayer {
            breaker: self.breaker,
            classify: Arc::new(classify),
        }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker<C>> {
        &self.breaker
    }
}

impl<C: Clock, F> Clone for BreakerLayer<C, F> {
    fn clone(&self) -> Self {
        Self {
            breaker: Arc::clone(&self.breaker),
            classify: Arc::clone(&self.classify),
        }
    }
}

impl<C: Clock, F> fmt::Debug for BreakerLayer<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clock, F> Layer<S> for BreakerLayer<C, F> {
    type Service = Breaker<S, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: Arc::clone(&self.breaker),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The service built by [`BreakerLayer`]; clones share the breaker.
pub struct Breaker<S, C: Clock = SystemClock, F = ErrorIsFailure> {
    inner: S,
    breaker: Arc<CircuitBreaker<C>>,
    classify: Arc<F>,
}

impl<S, C: Clock, F> Breaker<S, C, F> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clock, F> Clone for Breaker<S, C, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: Arc::clone(&self.breaker),
            classify: Arc::clone(&self.classify),
        }
    }
}

impl<S: fmt::Debug, C: Clock, F> fmt::Debug for Breaker<S, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Breaker`].
    pub struct BreakerFuture<Fut, C: Clock, F> {
        #[pin]
        state: State<Fut, C, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, C: Clock, F> {
        Called {
            #[pin]
            future: Fut,
            permit: Option<OwnedCallPermit<C>>,
            classify: Arc<F>,
        },
        Rejected {
            error: Option<BreakerOpen>,
        },
    }
}

impl<Fut, C: Clock, F> fmt::Debug for BreakerFuture<Fut, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerFuture").finish_non_exhaustive()
    }
}

impl<Fut, C, F, T, E> Future for BreakerFuture<Fut, C, F>
where
    Fut: Future<Output = Result<T, E>>,
    C: Clock,
    F: Classify<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                future,
                permit,
                classify,
            } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classify.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(open) => open.into(),
                None => "BreakerFuture polled after completion".into(),
            })),
        }
    }
}

impl<S, C, F, Req> Service<Req> for Breaker<S, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Clock,
    F: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future, C, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.breaker.try_acquire_owned() {
            Ok(permit) => State::Called {
                future: self.inner.call(req),
                permit: Some(permit),
                classify: Arc::clone(&self.classify),
            },
            Err(open) => State::Rejected { error: Some(open) },
        };
        BreakerFuture { state }
    }
}
