//! [`QueueLayer`]: a shared [`RequestQueue`] in front of a service — at most `max_concurrent`
//! requests inside, a bounded FIFO line with a wait timeout, everything else refused.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxError;
use crate::queue::{QueuePermit, RequestQueue};

/// Runs requests through one shared [`RequestQueue`]: a request with a free slot goes straight
/// in; otherwise it waits in line (up to the queue's `wait_timeout`) or, with the line full, is
/// refused at once: the error is the queue's [`QueueRejected`](crate::QueueRejected) (`Full`, or `Timeout` after the
/// wait). The slot is held until the response future
/// completes or is dropped.
#[derive(Clone, Debug)]
pub struct QueueLayer {
    queue: Arc<RequestQueue>,
}

impl QueueLayer {
    /// A layer whose services all share `queue`.
    pub fn new(queue: Arc<RequestQueue>) -> Self {
        Self { queue }
    }

    /// The shared queue (for its load and counters).
    pub fn queue(&self) -> &Arc<RequestQueue> {
        &self.queue
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = Queue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Queue {
            inner,
            queue: Arc::clone(&self.queue),
        }
    }
}

/// The service built by [`QueueLayer`]; clones share the queue.
#[derive(Clone, Debug)]
pub struct Queue<S> {
    inner: S,
    queue: Arc<RequestQueue>,
}

impl<S> Queue<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`Queue`].
    pub struct QueueFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        // A slot was free: the inner call runs now, holding the slot.
        Immediate {
            #[pin]
            future: F,
            permit: Option<QueuePermit>,
        },
        // Waiting in line, then calling (boxed: only taken under load).
        Waiting {
            future: Waiting<T>,
        },
    }
}

impl<F, T> fmt::Debug for QueueFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for QueueFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Immediate { future, permit } => {
                let out = std::task::ready!(future.poll(cx));
                drop(permit.take());
                Poll::Ready(out.map_err(Into::into))
            }
            StateProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, Req> Service<Req> for Queue<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = QueueFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Ok(permit) = self.queue.try_acquire() {
            return QueueFuture {
                state: State::Immediate {
                    future: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        // The readied service goes with the request; this one gets a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let queue = Arc::clone(&self.queue);
        let future = Box::pin(async move {
            let _slot = queue.acquire().await?;
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            inner.call(req).await.map_err(Into::into)
        });
        QueueFuture {
            state: State::Waiting { future },
        }
    }
}
