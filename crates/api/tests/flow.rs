//! The specification's curl flow and the concurrency guarantee, through real HTTP.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Server, activity, components};
use serde_json::json;

async fn the_specification_flow_works_end_to_end(backend: Backend) {
    let (c, redis) = components(backend).await;
    let s = Server::start(common::settings(), c).await;

    let (status, body) = s.get("/health").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    let mut a = activity(1001, 100);
    a["per_user_limit"] = json!(2);
    let (status, body) = s.prewarm(a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 0);
    assert_eq!(body["data"]["result"], "created");

    let (status, body) = s.purchase(1001, 2001).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 0);
    assert_eq!(body["message"], "success");
    let order_id = body["data"]["order_id"]
        .as_str()
        .expect("order id is a string")
        .to_owned();
    assert_eq!(body["data"]["remaining_stock"], 99);

    let (status, body) = s.get("/api/v1/seckill/purchased/1001/2001").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["purchased"], true);
    let (_, body) = s.get("/api/v1/seckill/purchased/1001/2002").await;
    assert_eq!(body["data"]["purchased"], false);

    // Asynchronous purchase: 202, then the result.
    let (status, body) = s
        .post(
            "/api/v1/seckill/purchase/async",
            json!({"product_id": 1001, "user_id": 2002, "quantity": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let request_id = body["data"]["request_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let result = loop {
        let (status, body) = s.get(&format!("/api/v1/seckill/result/{request_id}")).await;
        assert_eq!(status, 200, "{body}");
        if body["data"]["status"] != "pending" {
            break body["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "still pending");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["remaining_stock"], 98);
    // The same user again with another quantity, asynchronously: a failed result naming the
    // reason (the same quantity would answer their order again).
    let (_, body) = s
        .post(
            "/api/v1/seckill/purchase/async",
            json!({"product_id": 1001, "user_id": 2002, "quantity": 2}),
        )
        .await;
    let again = body["data"]["request_id"].as_str().unwrap().to_owned();
    let failed = loop {
        let (_, body) = s.get(&format!("/api/v1/seckill/result/{again}")).await;
        if body["data"]["status"] != "pending" {
            break body["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["code"], 40902);
    assert_eq!(failed["reason"], "already bought");

    let st = s.wait_orders(1001, 2).await;
    for key in [
        "product_id",
        "initial_stock",
        "remaining_stock",
        "sold",
        "buyers",
        "orders_created",
    ] {
        assert!(st.get(key).is_some(), "stats lack {key}: {st}");
    }
    assert_eq!(st["initial_stock"], 100);
    assert_eq!(st["remaining_stock"], 98);
    assert_eq!(st["sold"], 2);
    assert_eq!(st["buyers"], 2);
    assert_eq!(st["in_transit"], 0);

    let (status, body) = s.get(&format!("/api/v1/seckill/orders/{order_id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["order_id"], order_id.as_str());
    assert_eq!(body["data"]["user_id"], 2001);
    assert_eq!(body["data"]["status"], "awaiting_payment");
    assert_eq!(body["data"]["price"], 8999.0);

    let (status, body) = s.get("/api/v1/system/stats").await;
    assert_eq!(status, 200);
    let data = &body["data"];
    assert!(data["uptime_seconds"].is_u64());
    assert_eq!(data["in_flight"], 0);
    let success = data["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "success")
        .unwrap();
    assert_eq!(success["count"], 2);
    assert_eq!(data["circuit_breaker"], "closed");

    // A retry carrying the same Idempotency-Key gets the first answer and buys nothing more.
    let retry = || {
        s.client
            .post(s.url("/api/v1/seckill/purchase"))
            .header("idempotency-key", "order-2003-attempt")
            .json(&json!({"product_id": 1001, "user_id": 2003}))
            .send()
    };
    let first: serde_json::Value = retry().await.unwrap().json().await.unwrap();
    let second: serde_json::Value = retry().await.unwrap().json().await.unwrap();
    assert_eq!(first["code"], 0, "{first}");
    assert_eq!(first, second);
    assert_eq!(s.wait_orders(1001, 3).await["sold"], 3);
    s.shutdown().await;
    if let Some(r) = redis {
        r.purge().await.unwrap();
    }
}

/// 1,000 users, 5 attempts each, from 200 concurrent tasks, on stock 100.
async fn concurrent_buyers_get_exactly_the_stock(backend: Backend) {
    let (c, redis) = components(backend).await;
    let s = Arc::new(Server::start(common::settings(), c).await);
    assert_eq!(s.prewarm(activity(1002, 100)).await.0, 200);
    let mut tasks = Vec::new();
    for t in 0..200u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            // Task t owns users t*5+1 ..= t*5+5 and tries each 5 times, interleaved.
            for attempt in 0..5u64 {
                for k in 1..=5u64 {
                    let user = t * 5 + k;
                    let (status, body) = s.purchase(1002, user).await;
                    match status {
                        200 => {
                            wins.push((user, body["data"]["order_id"].as_str().unwrap().to_owned()))
                        }
                        409 => assert!(body["code"] == 40901 || body["code"] == 40902, "{body}"),
                        other => panic!("attempt {attempt}: unexpected {other}: {body}"),
                    }
                }
            }
            wins
        }));
    }
    // A winner's later attempts answer their order again: one order per winner.
    let mut wins = HashSet::new();
    for t in tasks {
        wins.extend(t.await.unwrap());
    }
    assert_eq!(wins.len(), 100, "exactly 100 orders");
    let users: HashSet<u64> = wins.iter().map(|w| w.0).collect();
    assert_eq!(users.len(), 100, "no user twice");
    let orders: HashSet<&str> = wins.iter().map(|w| w.1.as_str()).collect();
    assert_eq!(orders.len(), 100, "distinct order ids");
    let st = s.wait_orders(1002, 100).await;
    assert_eq!(st["remaining_stock"], 0);
    assert_eq!(st["buyers"], 100);
    assert_eq!(st["sold"], 100);
    assert_eq!(st["in_transit"], 0);
    for (user, order) in wins.iter().take(10) {
        let (status, body) = s.get(&format!("/api/v1/seckill/orders/{order}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["user_id"], *user);
    }
    Arc::into_inner(s).unwrap().shutdown().await;
    if let Some(r) = redis {
        r.purge().await.unwrap();
    }
}

/// Sales acknowledged before a shutdown are all stored by the time the server returns.
async fn shutdown_delivers_every_pending_sale(backend: Backend) {
    let orders = Arc::new(seckill_orders::MemoryOrderStore::new());
    let (c, redis) = components(backend).await;
    let components = seckill_service::Components {
        orders: orders.clone(),
        ..c
    };
    let inventory = components.inventory.clone();
    let s = Server::start(common::settings(), components).await;
    assert_eq!(s.prewarm(activity(1003, 50)).await.0, 200);
    for user in 1..=50 {
        assert_eq!(s.purchase(1003, user).await.0, 200);
    }
    s.shutdown().await;
    // No waiting here: serve returned only after the pipeline drained.
    use seckill_orders::OrderStore;
    assert_eq!(orders.counts(1003, 1).await.unwrap().orders, 50);
    assert_eq!(inventory.outbox_len().await.unwrap(), 0);
    if let Some(r) = redis {
        r.purge().await.unwrap();
    }
}

macro_rules! on_backend {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::$name($kind).await;
                    }
                };
            }
            case!(the_specification_flow_works_end_to_end);
            case!(concurrent_buyers_get_exactly_the_stock);
            case!(shutdown_delivers_every_pending_sale);
        }
    };
}

on_backend!(memory, super::Backend::Memory);
on_backend!(redis, super::Backend::Redis);
