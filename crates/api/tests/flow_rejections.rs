//! Every flow-control rejection of the purchase route not covered by `errors.rs`, through the
//! real HTTP server: its status, its envelope code, the system-stats counter and the
//! `seckill_purchase_requests_total{outcome}` metric it increments.

mod common;

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::faulty::{Faulty, with};
use common::{Server, activity, settings};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use seckill_service::{Components, DegradationSettings, KeyedLimit, RateLimits, Settings};
use serde_json::{Value, json};

const BUSY: &str = "系统繁忙，请稍后重试";

fn code(body: &Value) -> i64 {
    body["code"].as_i64().unwrap_or(-1)
}

/// A recorder keeping counters by `name{label=value,…}`. Installed as the thread's local
/// recorder while the server starts, so the server's counter handles (taken once, in
/// `Stats::default`) report here and nowhere else: tests running in parallel do not mix.
#[derive(Default)]
struct Counters(
    parking_lot::Mutex<HashMap<String, Arc<AtomicU64>>>,
    parking_lot::Mutex<HashMap<String, Arc<Samples>>>,
);

/// The values a histogram recorded.
#[derive(Default)]
struct Samples(parking_lot::Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().push(value);
    }
}

impl Counters {
    fn get(&self, outcome: &str) -> u64 {
        let id = format!("seckill_purchase_requests_total{{outcome={outcome}}}");
        self.0
            .lock()
            .get(&id)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(self.0.lock().entry(id).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(
            self.1
                .lock()
                .entry(key.name().to_owned())
                .or_default()
                .clone(),
        )
    }
}

/// Starts the server with its metrics going to a fresh [`Counters`].
async fn start(settings: Settings, components: Components) -> (Server, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let server = {
        let _local = metrics::set_default_local_recorder(&*counters);
        Server::start(settings, components).await
    };
    (server, counters)
}

/// `data.requests[outcome=…].count` of `GET /api/v1/system/stats`.
async fn stats_count(s: &Server, outcome: &str) -> u64 {
    let (status, v) = s.get("/api/v1/system/stats").await;
    assert_eq!(status, 200, "{v}");
    v["data"]["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no outcome {outcome}: {v}"))["count"]
        .as_u64()
        .unwrap()
}

/// Asserts the stats counter and the metric of `outcome` both read `n`.
async fn assert_counted(s: &Server, counters: &Counters, outcome: &str, n: u64) {
    assert_eq!(stats_count(s, outcome).await, n, "system stats, {outcome}");
    assert_eq!(counters.get(outcome), n, "metric, {outcome}");
}

fn limit(rate: u32, burst: u32) -> KeyedLimit {
    KeyedLimit {
        enable: true,
        requests_per_second: NonZeroU32::new(rate).unwrap(),
        burst_size: NonZeroU32::new(burst).unwrap(),
    }
}

/// The test settings with the per-user and per-IP levels given.
fn keyed(per_user: KeyedLimit, per_ip: KeyedLimit) -> Settings {
    let s = settings();
    Settings {
        rate_limit: RateLimits {
            per_user,
            per_ip,
            ..s.rate_limit
        },
        ..s
    }
}

