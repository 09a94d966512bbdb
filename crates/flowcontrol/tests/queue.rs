//! RequestQueue behaviour under tokio's paused clock.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use seckill_flowcontrol::{QueueRejected, RequestQueue};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn queue(max: usize, size: usize, timeout_ms: u64) -> Arc<RequestQueue> {
    Arc::new(RequestQueue::new(
        NonZeroUsize::new(max).unwrap(),
        size,
        Duration::from_millis(timeout_ms),
    ))
}

/// Lets spawned tasks run until `q.waiting()` reaches `n`.
async fn until_waiting(q: &RequestQueue, n: usize) {
    for _ in 0..1000 {
        if q.waiting() == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("waiting stayed at {} (wanted {n})", q.waiting());
}

#[tokio::test(start_paused = true)]
async fn serves_waiters_in_fifo_order() {
    let q = queue(1, 3, 10_000);
    let first = q.acquire().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for id in 0..3 {
        let (q2, tx) = (Arc::clone(&q), tx.clone());
        tokio::spawn(async move {
            let _p = q2.acquire().await.unwrap();
            tx.send(id).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
        until_waiting(&q, id + 1).await;
    }
    assert_eq!((q.in_flight(), q.waiting()), (1, 3));
    assert!((q.load() - 4.0).abs() < 1e-9);
    drop(first);
    drop(tx);
    let mut order = Vec::new();
    while let Some(id) = rx.recv().await {
        order.push(id);
    }
    assert_eq!(order, vec![0, 1, 2]);
    assert_eq!((q.in_flight(), q.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn full_line_is_rejected_immediately() {
    let q = queue(1, 1, 1_000);
    let _held = q.acquire().await.unwrap();
    let q2 = Arc::clone(&q);
    let waiter = tokio::spawn(async move { q2.acquire().await.map(drop) });
    until_waiting(&q, 1).await;
    let start = Instant::now();
    assert_eq!(q.acquire().await.unwrap_err(), QueueRejected::Full);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(q.try_acquire().unwrap_err(), QueueRejected::Full);
    assert_eq!(waiter.await.unwrap(), Err(QueueRejected::Timeout));
}

#[tokio::test(start_paused = true)]
async fn zero_queue_size_never_waits() {
    let q = queue(1, 0, 1_000);
    let _held = q.acquire().await.unwrap();
    assert_eq!(q.acquire().await.unwrap_err(), QueueRejected::Full);
}

#[tokio::test(start_paused = true)]
async fn wait_times_out_after_the_timeout() {
    let q = queue(1, 5, 250);
    let _held = q.acquire().await.unwrap();
    let start = Instant::now();
    assert_eq!(q.acquire().await.unwrap_err(), QueueRejected::Timeout);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(q.waiting(), 0, "timed-out waiter left the line");
}

#[tokio::test(start_paused = true)]
async fn waiter_gets_slot_released_before_timeout() {
    let q = queue(1, 5, 250);
    let held = q.acquire().await.unwrap();
    let q2 = Arc::clone(&q);
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let p = q2.acquire().await;
        (p.is_ok(), start.elapsed())
    });
    until_waiting(&q, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    let (ok, waited) = waiter.await.unwrap();
    assert!(ok);
    assert_eq!(waited, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_frees_its_place() {
    let q = queue(1, 1, 10_000);
    let held = q.acquire().await.unwrap();
    let q2 = Arc::clone(&q);
    let waiter = tokio::spawn(async move { q2.acquire().await.map(drop) });
    until_waiting(&q, 1).await;
    assert_eq!(q.try_acquire().unwrap_err(), QueueRejected::Full);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(q.waiting(), 0);

    // The freed place can be taken, and the aborted waiter did not steal
    // the slot when it was released.
    let q3 = Arc::clone(&q);
    let next = tokio::spawn(async move { q3.acquire().await.map(drop) });
    until_waiting(&q, 1).await;
    drop(held);
    assert_eq!(next.await.unwrap(), Ok(()));
    assert_eq!((q.in_flight(), q.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn counters_track_in_flight_and_waiting() {
    let q = queue(2, 2, 10_000);
    assert_eq!((q.max_concurrent(), q.queue_size()), (2, 2));
    let a = q.acquire().await.unwrap();
    let b = q.try_acquire().unwrap();
    assert_eq!((q.in_flight(), q.waiting()), (2, 0));
    assert!((q.load() - 1.0).abs() < 1e-9);
    let q2 = Arc::clone(&q);
    let w = tokio::spawn(async move {
        let _p = q2.acquire().await.unwrap();
    });
    until_waiting(&q, 1).await;
    assert!((q.load() - 1.5).abs() < 1e-9);
    drop(a);
    w.await.unwrap();
    assert_eq!((q.in_flight(), q.waiting()), (1, 0));
    drop(b);
    assert_eq!(q.in_flight(), 0);
}
