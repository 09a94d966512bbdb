//! The rate-limit layer on an axum router holds across clones of the router.
#![cfg(feature = "tower")]

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use seckill_flowcontrol::tower::{BoxError, RateLimitLayer, retry_after_secs};
use seckill_flowcontrol::{ManualClock, Quota, RateLimited, TokenBucket};
use tower::{ServiceBuilder, ServiceExt};

async fn rejected(err: BoxError) -> Response {
    match err.downcast_ref::<RateLimited>() {
        Some(limited) => {
            let mut resp = StatusCode::TOO_MANY_REQUESTS.into_response();
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(limited.retry_after)),
            );
            resp
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_hundred_concurrent_requests_admit_at_most_ten() {
    // Frozen clock: the bucket never refills, so the burst is all there is.
    let clock = ManualClock::new();
    let rate = NonZeroU32::new(5).unwrap();
    let bucket = Arc::new(TokenBucket::with_clock(
        Quota::per_second(rate).with_burst(rate),
        clock,
    ));
    let router: Router = Router::new().route("/buy", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(rejected))
            .layer(RateLimitLayer::new(bucket)),
    );
    let start = Arc::new(tokio::sync::Barrier::new(1500));
    let tasks: Vec<_> = (0..1500)
        .map(|_| {
            let (router, start) = (router.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let req = Request::get("/buy").body(Body::empty()).unwrap();
                router.oneshot(req).await.unwrap()
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let resp = t.await.unwrap();
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((5..=10).contains(&ok), "admitted {ok}");
    assert_eq!(ok, 5, "frozen clock: exactly the burst");
    assert_eq!(ok + limited, 1500);
}
