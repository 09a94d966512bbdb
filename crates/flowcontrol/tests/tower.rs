//! The tower layers: shared state across clones, rejections as opaque errors, the breaker's
//! classifier, the queue under tokio's paused clock.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seckill_flowcontrol::tower::{
    BoxError, BreakerLayer, DegradeLayer, KeyedRateLimitLayer, QueueLayer, RateLimitLayer,
};
use seckill_flowcontrol::{
    BreakerConfig, BreakerOpen, BreakerState, CallOutcome, CircuitBreaker, Degradation, Degraded,
    KeyedLimiter, ManualClock, QueueRejected, Quota, RateLimited, RateLimiter, RequestQueue,
    SlidingWindow, TokenBucket,
};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt, service_fn};

use seckill_test_support::nz;

fn echo() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x) })
}

#[tokio::test]
async fn rate_limit_is_shared_by_every_clone() {
    let clock = ManualClock::new();
    let bucket = Arc::new(TokenBucket::with_clock(
        Quota::per_second(nz(5)).with_burst(nz(5)),
        clock.clone(),
    ));
    let svc = RateLimitLayer::new(bucket.clone()).layer(echo());
    // 100 clones, one request each: one bucket, so exactly the burst gets through.
    let mut admitted = 0;
    let mut retry = Duration::ZERO;
    for i in 0..100 {
        match svc.clone().oneshot(i).await {
            Ok(v) => {
                assert_eq!(v, i);
                admitted += 1;
            }
            Err(e) => retry = e.downcast_ref::<RateLimited>().unwrap().retry_after,
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(retry, Duration::from_millis(200));
    // A second layer built from the same limiter also shares it.
    let other = RateLimitLayer::new(bucket).layer(echo());
    assert!(other.oneshot(1).await.is_err());
    clock.advance(Duration::from_millis(200));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[tokio::test]
async fn rate_limit_takes_trait_objects() {
    let clock = ManualClock::new();
    let window: Arc<dyn RateLimiter> = Arc::new(SlidingWindow::with_clock(
        nz(3),
        Duration::from_secs(1),
        nz(10),
        clock,
    ));
    let svc = RateLimitLayer::new(window).layer(echo());
    let mut ok = 0;
    for i in 0..10 {
        ok += u32::from(svc.clone().oneshot(i).await.is_ok());
    }
    assert_eq!(ok, 3);
    let e: BoxError = svc.oneshot(0).await.unwrap_err();
    assert_eq!(e.to_string(), "rate limit exceeded");
}

#[tokio::test]
async fn keyed_limit_uses_the_extracted_key() {
    let clock = ManualClock::new();
    let limiter = Arc::new(KeyedLimiter::with_clock(
        Quota::per_second(nz(1)).with_burst(nz(2)),
        NonZeroUsize::new(100).unwrap(),
        clock.clone(),
    ));
    // Even numbers are keyed by their value / 10; odd numbers are not keyed.
    let svc = KeyedRateLimitLayer::new(limiter.clone(), |x: &u64| (x % 2 == 0).then_some(x / 10))
        .layer(echo());
    assert!(svc.clone().oneshot(10).await.is_ok());
    assert!(svc.clone().oneshot(12).await.is_ok());
    let e = svc.clone().oneshot(14).await.unwrap_err();
    let e = e.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(e.retry_after, Duration::from_secs(1));
    assert!(svc.clone().oneshot(20).await.is_ok(), "another key");
    for _ in 0..10 {
        assert!(svc.clone().oneshot(11).await.is_ok(), "unkeyed passes");
    }
    assert_eq!(limiter.len(), 2);
    clock.advance(Duration::from_secs(1));
    assert!(svc.oneshot(16).await.is_ok());
}

/// A backend answering from a script of results.
#[derive(Debug, thiserror::Error)]
enum Backend {
    #[error("not found")]
    NotFound,
    #[error("down")]
    Down,
}

#[tokio::test]
async fn breaker_counts_only_what_the_classifier_calls_failures() {
    let clock = ManualClock::new();
    let breaker = Arc::new(CircuitBreaker::with_clock(
        BreakerConfig {
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(10),
            ..BreakerConfig::default()
        },
        clock.clone(),
    ));
    let calls = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inner = service_fn({
        let (calls, failing) = (calls.clone(), failing.clone());
        move |x: u64| {
            calls.fetch_add(1, Ordering::SeqCst);
            let down = failing.load(Ordering::SeqCst);
            async move {
                match x {
                    _ if down => Err(Backend::Down),
                    0 => Err(Backend::NotFound),
                    x => Ok(x),
                }
            }
        }
    });
    let svc = BreakerLayer::new(breaker.clone())
        .with_classifier(|r: &Result<u64, Backend>| match r {
            Ok(_) | Err(Backend::NotFound) => CallOutcome::Success,
            Err(Backend::Down) => CallOutcome::Failure,
        })
        .layer(inner);
    // Business rejections never open it.
    for _ in 0..10 {
        let e = svc.clone().oneshot(0).await.unwrap_err();
        assert!(e.downcast_ref::<Backend>().is_some());
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let e = svc.clone().oneshot(1).await.unwrap_err();
        assert!(matches!(e.downcast_ref::<Backend>(), Some(Backend::Down)));
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 13);
    let e = svc.clone().oneshot(1).await.unwrap_err();
    let open = e.downcast_ref::<BreakerOpen>().expect("circuit open");
    assert_eq!(open.retry_after, Duration::from_secs(10));
    assert_eq!(calls.load(Ordering::SeqCst), 13, "open: inner not called");
    // Half-open after the timeout; a successful probe closes it.
    failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10));
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 5);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn breaker_default_classifier_and_dropped_futures() {
    let breaker = Arc::new(CircuitBreaker::with_clock(
        BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        },
        ManualClock::new(),
    ));
    let gate = Arc::new(Semaphore::new(0));
    let inner = service_fn({
        let gate = gate.clone();
        move |x: u64| {
            let gate = gate.clone();
            async move {
                if x == 0 {
                    gate.acquire().await.unwrap().forget();
                    return Err("boom");
                }
                Ok(x)
            }
        }
    });
    let mut svc = BreakerLayer::new(breaker.clone()).layer(inner);
    // A call whose future is dropped before completing records nothing.
    let fut = svc.ready().await.unwrap().call(0);
    drop(fut);
    assert_eq!(breaker.state(), BreakerState::Closed);
    gate.add_permits(1);
    assert!(svc.clone().oneshot(0).await.is_err());
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "Err is a failure by default"
    );
}

