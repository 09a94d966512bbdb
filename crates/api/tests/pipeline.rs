//! The order pipeline end to end on the production stack — Redis inventory and results,
//! RabbitMQ or Kafka, PostgreSQL orders — against the real servers: sales become exactly one
//! order row each through crashes, outages and redeliveries; asynchronous purchases go
//! through the broker; unpaid orders expire and their items sell again.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::stack::{Mq, Stack};
use common::{Server, Setup, activity};
use seckill_api::ServerConfig;
use seckill_mq::{Envelope, Message, OrderCreated, Topic};
use seckill_orders::ORDER_SERVICE_GROUP;
use seckill_orders::OrdersConfig;
use seckill_service::{PURCHASE_WORKERS_GROUP, RateLimits, Settings};
use serde_json::{Value, json};

/// Longest wait for the pipeline to deliver (a debug build on two shared cores).
const DELIVERY: Duration = Duration::from_secs(180);

fn settings() -> Settings {
    Settings {
        rate_limit: RateLimits {
            enable: false,
            ..RateLimits::default()
        },
        queue_size: 20_000,
        ..Settings::default()
    }
}

/// Unpaid orders are looked for often; a shutdown waits long enough for a loaded machine.
fn setup() -> Setup {
    Setup {
        orders: OrdersConfig {
            sweep_interval: Duration::from_millis(100),
            ..OrdersConfig::default()
        },
        server: ServerConfig {
            shutdown_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
        ..Setup::default()
    }
}

/// Buys one item for each user from `concurrency` tasks; returns (user, status, body).
async fn drive(
    s: &Server,
    path: &str,
    product: u64,
    users: Vec<u64>,
    concurrency: usize,
) -> Vec<(u64, u16, Value)> {
    let users = Arc::new(users);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (users, next, client) = (users.clone(), next.clone(), s.client.clone());
        let url = s.url(path);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&user) = users.get(i) else {
                    return out;
                };
                let r = client
                    .post(&url)
                    .json(&json!({"product_id": product, "user_id": user, "quantity": 1}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                out.push((user, status, r.json().await.unwrap_or(Value::Null)));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Sells one item to each of `users` through `s`, asserting every purchase succeeds.
async fn sell(
    s: &Server,
    product: u64,
    users: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, u16, Value)> {
    let n = users.clone().count();
    let r = drive(s, "/api/v1/seckill/purchase", product, users.collect(), 64).await;
    let ok = r.iter().filter(|(_, st, _)| *st == 200).count();
    assert_eq!(
        ok,
        n,
        "every purchase succeeds: {:?}",
        r.iter().find(|(_, st, _)| *st != 200)
    );
    r
}

/// The ledger, from the inventory and the order rows: initial = remaining + live + in transit,
/// with nothing in transit once the pipeline drained.
async fn assert_ledger(s: &Server, stack: &Stack, product: u64) -> Value {
    let st = s.stats(product).await;
    let epoch = st["epoch"].as_u64().unwrap();
    let rows = stack.orders.counts(product, epoch).await.unwrap();
    let initial = st["initial_stock"].as_u64().unwrap();
    let remaining = st["remaining_stock"].as_u64().unwrap();
    assert_eq!(st["in_transit"], 0, "{st}");
    assert_eq!(st["outbox_pending"], 0, "{st}");
    assert_eq!(
        initial,
        remaining + rows.live_items,
        "ledger: {st} rows {rows:?}"
    );
    st
}

/// Polls an asynchronous purchase until it is no longer pending; returns its `data`.
async fn wait_result(s: &Server, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        let (st, v) = s.get(&format!("/api/v1/seckill/result/{id}")).await;
        assert_eq!(st, 200, "{v}");
        if v["data"]["status"] != "pending" {
            return v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request {id} stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `group`'s queue of `topic` in `broker` is empty.
async fn wait_broker_drained(broker: &dyn seckill_mq::Broker, topic: Topic, group: &str) {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while broker.pending(topic, group).await.unwrap() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group} never drained {topic:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ten_thousand_sales_become_ten_thousand_rows(mq: Mq) {
    let stack = Stack::new(mq).await;
    let s = Server::start_with(settings(), setup(), stack.components().await).await;
    assert_eq!(s.prewarm(activity(4001, 10_000)).await.0, 200);
    let sold = sell(&s, 4001, 1..=10_000).await;
    let ids: HashSet<&str> = sold
        .iter()
        .map(|(_, _, b)| b["data"]["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10_000);
    let st = s.wait_orders_within(4001, 10_000, DELIVERY).await;
    assert_eq!(st["remaining_stock"], 0);
    let rows = stack
        .orders
        .counts(4001, st["epoch"].as_u64().unwrap())
        .await
        .unwrap();
    assert_eq!((rows.orders, rows.live_items), (10_000, 10_000));
    for id in ids.iter().take(50) {
        let o = stack
            .orders
            .get(id)
            .await
            .unwrap()
            .expect("every sold order has its row");
        assert_eq!(o.product_id, 4001);
    }
    assert_ledger(&s, &stack, 4001).await;
    s.shutdown().await;
    stack.cleanup().await;
}

async fn a_crashed_pipeline_loses_and_duplicates_nothing(mq: Mq) {
    let stack = Stack::new(mq).await;
    let mut a = Server::start_holding_pipeline(settings(), setup(), stack.components().await).await;
    assert_eq!(a.prewarm(activity(4002, 10_000)).await.0, 200);
    let pipeline = a.take_pipeline();
    let (sold, stored_at_crash) = tokio::join!(sell(&a, 4002, 1..=10_000), async {
        // Crash the relay, the order consumers and the workers once orders are flowing, and
        // drop the instance's broker connections as its death would.
        let deadline = tokio::time::Instant::now() + DELIVERY;
        while stack.orders.counts(4002, 1).await.unwrap().orders < 500 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no orders before the crash"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pipeline.abort().await;
        stack.kill_brokers().await;
        stack.orders.counts(4002, 1).await.unwrap().orders
    });
    assert_eq!(sold.len(), 10_000);
    assert!(
        stored_at_crash < 10_000,
        "the crash happened mid-stream ({stored_at_crash})"
    );
    // The restarted instance takes over the crashed one's claimed outbox entries and its
    // unacknowledged messages.
    let b = Server::start_with(settings(), setup(), stack.components().await).await;
    let st = b.wait_orders_within(4002, 10_000, DELIVERY).await;
    let rows = stack
        .orders
        .counts(4002, st["epoch"].as_u64().unwrap())
        .await
        .unwrap();
    assert_eq!((rows.orders, rows.live_items), (10_000, 10_000));
    assert_ledger(&b, &stack, 4002).await;
    b.shutdown().await;
    a.shutdown().await;
    stack.cleanup().await;
}

async fn redelivered_messages_change_nothing(mq: Mq) {
    let stack = Stack::new(mq).await;
    let components = stack.components().await;
    let broker = components.broker.clone();
    let s = Server::start_with(settings(), setup(), components).await;
    assert_eq!(s.prewarm(activity(4003, 200)).await.0, 200);
    let sold = sell(&s, 4003, 1..=200).await;
    s.wait_orders_within(4003, 200, DELIVERY).await;
    let before: HashMap<String, seckill_orders::Order> = {
        let mut m = HashMap::new();
        for (_, _, b) in &sold {
            let id = b["data"]["order_id"].as_str().unwrap();
            m.insert(id.to_owned(), stack.orders.get(id).await.unwrap().unwrap());
        }
        m
    };
    // The same sales again, as a broker redelivers after lost acknowledgements.
    let again: Vec<Envelope> = before
        .values()
        .map(|o| {
            Envelope::new(
                format!("oc-{}", o.order_id),
                Message::OrderCreated(OrderCreated {
                    order_id: o.order_id.clone(),
                    product_id: o.product_id,
                    user_id: o.user_id,
                    quantity: o.quantity,
                    price_cents: o.price_cents,
                    sold_at_ms: o.sold_at_ms,
                    epoch: o.epoch,
                }),
            )
        })
        .collect();
    broker.publish_batch(&again).await.unwrap();
    broker.publish_batch(&again[..50]).await.unwrap();
    wait_broker_drained(&*broker, Topic::OrderCreated, ORDER_SERVICE_GROUP).await;
    let rows = stack.orders.counts(4003, 1).await.unwrap();
    assert_eq!(rows.orders, 200, "no duplicate row");
    for (id, o) in &before {
        assert_eq!(
            &stack.orders.get(id).await.unwrap().unwrap(),
            o,
            "row unchanged"
        );
    }
    assert_ledger(&s, &stack, 4003).await;

    // An asynchronous purchase redelivered is executed at most once: the replay answers the
    // first result and sells nothing more.
    assert_eq!(s.prewarm(activity(4013, 5)).await.0, 200);
    let (st, v) = s
        .post(
            "/api/v1/seckill/purchase/async",
            json!({"product_id": 4013, "user_id": 77, "quantity": 1}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let id = v["data"]["request_id"].as_str().unwrap().to_owned();
    let first = wait_result(&s, &id).await;
    assert_eq!(first["status"], "success", "{first}");
    let request = seckill_inventory::PurchaseRequest {
        product_id: 4013,
        user_id: 77,
        quantity: 1,
        idempotency_key: None,
    };
    let again = seckill_service::purchase_requested(&id, &request);
    broker.publish_batch(&[again.clone(), again]).await.unwrap();
    wait_broker_drained(&*broker, Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP).await;
    let st = s.wait_orders_within(4013, 1, DELIVERY).await;
    assert_eq!(
        (st["sold"].as_u64(), st["remaining_stock"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(
        wait_result(&s, &id).await,
        first,
        "the replay keeps the first answer"
    );
    assert_ledger(&s, &stack, 4013).await;
    s.shutdown().await;
    stack.cleanup().await;
}

macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod rabbitmq {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Mq::Rabbit).await;
                }
            )*
        }
        mod kafka {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Mq::Kafka).await;
                }
            )*
        }
    };
}

/// The same scenarios in embedded mode (in-process inventory, broker, order store and
/// results, shared by the test's instances): one code path, the same contract.
macro_rules! embedded {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Mq::Embedded).await;
                }
            )*
        }
    };
}

