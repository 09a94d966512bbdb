//! The flow-control layers around a plain tower service (no HTTP server).
//!
//! ```sh
//! cargo run -p seckill-flowcontrol --example tower_service --features tower
//! ```

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use seckill_flowcontrol::tower::{
    BoxError, BreakerLayer, DegradeLayer, KeyedRateLimitLayer, QueueLayer, RateLimitLayer,
};
use seckill_flowcontrol::{
    BreakerConfig, BreakerOpen, CallOutcome, CircuitBreaker, Degradation, Degraded, KeyedLimiter,
    ManualClock, QueueRejected, Quota, RateLimited, RequestQueue, TokenBucket,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// A purchase request.
#[derive(Debug)]
struct Purchase {
    user: u64,
}

/// What the "inventory" can answer.
#[derive(Debug, thiserror::Error)]
enum InventoryError {
    /// A business rejection: must not open the breaker.
    #[error("sold out")]
    SoldOut,
    /// A backend fault: counts against the breaker.
    #[error("backend down")]
    Down,
}

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

/// Names a rejection the way an HTTP edge would map it: one type per kind of rejection,
/// whichever layer (the global or the per-user limit) gave it.
fn describe(err: &BoxError) -> String {
    if let Some(e) = err.downcast_ref::<RateLimited>() {
        format!("429 rate limited, retry after {:?}", e.retry_after)
    } else if let Some(e) = err.downcast_ref::<BreakerOpen>() {
        format!("503 circuit open, retry after {:?}", e.retry_after)
    } else if let Some(e) = err.downcast_ref::<QueueRejected>() {
        format!("503 {e}")
    } else if err.downcast_ref::<Degraded>().is_some() {
        "503 degraded".to_owned()
    } else if let Some(e) = err.downcast_ref::<InventoryError>() {
        format!("inventory said: {e}")
    } else {
        format!("500 {err}")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // A manual clock keeps the output the same on every run.
    let clock = ManualClock::new();
    let degradation = Arc::new(Degradation::new(0.9, 0.1));
    let global = Arc::new(TokenBucket::with_clock(
        Quota::per_second(nz(5)).with_burst(nz(5)),
        clock.clone(),
    ));
    let per_user = Arc::new(KeyedLimiter::with_clock(
        Quota::per_second(nz(1)).with_burst(nz(2)),
        NonZeroUsize::new(10_000).expect("non-zero"),
        clock.clone(),
    ));
    let queue = Arc::new(RequestQueue::new(
        NonZeroUsize::new(4).expect("non-zero"),
        16,
        Duration::from_millis(500),
    ));
    let breaker = Arc::new(CircuitBreaker::with_clock(
        BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        },
        clock.clone(),
    ));

    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let inventory = service_fn({
        let calls = calls.clone();
        move |p: Purchase| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                match (p.user, n) {
                    (_, 3) => Err(InventoryError::SoldOut),
                    (_, 4..) => Err(InventoryError::Down),
                    _ => Ok(format!("sold to user {}", p.user)),
                }
            }
        }
    });

    let load_queue = queue.clone();
    let service = ServiceBuilder::new()
        .layer(DegradeLayer::new(degradation.clone()).with_load(move || load_queue.load()))
        .layer(RateLimitLayer::new(global))
        .layer(KeyedRateLimitLayer::new(per_user, |p: &Purchase| {
            Some(p.user)
        }))
        .layer(QueueLayer::new(queue))
        .layer(BreakerLayer::new(breaker.clone()).with_classifier(
            |r: &Result<String, InventoryError>| match r {
                Ok(_) | Err(InventoryError::SoldOut) => CallOutcome::Success,
                Err(InventoryError::Down) => CallOutcome::Failure,
            },
        ))
        .service(inventory);

    // Every clone shares the same limiter, queue and breaker.
    for (i, user) in [1, 1, 1, 2, 3, 4, 5, 6].into_iter().enumerate() {
        let answer = service.clone().oneshot(Purchase { user }).await;
        match answer {
            Ok(body) => println!("request {i} (user {user}): 200 {body}"),
            Err(e) => println!("request {i} (user {user}): {}", describe(&e)),
        }
    }
    clock.advance(Duration::from_secs(1));
    println!("-- one second later; breaker is {:?}", breaker.state());
    for user in [7, 8, 9] {
        let answer = service.clone().oneshot(Purchase { user }).await;
        match answer {
            Ok(body) => println!("user {user}: 200 {body}"),
            Err(e) => println!("user {user}: {}", describe(&e)),
        }
    }
    degradation.set_forced(Some(true));
    let answer = service.clone().oneshot(Purchase { user: 10 }).await;
    println!(
        "operator forced degradation: {}",
        describe(&answer.unwrap_err())
    );
}