#[tokio::test(start_paused = true)]
async fn queue_layer_waits_in_line_then_refuses() {
    let queue = Arc::new(RequestQueue::new(
        NonZeroUsize::new(1).unwrap(),
        1,
        Duration::from_millis(100),
    ));
    let gate = Arc::new(Semaphore::new(0));
    let inner = service_fn({
        let gate = gate.clone();
        move |x: u64| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(x)
            }
        }
    });
    let svc = QueueLayer::new(queue.clone()).layer(inner);
    let holder = tokio::spawn(svc.clone().oneshot(1));
    while queue.in_flight() < 1 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(svc.clone().oneshot(2));
    while queue.waiting() < 1 {
        tokio::task::yield_now().await;
    }
    // Line full: refused at once.
    let e = svc.clone().oneshot(3).await.unwrap_err();
    let e = e.downcast_ref::<QueueRejected>().unwrap();
    assert_eq!(*e, QueueRejected::Full);
    // The waiter times out while the holder keeps the slot.
    tokio::time::advance(Duration::from_millis(101)).await;
    let e = waiter.await.unwrap().unwrap_err();
    assert_eq!(
        e.downcast_ref::<QueueRejected>(),
        Some(&QueueRejected::Timeout)
    );
    assert_eq!(queue.waiting(), 0);
    gate.add_permits(1);
    assert_eq!(holder.await.unwrap().unwrap(), 1);
    assert_eq!(queue.in_flight(), 0, "slot released with the response");
    // A waiter that gets the slot in time is served.
    let holder = tokio::spawn(svc.clone().oneshot(4));
    while queue.in_flight() < 1 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(svc.clone().oneshot(5));
    while queue.waiting() < 1 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(2);
    assert_eq!(holder.await.unwrap().unwrap(), 4);
    assert_eq!(waiter.await.unwrap().unwrap(), 5);
    assert_eq!((queue.in_flight(), queue.waiting()), (0, 0));
}

#[tokio::test]
async fn degrade_layer_follows_the_load_and_the_operator() {
    let degradation = Arc::new(Degradation::new(0.8, 0.2));
    let load = Arc::new(AtomicU64::new(0));
    let svc = DegradeLayer::new(degradation.clone())
        .with_load({
            let load = load.clone();
            move || load.load(Ordering::SeqCst) as f64 / 100.0
        })
        .layer(echo());
    assert!(svc.clone().oneshot(1).await.is_ok());
    load.store(80, Ordering::SeqCst);
    let e = svc.clone().oneshot(1).await.unwrap_err();
    assert!(e.downcast_ref::<Degraded>().is_some());
    assert_eq!(e.to_string(), "service degraded");
    load.store(70, Ordering::SeqCst);
    assert!(svc.clone().oneshot(1).await.is_err(), "hysteresis");
    load.store(50, Ordering::SeqCst);
    assert!(svc.clone().oneshot(1).await.is_ok());
    degradation.set_forced(Some(true));
    assert!(svc.clone().oneshot(1).await.is_err());
    // Without a load signal, only the switch's own state counts.
    let plain = DegradeLayer::new(degradation.clone()).layer(echo());
    assert!(plain.clone().oneshot(1).await.is_err());
    degradation.set_forced(None);
    assert!(plain.oneshot(1).await.is_ok());
}
