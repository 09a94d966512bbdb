//! A bounded FIFO request queue in front of a concurrency limit.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why [`RequestQueue`] refused a request (also the error of the tower `QueueLayer`, feature
/// `tower`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueRejected {
    /// Every slot is busy and the waiting line is full.
    #[error("request queue is full")]
    Full,
    /// The request waited `wait_timeout` without getting a slot.
    #[error("timed out waiting in the request queue")]
    Timeout,
}

/// At most `max_concurrent` requests in flight and at most `queue_size`
/// waiting, served first come, first served, each wait bounded by
/// `wait_timeout`.
///
/// Built on tokio's fair [`Semaphore`]. Waiting is cancellation-safe: a
/// waiter whose future is dropped leaves the line at once.
///
/// # Example
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use seckill_flowcontrol::{QueueRejected, RequestQueue};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // One request in flight, one more waiting at most 100 ms (tokio time,
/// // paused here, so the example does not really wait).
/// let queue = RequestQueue::new(NonZeroUsize::new(1).unwrap(), 1, Duration::from_millis(100));
/// let held = queue.acquire().await.unwrap();
/// assert_eq!(queue.acquire().await.unwrap_err(), QueueRejected::Timeout);
/// // A waiter gets the slot as soon as it is released.
/// let (waited, ()) = tokio::join!(queue.acquire(), async move {
///     tokio::time::sleep(Duration::from_millis(50)).await;
///     drop(held);
/// });
/// assert!(waited.is_ok());
/// assert_eq!(queue.in_flight(), 1);
/// # }
/// ```
pub struct RequestQueue {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_concurrent: usize,
    queue_size: usize,
    wait_timeout: Duration,
}

/// A slot in flight; released when dropped. Owned (`'static`).
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct QueuePermit {
    _permit: OwnedSemaphorePermit,
}

impl RequestQueue {
    /// A queue admitting `max_concurrent` requests at once with up to
    /// `queue_size` more waiting at most `wait_timeout` each.
    pub fn new(max_concurrent: NonZeroUsize, queue_size: usize, wait_timeout: Duration) -> Self {
        let max_concurrent = max_concurrent.get().min(Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            waiting: AtomicUsize::new(0),
            max_concurrent,
            queue_size,
            wait_timeout,
        }
    }

    /// Takes a slot, waiting in line if none is free.
    ///
    /// A free slot is taken at once without allocating. With no free slot,
    /// a full line gives [`QueueRejected::Full`] immediately, and a wait
    /// longer than `wait_timeout` gives [`QueueRejected::Timeout`]
    /// (measured with tokio's clock, so paused-time tests work).
    pub async fn acquire(&self) -> Result<QueuePermit, QueueRejected> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let _place = self.join_line()?;
        let acquire = Arc::clone(&self.semaphore).acquire_owned();
        match tokio::time::timeout(self.wait_timeout, acquire).await {
            Ok(Ok(permit)) => Ok(QueuePermit { _permit: permit }),
            // The semaphore is never closed; treat it as no capacity.
            Ok(Err(_closed)) => Err(QueueRejected::Full),
            Err(_elapsed) => Err(QueueRejected::Timeout),
        }
    }

    /// Takes a free slot if there is one, never waiting (and never jumping
    /// ahead of requests already in line).
    pub fn try_acquire(&self) -> Result<QueuePermit, QueueRejected> {
        Arc::clone(&self.semaphore)
            .try_acquire_owned()
            .map(|permit| QueuePermit { _permit: permit })
            .map_err(|_| QueueRejected::Full)
    }

    fn join_line(&self) -> Result<Place<'_>, QueueRejected> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.queue_size).then_some(w + 1)
            })
            .map(|_| Place(&self.waiting))
            .map_err(|_| QueueRejected::Full)
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.semaphore.available_permits())
    }

    /// Requests waiting in line.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The concurrency limit.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// The most requests that may wait.
    pub fn queue_size(&self) -> usize {
        self.queue_size
    }

    /// The longest a request waits.
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// `(in_flight + waiting) / max_concurrent`: below 1 there are free
    /// slots; above 1 requests are waiting.
    pub fn load(&self) -> f64 {
        (self.in_flight() + self.waiting()) as f64 / self.max_concurrent as f64
    }
}

impl fmt::Debug for RequestQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestQueue")
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("max_concurrent", &self.max_concurrent)
            .field("queue_size", &self.queue_size)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

impl fmt::Debug for QueuePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePermit").finish_non_exhaustive()
    }
}

/// A place in line, given back on every exit path.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn types_are_send_sync() {
        assert_send_sync::<RequestQueue>();
        assert_send_sync::<QueuePermit>();
    }

    #[test]
    fn try_acquire_counts() {
        let q = RequestQueue::new(NonZeroUsize::new(2).unwrap(), 0, Duration::from_secs(1));
        let a = q.try_acquire().unwrap();
        let _b = q.try_acquire().unwrap();
        assert_eq!(q.in_flight(), 2);
        assert_eq!(q.try_acquire().unwrap_err(), QueueRejected::Full);
        assert!((q.load() - 1.0).abs() < f64::EPSILON);
        drop(a);
        assert_eq!(q.in_flight(), 1);
    }
}