/// POSTs a purchase; returns status, `Retry-After` and body.
async fn purchase(s: &Server, product_id: u64, user_id: u64) -> (u16, Option<String>, Value) {
    let r = s
        .client
        .post(s.url("/api/v1/seckill/purchase"))
        .json(&json!({"product_id": product_id, "user_id": user_id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_answers_429() {
    // 1 request/s, burst 2, per user; nothing else limits.
    let (s, counters) = start(
        keyed(limit(1, 2), KeyedLimit::default()),
        Components::embedded(),
    )
    .await;
    assert_eq!(s.prewarm(activity(3001, 10)).await.0, 200);
    assert_eq!(s.prewarm(activity(3002, 10)).await.0, 200);
    assert_eq!(purchase(&s, 3001, 7).await.0, 200);
    assert_eq!(purchase(&s, 3002, 7).await.0, 200);
    let (status, retry, v) = purchase(&s, 3001, 7).await;
    assert_eq!((status, code(&v)), (429, 42901), "{v}");
    assert_eq!(v["message"], "rate limited");
    assert_eq!(retry.as_deref(), Some("1"));
    // Other users are not affected.
    assert_eq!(purchase(&s, 3001, 8).await.0, 200);
    assert_counted(&s, &counters, "rate_limited", 1).await;
    assert_counted(&s, &counters, "success", 3).await;
    let st = s.stats(3001).await;
    assert_eq!(
        (st["remaining_stock"].clone(), st["buyers"].clone()),
        (json!(8), json!(2))
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_limit_answers_429() {
    // Every request of this test comes from 127.0.0.1: burst 3 per IP.
    let (s, counters) = start(
        keyed(KeyedLimit::default(), limit(1, 3)),
        Components::embedded(),
    )
    .await;
    assert_eq!(s.prewarm(activity(3003, 10)).await.0, 200);
    for user in 1..=3 {
        assert_eq!(purchase(&s, 3003, user).await.0, 200, "user {user}");
    }
    // A fourth user, same address.
    let (status, retry, v) = purchase(&s, 3003, 4).await;
    assert_eq!((status, code(&v)), (429, 42901), "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    let (status, _, v) = purchase(&s, 3003, 5).await;
    assert_eq!((status, code(&v)), (429, 42901), "{v}");
    assert_counted(&s, &counters, "rate_limited", 2).await;
    assert_counted(&s, &counters, "success", 3).await;
    assert_eq!(s.stats(3003).await["remaining_stock"], 7);
    s.shutdown().await;
}

/// Spawns a purchase that will be held by the gate.
fn spawn_purchase(
    s: &Arc<Server>,
    product_id: u64,
    user_id: u64,
) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
    let s = s.clone();
    tokio::spawn(async move { purchase(&s, product_id, user_id).await })
}

/// Lets the server take requests until `in_flight + waiting` in the queue reaches `n`.
async fn until_queued(s: &Server, n: usize) {
    let queue = s.service.flow().queue().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.in_flight() + queue.waiting() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never held {n} requests"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_degrades_automatically_and_recovers() {
    // Capacity 1 slot + 3 in line = 4; degraded from a load of 0.5 (2 held requests) until it
    // falls below 0.4 (hysteresis 0.1).
    let inv = Faulty::new();
    let (s, counters) = start(
        Settings {
            max_concurrent_requests: NonZeroUsize::new(1).unwrap(),
            queue_size: 3,
            queue_timeout: Duration::from_secs(30),
            degradation: DegradationSettings {
                enable: true,
                threshold: 0.5,
                ..settings().degradation
            },
            ..settings()
        },
        with(inv.clone()),
    )
    .await;
    let s = Arc::new(s);
    assert_eq!(s.prewarm(activity(3004, 10)).await.0, 200);
    inv.gated.store(true, Ordering::SeqCst);
    let holder = spawn_purchase(&s, 3004, 1);
    let waiter = spawn_purchase(&s, 3004, 2);
    until_queued(&s, 2).await;

    let (status, retry, v) = purchase(&s, 3004, 3).await;
    assert_eq!((status, code(&v)), (503, 50301), "{v}");
    assert_eq!(v["message"], BUSY);
    assert_eq!(retry.as_deref(), Some("1"));
    let (_, sys) = s.get("/api/v1/system/stats").await;
    assert_eq!(sys["data"]["degraded"], true, "{sys}");
    assert_eq!(sys["data"]["degradation_mode"], "auto");
    assert_counted(&s, &counters, "degraded", 1).await;

    // Releasing the held requests brings the load to 0: the next request is served.
    inv.gated.store(false, Ordering::SeqCst);
    inv.gate.add_permits(2);
    assert_eq!(holder.await.unwrap().0, 200);
    assert_eq!(waiter.await.unwrap().0, 200);
    assert_eq!(purchase(&s, 3004, 3).await.0, 200);
    let (_, sys) = s.get("/api/v1/system/stats").await;
    assert_eq!(sys["data"]["degraded"], false, "{sys}");
    assert_counted(&s, &counters, "degraded", 1).await;
    assert_counted(&s, &counters, "success", 3).await;
    Arc::into_inner(s).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_wait_timeout_answers_503() {
    // One slot, one place in line, 50 ms wait. The holder keeps the slot until after the
    // waiter's answer has arrived, so the timeout is the only possible outcome.
    let inv = Faulty::new();
    let (s, counters) = start(
        Settings {
            max_concurrent_requests: NonZeroUsize::new(1).unwrap(),
            queue_size: 1,
            queue_timeout: Duration::from_millis(50),
            degradation: DegradationSettings {
                enable: false,
                ..settings().degradation
            },
            ..settings()
        },
        with(inv.clone()),
    )
    .await;
    let s = Arc::new(s);
    assert_eq!(s.prewarm(activity(3005, 10)).await.0, 200);
    inv.gated.store(true, Ordering::SeqCst);
    let holder = spawn_purchase(&s, 3005, 1);
    until_queued(&s, 1).await;

    let (status, retry, v) = purchase(&s, 3005, 2).await;
    assert_eq!((status, code(&v)), (503, 50302), "{v}");
    assert_eq!(v["message"], BUSY);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        s.service.flow().queue().waiting(),
        0,
        "the waiter left the line"
    );
    assert_counted(&s, &counters, "queue_full", 1).await;

    inv.gate.add_permits(1);
    assert_eq!(holder.await.unwrap().0, 200);
    let st = s.stats(3005).await;
    assert_eq!(
        (st["remaining_stock"].clone(), st["buyers"].clone()),
        (json!(9), json!(1))
    );
    assert_counted(&s, &counters, "queue_full", 1).await;
    assert_counted(&s, &counters, "success", 1).await;
    Arc::into_inner(s).unwrap().shutdown().await;
}

#[tokio::test]
async fn operators_tighten_and_lift_the_global_limit_at_run_time() {
    let s = Server::embedded().await;
    assert_eq!(s.prewarm(activity(1201, 100)).await.0, 200);
    let (st, v) = s.get("/api/v1/system/rate-limit").await;
    assert_eq!(
        (st, v["data"]["enable"].as_bool()),
        (200, Some(false)),
        "{v}"
    );

    let (st, v) = s
        .post(
            "/api/v1/system/rate-limit",
            json!({"enable": true, "requests_per_second": 1, "burst_size": 2}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["requests_per_second"], 1);
    assert_eq!(v["data"]["burst_size"], 2);
    assert_eq!(v["data"]["algorithm"], "token_bucket");
    assert_eq!(s.purchase(1201, 1).await.0, 200);
    assert_eq!(s.purchase(1201, 2).await.0, 200);
    let r = s
        .client
        .post(s.url("/api/v1/seckill/purchase"))
        .json(&json!({"product_id": 1201, "user_id": 3, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // A bad value names its field and changes nothing.
    let (st, v) = s
        .post(
            "/api/v1/system/rate-limit",
            json!({"enable": true, "requests_per_second": 0}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_second"),
        "{v}"
    );
    let (_, v) = s.get("/api/v1/system/rate-limit").await;
    assert_eq!(
        (
            v["data"]["requests_per_second"].as_u64(),
            v["data"]["burst_size"].as_u64()
        ),
        (Some(1), Some(2))
    );

    // Lifted: purchases pass again.
    let (st, v) = s
        .post("/api/v1/system/rate-limit", json!({"enable": false}))
        .await;
    assert_eq!(
        (st, v["data"]["enable"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    assert_eq!(s.purchase(1201, 3).await.0, 200);
    assert_eq!(s.purchase(1201, 4).await.0, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_purchase_answer_records_its_latency() {
    let (s, counters) = start(settings(), Components::embedded()).await;
    assert_eq!(s.prewarm(activity(1301, 10)).await.0, 200);
    assert_eq!(purchase(&s, 1301, 1).await.0, 200);
    assert_eq!(purchase(&s, 1301, 1).await.0, 200, "the same order again");
    assert_eq!(purchase(&s, 0, 1).await.0, 400);
    let samples = counters
        .1
        .lock()
        .get("seckill_purchase_duration_seconds")
        .map(|h| h.0.lock().clone())
        .unwrap_or_default();
    assert_eq!(samples.len(), 3, "one per purchase answered: {samples:?}");
    assert!(samples.iter().all(|&v| v > 0.0 && v < 10.0), "{samples:?}");
    s.shutdown().await;
}

/// Settings with a global limit of `rate`/s and `burst`.
fn global(rate: u32, burst: u32) -> Settings {
    let s = settings();
    Settings {
        rate_limit: RateLimits {
            enable: true,
            requests_per_second: NonZeroU32::new(rate).unwrap(),
            burst_size: NonZeroU32::new(burst).unwrap(),
            ..s.rate_limit
        },
        ..s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_setting_the_limit_in_force_hands_out_no_fresh_burst() {
    // 1/s with a burst of 40: the test's requests come far faster than one a second, so
    // whatever the burst admitted stays spent for the whole test.
    let s = Server::start(global(1, 40), Components::embedded()).await;
    assert_eq!(s.prewarm(activity(1401, 1000)).await.0, 200);
    for user in 1..=40 {
        assert_eq!(s.purchase(1401, user).await.0, 200, "user {user}");
    }
    assert_eq!(s.purchase(1401, 41).await.0, 429, "the burst is spent");
    for body in [
        json!({"enable": true, "requests_per_second": 1, "burst_size": 40}),
        json!({"enable": true}),
        json!({"enable": true, "algorithm": "token_bucket"}),
    ] {
        let (st, v) = s.post("/api/v1/system/rate-limit", body.clone()).await;
        assert_eq!(st, 200, "{body}: {v}");
        let (st, v) = s.purchase(1401, 42).await;
        assert_eq!(
            (st, code(&v)),
            (429, 42901),
            "re-setting {body} must not hand out a fresh burst: {v}"
        );
    }
    // Switching the algorithm does not either.
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        let (st, v) = s
            .post(
                "/api/v1/system/rate-limit",
                json!({"enable": true, "algorithm": algorithm}),
            )
            .await;
        assert_eq!(
            (st, v["data"]["algorithm"].as_str()),
            (200, Some(algorithm)),
            "{v}"
        );
        let (st, v) = s.purchase(1401, 43).await;
        assert_eq!(
            (st, code(&v)),
            (429, 42901),
            "switching to {algorithm} must not hand out a fresh burst: {v}"
        );
    }
    assert_eq!(s.stats(1401).await["sold"], 40);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_and_per_user_rejections_spend_no_global_token() {
    // A global burst of 2 (1/s); 1 purchase per user (burst 1).
    let base = global(1, 2);
    let settings = Settings {
        rate_limit: RateLimits {
            per_user: limit(1, 1),
            ..base.rate_limit.clone()
        },
        ..base
    };
    let (s, counters) = start(settings, Components::embedded()).await;
    assert_eq!(s.prewarm(activity(1402, 10)).await.0, 200);
    let purchase_url = s.url("/api/v1/seckill/purchase");
    for body in ["{", "{", "{", "{", "{\"product_id\": 0, \"user_id\": 1}"] {
        let r = s
            .client
            .post(&purchase_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
    }
    assert_counted(&s, &counters, "invalid", 5).await;
    // The global burst is whole: user 7 buys, and is refused by the per-user level...
    assert_eq!(purchase(&s, 1402, 7).await.0, 200);
    for _ in 0..3 {
        let (st, _, v) = purchase(&s, 1402, 7).await;
        assert_eq!((st, code(&v)), (429, 42901), "{v}");
    }
    // ...which spent no global token: the second of the burst is still there for user 8.
    assert_eq!(purchase(&s, 1402, 8).await.0, 200);
    // Now the global level is the one refusing.
    let (st, _, v) = purchase(&s, 1402, 9).await;
    assert_eq!((st, code(&v)), (429, 42901), "{v}");
    assert_counted(&s, &counters, "success", 2).await;
    assert_counted(&s, &counters, "rate_limited", 4).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_admits_the_configured_burst() {
    for algorithm in ["token_bucket", "sliding_window", "fixed_window"] {
        let mut settings = global(1, 5);
        settings.rate_limit.algorithm = match algorithm {
            "token_bucket" => seckill_service::Algorithm::TokenBucket,
            "sliding_window" => seckill_service::Algorithm::SlidingWindow,
            _ => seckill_service::Algorithm::FixedWindow,
        };
        let s = Server::start(settings, Components::embedded()).await;
        assert_eq!(s.prewarm(activity(1403, 100)).await.0, 200);
        for user in 1..=5 {
            assert_eq!(
                s.purchase(1403, user).await.0,
                200,
                "{algorithm}: user {user}"
            );
        }
        assert_eq!(s.purchase(1403, 6).await.0, 429, "{algorithm}");
        s.shutdown().await;
    }
}