embedded!(
    ten_thousand_sales_become_ten_thousand_rows,
    a_crashed_pipeline_loses_and_duplicates_nothing,
    redelivered_messages_change_nothing,
    async_purchases_are_answered_by_any_instance,
    unpaid_orders_expire_and_their_items_sell_again,
);

on_both_brokers!(
    ten_thousand_sales_become_ten_thousand_rows,
    a_crashed_pipeline_loses_and_duplicates_nothing,
    redelivered_messages_change_nothing,
    async_purchases_are_answered_by_any_instance,
    unpaid_orders_expire_and_their_items_sell_again,
    a_ten_second_broker_outage_delays_orders_and_loses_none,
);

/// The broker cut off for 10 s in the middle of a sale (a proxy drops every connection and
/// refuses new ones): purchases keep succeeding into the outbox, and every order arrives
/// after the broker comes back.
async fn a_ten_second_broker_outage_delays_orders_and_loses_none(mq: Mq) {
    let stack = Stack::with_proxy(mq).await;
    let s = Server::start_with(settings(), setup(), stack.components().await).await;
    assert_eq!(s.prewarm(activity(4006, 2_000)).await.0, 200);
    sell(&s, 4006, 1..=1_000).await;
    let proxy = stack.proxy.as_ref().unwrap();
    proxy.down();
    let down_at = tokio::time::Instant::now();
    sell(&s, 4006, 1_001..=2_000).await;
    let st = s.stats(4006).await;
    assert_eq!(
        st["remaining_stock"], 0,
        "sales went on without the broker: {st}"
    );
    // The outage lasts 10 s whatever the sale's pace: that is the scenario, not a wait for
    // something to happen.
    tokio::time::sleep_until(down_at + Duration::from_secs(10)).await;
    let during = s.stats(4006).await;
    assert!(
        during["orders_created"].as_u64().unwrap() < 2_000,
        "the outage held orders back: {during}"
    );
    proxy.up();
    s.wait_orders_within(4006, 2_000, DELIVERY).await;
    assert_eq!(stack.orders.counts(4006, 1).await.unwrap().orders, 2_000);
    assert_ledger(&s, &stack, 4006).await;
    s.shutdown().await;
    stack.cleanup().await;
}

