//! Every error status of the API, each triggered through real HTTP; after each bad request the
//! stock and the buyers are unchanged.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::{Faulty, with};
use common::{Server, activity, settings};
use seckill_service::{Components, RateLimits, Settings};
use serde_json::{Value, json};

/// Stock and buyers must not move.
async fn assert_unchanged(s: &Server, product_id: u64, remaining: u64, buyers: u64) {
    let st = s.stats(product_id).await;
    assert_eq!(st["remaining_stock"], remaining, "{st}");
    assert_eq!(st["buyers"], buyers, "{st}");
}

fn code(body: &Value) -> i64 {
    body["code"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_field_named() {
    let s = Server::embedded().await;
    assert_eq!(s.prewarm(activity(2001, 10)).await.0, 200);
    let purchase = s.url("/api/v1/seckill/purchase");
    let raw = |body: &'static str| {
        s.client
            .post(&purchase)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: [(&str, Option<&str>); 9] = [
        ("{\"product_id\": 2001, \"user_id\": ", None),
        ("[1,2]", None),
        ("{\"user_id\": 1}", Some("product_id")),
        ("{\"product_id\": 2001}", Some("user_id")),
        (
            "{\"product_id\": \"2001\", \"user_id\": 1}",
            Some("product_id"),
        ),
        ("{\"product_id\": 2001, \"user_id\": -5}", Some("user_id")),
        ("{\"product_id\": 0, \"user_id\": 1}", Some("product_id")),
        (
            "{\"product_id\": 2001, \"user_id\": 1, \"quantity\": 0}",
            Some("quantity"),
        ),
        (
            "{\"product_id\": 2001, \"user_id\": 1, \"quantity\": 2}",
            Some("quantity"),
        ),
    ];
    for (body, field) in cases {
        let r = raw(body).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(code(&v), 40001, "{body}: {v}");
        assert!(v["data"].is_null());
        if let Some(f) = field {
            assert!(
                v["message"].as_str().unwrap().contains(f),
                "{body}: message should name {f}: {v}"
            );
        }
        assert_unchanged(&s, 2001, 10, 0).await;
    }
    // A bad Idempotency-Key header.
    let r = s
        .client
        .post(&purchase)
        .header("idempotency-key", "k".repeat(200))
        .json(&json!({"product_id": 2001, "user_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("Idempotency-Key"),
        "{v}"
    );
    // Bad prewarm fields.
    for (field, value) in [
        ("price", json!(-1)),
        ("stock", json!("many")),
        ("start_time", json!("yesterday")),
        ("status", json!("sleeping")),
        ("product_name", json!("")),
    ] {
        let mut body = activity(2002, 5);
        body[field] = value;
        let (status, v) = s.prewarm(body).await;
        assert_eq!(status, 400, "{field}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }
    let mut body = activity(2002, 5);
    body["end_time"] = body["start_time"].clone();
    let (status, v) = s.prewarm(body).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("end_time"), "{v}");
    assert_eq!(
        s.get("/api/v1/seckill/stats/2002").await.0,
        404,
        "nothing was written"
    );
    // Bad path parameters.
    for path in [
        "/api/v1/seckill/stats/abc",
        "/api/v1/seckill/purchased/2001/0",
        "/api/v1/seckill/orders/not-an-order",
    ] {
        let (status, v) = s.get(path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(code(&v), 40001);
    }
    assert_unchanged(&s, 2001, 10, 0).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_content_type_are_checked() {
    let s = Server::embedded().await;
    assert_eq!(s.prewarm(activity(2003, 10)).await.0, 200);
    let purchase = s.url("/api/v1/seckill/purchase");
    let big = format!(
        "{{\"product_id\": 2003, \"user_id\": 1, \"pad\": \"{}\"}}",
        "x".repeat(10_000)
    );
    let r = s
        .client
        .post(&purchase)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(code(&r.json().await.unwrap()), 41301);
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = s
            .client
            .post(&purchase)
            .body("{\"product_id\": 2003, \"user_id\": 1}");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 415, "{ct:?}");
        assert_eq!(code(&r.json().await.unwrap()), 41501);
    }
    // charset parameters are fine.
    let r = s
        .client
        .post(&purchase)
        .header("content-type", "application/json; charset=utf-8")
        .body("{\"product_id\": 2003, \"user_id\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_unchanged(&s, 2003, 9, 1).await;
    // Unknown routes and methods answer in the envelope too.
    let (status, v) = s.get("/api/v1/nope").await;
    assert_eq!((status, code(&v)), (404, 40404));
    let (status, v) = s.get("/api/v1/seckill/purchase").await;
    assert_eq!((status, code(&v)), (405, 40501));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_rejections_have_distinct_statuses_and_codes() {
    let s = Server::embedded().await;
    let mut two = activity(2004, 1);
    two["per_user_limit"] = json!(2);
    assert_eq!(s.prewarm(two).await.0, 200);
    let (status, first) = s.purchase(2004, 1).await;
    assert_eq!(status, 200);
    // The buyer's purchase again (a resend, a retry) answers their order; another quantity
    // is another purchase, refused.
    let (status, v) = s.purchase(2004, 1).await;
    assert_eq!(
        (status, &v["data"]["order_id"]),
        (200, &first["data"]["order_id"]),
        "{v}"
    );
    let (status, v) = s
        .post(
            "/api/v1/seckill/purchase",
            json!({"product_id": 2004, "user_id": 1, "quantity": 2}),
        )
        .await;
    assert_eq!((status, code(&v)), (409, 40902), "already bought: {v}");
    let (status, v) = s.purchase(2004, 2).await;
    assert_eq!((status, code(&v)), (409, 40901), "sold out: {v}");
    assert_unchanged(&s, 2004, 0, 1).await;

    let (status, v) = s.purchase(9999, 1).await;
    assert_eq!((status, code(&v)), (404, 40401));
    let (status, v) = s.get("/api/v1/seckill/stats/9999").await;
    assert_eq!((status, code(&v)), (404, 40401));
    let (status, v) = s.get("/api/v1/seckill/purchased/9999/1").await;
    assert_eq!((status, code(&v)), (404, 40401));
    let (status, v) = s.get("/api/v1/seckill/orders/2004-999").await;
    assert_eq!((status, code(&v)), (404, 40402));
    let (status, v) = s
        .get("/api/v1/seckill/result/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!((status, code(&v)), (404, 40403));
    // A malformed id is refused before any lookup.
    let (status, v) = s.get("/api/v1/seckill/result/0123456789abcdef").await;
    assert_eq!((status, code(&v)), (400, 40001), "{v}");

    let now = chrono::Utc::now();
    let mut early = activity(2005, 5);
    early["start_time"] = json!((now + chrono::Duration::hours(1)).to_rfc3339());
    early["end_time"] = json!((now + chrono::Duration::hours(2)).to_rfc3339());
    let mut late = activity(2006, 5);
    late["start_time"] = json!((now - chrono::Duration::hours(2)).to_rfc3339());
    late["end_time"] = json!((now - chrono::Duration::hours(1)).to_rfc3339());
    let mut off = activity(2007, 5);
    off["status"] = json!("inactive");
    for (body, product, expect) in [
        (early, 2005, 40302),
        (late, 2006, 40303),
        (off, 2007, 40301),
    ] {
        assert_eq!(s.prewarm(body).await.0, 200);
        let (status, v) = s.purchase(product, 1).await;
        assert_eq!((status, code(&v)), (403, expect), "{v}");
        assert_unchanged(&s, product, 5, 0).await;
    }

    // Re-prewarming a started sale is refused without force, and changes nothing.
    let mut changed = activity(2004, 500);
    changed["product_name"] = json!("something else");
    let (status, v) = s.prewarm(changed.clone()).await;
    assert_eq!((status, code(&v)), (409, 40903), "{v}");
    assert_unchanged(&s, 2004, 0, 1).await;
    changed["force"] = json!(true);
    let (status, v) = s.prewarm(changed).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["result"], "replaced");
    assert_unchanged(&s, 2004, 500, 0).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let one = std::num::NonZeroU32::new(1).unwrap();
    let s = Server::start(
        Settings {
            rate_limit: RateLimits {
                requests_per_second: one,
                burst_size: std::num::NonZeroU32::new(2).unwrap(),
                ..RateLimits::default()
            },
            ..settings()
        },
        Components::embedded(),
    )
    .await;
    assert_eq!(s.prewarm(activity(2008, 10)).await.0, 200);
    assert_eq!(s.purchase(2008, 1).await.0, 200);
    assert_eq!(s.purchase(2008, 2).await.0, 200);
    let r = s
        .client
        .post(s.url("/api/v1/seckill/purchase"))
        .json(&json!({"product_id": 2008, "user_id": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(code(&r.json().await.unwrap()), 42901);
    assert_unchanged(&s, 2008, 8, 2).await;
    // Reads are not throttled by the purchase limit.
    for _ in 0..5 {
        assert_eq!(s.get("/api/v1/seckill/stats/2008").await.0, 200);
    }
    let (_, v) = s.get("/api/v1/system/stats").await;
    let limited = v["data"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "rate_limited")
        .unwrap()["count"]
        .clone();
    assert_eq!(limited, 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_lever_degrades_with_the_configured_message() {
    let s = Server::embedded().await;
    assert_eq!(s.prewarm(activity(2009, 10)).await.0, 200);
    let (status, _) = s
        .post("/api/v1/system/degradation", json!({"mode": "on"}))
        .await;
    assert_eq!(status, 200);
    let (status, v) = s.purchase(2009, 1).await;
    assert_eq!((status, code(&v)), (503, 50301));
    assert_eq!(v["message"], "系统繁忙，请稍后重试");
    assert_unchanged(&s, 2009, 10, 0).await;
    let (status, v) = s
        .post("/api/v1/system/degradation", json!({"mode": "sideways"}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("mode"));
    assert_eq!(
        s.post("/api/v1/system/degradation", json!({"mode": "auto"}))
            .await
            .0,
        200
    );
    assert_eq!(s.purchase(2009, 1).await.0, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_at_once() {
    let inv = Arc::new(Faulty::default());
    let s = Arc::new(
        Server::start(
            Settings {
                max_concurrent_requests: std::num::NonZeroUsize::new(1).unwrap(),
                queue_size: 1,
                queue_timeout: Duration::from_secs(30),
                degradation: seckill_service::DegradationSettings {
                    enable: false,
                    ..settings().degradation
                },
                ..settings()
            },
            with(inv.clone()),
        )
        .await,
    );
    assert_eq!(s.prewarm(activity(2010, 10)).await.0, 200);
    inv.gated.store(true, Ordering::SeqCst);
    // One request holds the only slot, one waits in the queue of one.
    let holder = tokio::spawn({
        let s = s.clone();
        async move { s.purchase(2010, 1).await }
    });
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.purchase(2010, 2).await }
    });
    let queue = s.service.flow().queue().clone();
    while queue.in_flight() + queue.waiting() < 2 {
        tokio::task::yield_now().await;
    }
    let (status, v) = s.purchase(2010, 3).await;
    assert_eq!((status, code(&v)), (503, 50302), "{v}");
    assert_eq!(v["message"], "系统繁忙，请稍后重试");
    inv.gate.add_permits(2);
    assert_eq!(holder.await.unwrap().0, 200);
    assert_eq!(waiter.await.unwrap().0, 200);
    assert_unchanged(&s, 2010, 8, 2).await;
    Arc::into_inner(s).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_answers_503_and_opens_the_breaker() {
    let inv = Arc::new(Faulty::default());
    let mut cfg = settings();
    cfg.circuit_breaker.failure_threshold = 3;
    cfg.circuit_breaker.recovery_timeout = Duration::from_secs(3600);
    let s = Server::start(cfg, with(inv.clone())).await;
    assert_eq!(s.prewarm(activity(2011, 10)).await.0, 200);
    inv.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let (status, v) = s.purchase(2011, 1).await;
        assert_eq!((status, code(&v)), (503, 50303), "{v}");
    }
    assert_eq!(inv.calls.load(Ordering::SeqCst), 3);
    // Open: refused without touching the backend.
    let (status, v) = s.purchase(2011, 1).await;
    assert_eq!((status, code(&v)), (503, 50303));
    assert_eq!(
        inv.calls.load(Ordering::SeqCst),
        3,
        "the open breaker fails fast"
    );
    let (_, v) = s.get("/api/v1/system/stats").await;
    assert_eq!(v["data"]["circuit_breaker"], "open");
    let (status, v) = s.get("/health").await;
    assert_eq!(status, 503, "{v}");
    inv.failing.store(false, Ordering::SeqCst);
    assert_unchanged(&s, 2011, 10, 0).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_edges_answer_in_the_envelope_and_change_nothing() {
    let s = Server::embedded().await;
    assert_eq!(s.prewarm(activity(2020, 10)).await.0, 200);
    // Path parameters: bad percent-encoding, non-canonical or out-of-range ids.
    for path in [
        "/api/v1/seckill/stats/%FF",
        "/api/v1/seckill/stats/+2020",
        "/api/v1/seckill/stats/02020",
        "/api/v1/seckill/stats/9223372036854775808",
        "/api/v1/seckill/orders/%FF-1",
        "/api/v1/seckill/orders/+2020-1",
        "/api/v1/seckill/orders/2020-01",
        "/api/v1/seckill/purchased/2020/%FF",
        "/api/v1/seckill/result/%FF",
        "/api/v1/seckill/result/zz",
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let v: Value = r.json().await.expect("a JSON envelope");
        assert_eq!(code(&v), 40001, "{path}: {v}");
    }
    // Ids in bodies must fit in i64.
    let (st, v) = s
        .post(
            "/api/v1/seckill/purchase",
            json!({"product_id": 9223372036854775808u64, "user_id": 1}),
        )
        .await;
    assert_eq!((st, code(&v)), (400, 40001), "{v}");
    assert!(v["message"].as_str().unwrap().contains("product_id"), "{v}");
    let (st, v) = s
        .post(
            "/api/v1/seckill/purchase",
            json!({"product_id": 2020, "user_id": 9223372036854775808u64}),
        )
        .await;
    assert_eq!((st, code(&v)), (400, 40001), "{v}");
    let mut big = activity(2021, 10);
    big["product_id"] = json!(9223372036854775808u64);
    assert_eq!(s.prewarm(big).await.0, 400);
    assert_unchanged(&s, 2020, 10, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_bound_to_its_request() {
    let s = Server::embedded().await;
    let mut a = activity(2022, 10);
    a["per_user_limit"] = json!(3);
    assert_eq!(s.prewarm(a).await.0, 200);
    let buy = |quantity: u64| {
        s.client
            .post(s.url("/api/v1/seckill/purchase"))
            .header("idempotency-key", "order-form-1")
            .json(&json!({"product_id": 2022, "user_id": 5, "quantity": quantity}))
            .send()
    };
    let r = buy(1).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let first: Value = r.json().await.unwrap();
    // The same key with another quantity is another request: refused, not answered with the
    // first sale.
    let r = buy(3).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), 42201, "{v}");
    // The first request replays its answer.
    let r = buy(1).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["data"]["order_id"], first["data"]["order_id"]);
    assert_unchanged(&s, 2022, 9, 1).await;
    s.shutdown().await;
}