async fn async_purchases_are_answered_by_any_instance(mq: Mq) {
    let stack = Stack::new(mq).await;
    let a = Server::start_with(settings(), setup(), stack.components().await).await;
    let b = Server::start_with(settings(), setup(), stack.components().await).await;
    assert_eq!(a.prewarm(activity(4004, 3_000)).await.0, 200);
    let accepted = drive(
        &a,
        "/api/v1/seckill/purchase/async",
        4004,
        (1..=5_000).collect(),
        64,
    )
    .await;
    assert!(
        accepted.iter().all(|(_, st, _)| *st == 202),
        "{:?}",
        accepted.iter().find(|(_, st, _)| *st != 202)
    );
    let ids: Vec<String> = accepted
        .iter()
        .map(|(_, _, v)| v["data"]["request_id"].as_str().unwrap().to_owned())
        .collect();
    // Polled on the other instance until every request has its answer.
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let mut open: Vec<&String> = ids.iter().collect();
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while !open.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} requests still pending",
            open.len()
        );
        let mut still = Vec::new();
        for id in open {
            let (st, v) = b.get(&format!("/api/v1/seckill/result/{id}")).await;
            assert_eq!(st, 200, "{v}");
            match v["data"]["status"].as_str().unwrap() {
                "pending" => still.push(id),
                "success" => *outcomes.entry("success".into()).or_default() += 1,
                "failed" => {
                    *outcomes
                        .entry(format!("failed {}", v["data"]["code"]))
                        .or_default() += 1
                }
                other => panic!("unexpected status {other}"),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(outcomes.get("success"), Some(&3_000), "{outcomes:?}");
    assert_eq!(
        outcomes.get("failed 40901"),
        Some(&2_000),
        "the rest are sold out: {outcomes:?}"
    );
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let st = a.wait_orders_within(4004, 3_000, DELIVERY).await;
    assert_eq!(
        (st["sold"].as_u64(), st["remaining_stock"].as_u64()),
        (Some(3_000), Some(0))
    );
    assert_ledger(&b, &stack, 4004).await;
    a.shutdown().await;
    b.shutdown().await;
    stack.cleanup().await;
}

async fn unpaid_orders_expire_and_their_items_sell_again(mq: Mq) {
    let stack = Stack::new(mq).await;
    let mut setup = setup();
    setup.orders.payment_timeout = Duration::from_secs(3);
    let s = Server::start_with(settings(), setup, stack.components().await).await;
    assert_eq!(s.prewarm(activity(4005, 20)).await.0, 200);
    let sold = sell(&s, 4005, 1..=20).await;
    let order_of: HashMap<u64, String> = sold
        .iter()
        .map(|(u, _, b)| (*u, b["data"]["order_id"].as_str().unwrap().to_owned()))
        .collect();
    s.wait_orders_within(4005, 20, DELIVERY).await;
    let path = |u: u64, action: &str| format!("/api/v1/seckill/orders/{}/{action}", order_of[&u]);
    for u in 1..=5 {
        let (st, v) = s.post(&path(u, "pay"), json!({})).await;
        assert_eq!(
            (st, v["data"]["status"].as_str()),
            (200, Some("paid")),
            "{v}"
        );
    }
    // Paying twice answers the paid order; a paid order cannot be cancelled.
    assert_eq!(s.post(&path(1, "pay"), json!({})).await.0, 200);
    let (st, v) = s.post(&path(1, "cancel"), json!({})).await;
    assert_eq!((st, v["code"].as_i64()), (409, Some(40906)), "{v}");
    // The buyer cancels: the item is back on sale at once, and the order cannot be paid.
    let (st, v) = s.post(&path(6, "cancel"), json!({})).await;
    assert_eq!(
        (st, v["data"]["status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    assert_eq!(s.stats(4005).await["remaining_stock"], 1);
    let (st, v) = s.post(&path(6, "pay"), json!({})).await;
    assert_eq!((st, v["code"].as_i64()), (409, Some(40905)), "{v}");
    // The other 14 are never paid: the sweeper cancels them after the deadline.
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        let st = s.stats(4005).await;
        if st["remaining_stock"] == 15 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unpaid orders never expired: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for u in 7..=20 {
        let o = stack.orders.get(&order_of[&u]).await.unwrap().unwrap();
        assert_eq!(o.status, seckill_orders::OrderStatus::Cancelled);
        assert!(o.stock_returned);
        let (st, v) = s.post(&path(u, "pay"), json!({})).await;
        assert_eq!(st, 409, "{v}");
    }
    // The returned items sell again, to other buyers, and exactly those.
    let second = drive(
        &s,
        "/api/v1/seckill/purchase",
        4005,
        (101..=130).collect(),
        16,
    )
    .await;
    let won: Vec<&(u64, u16, Value)> = second.iter().filter(|(_, st, _)| *st == 200).collect();
    assert_eq!(won.len(), 15);
    assert!(
        second
            .iter()
            .filter(|(_, st, _)| *st != 200)
            .all(|(_, st, v)| *st == 409 && v["code"] == 40901)
    );
    s.wait_orders_within(4005, 35, DELIVERY).await;
    // Pay and cancel at the same instant on each new order: exactly one wins.
    for (_, _, b) in &won {
        let id = b["data"]["order_id"].as_str().unwrap();
        let (pay, cancel) = (
            format!("/api/v1/seckill/orders/{id}/pay"),
            format!("/api/v1/seckill/orders/{id}/cancel"),
        );
        let (p, c) = tokio::join!(s.post(&pay, json!({})), s.post(&cancel, json!({})));
        assert!(
            (p.0 == 200) ^ (c.0 == 200),
            "order {id}: pay {} cancel {} — exactly one must win",
            p.0,
            c.0
        );
        let o = stack.orders.get(id).await.unwrap().unwrap();
        let expected = if p.0 == 200 { "paid" } else { "cancelled" };
        assert_eq!(serde_json::to_value(o.status).unwrap(), expected);
    }
    assert_ledger(&s, &stack, 4005).await;
    s.shutdown().await;
    stack.cleanup().await;
}

/// PostgreSQL unreachable for 5 s during a sale — far longer than the broker's delivery
/// attempts take with backoff: the order service holds and retries what it has, nothing is
/// dead-lettered, and every order is stored once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_dead_letters_nothing() {
    let stack = Stack::with_db_proxy(Mq::Rabbit).await;
    let s = Server::start_with(settings(), setup(), stack.components().await).await;
    assert_eq!(s.prewarm(activity(4007, 1_000)).await.0, 200);
    sell(&s, 4007, 1..=500).await;
    s.wait_orders_within(4007, 500, DELIVERY).await;
    let db = stack.db_proxy.as_ref().unwrap();
    db.down();
    let down_at = tokio::time::Instant::now();
    // The stock is in Redis: selling goes on without the database.
    sell(&s, 4007, 501..=1_000).await;
    tokio::time::sleep_until(down_at + Duration::from_secs(5)).await;
    db.up();
    s.wait_orders_within(4007, 1_000, DELIVERY).await;
    assert_eq!(stack.orders.counts(4007, 1).await.unwrap().orders, 1_000);
    assert_eq!(stack.order_dead_letters().await, 0, "no sale dead-lettered");
    assert_ledger(&s, &stack, 4007).await;
    s.shutdown().await;
    stack.cleanup().await;
}
