//! The order consumer over the in-process broker and store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use seckill_mq::{Broker, Envelope, MemoryBroker, Message, OrderCreated, Topic};
use seckill_orders::{
    MemoryOrderStore, ORDER_SERVICE_GROUP, Order, OrderConsumer, OrderCounts, OrderError,
    OrderStatus, OrderStore, Transition,
};
use tokio_util::sync::CancellationToken;

fn sale(n: u64) -> Envelope {
    Envelope::new(
        format!("oc-1001-{n}"),
        Message::OrderCreated(OrderCreated {
            order_id: format!("1001-{n}"),
            product_id: 1001,
            user_id: 2000 + n,
            quantity: 1,
            price_cents: 899_900,
            sold_at_ms: 1,
            epoch: 1,
        }),
    )
}

#[tokio::test]
async fn redelivered_sales_are_stored_once_and_followed_up() {
    let broker = Arc::new(MemoryBroker::new());
    let store = Arc::new(MemoryOrderStore::new());
    let mut results = broker
        .subscribe(Topic::PurchaseResult, "notify")
        .await
        .unwrap();
    let mut stock = broker
        .subscribe(Topic::StockChanged, "cache")
        .await
        .unwrap();
    let sub = broker
        .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(OrderConsumer::new(store.clone(), broker.clone()).run(sub, stop.clone()));
    for n in 1..=5 {
        broker.publish(&sale(n)).await.unwrap();
    }
    // The same messages again, as a broker redelivers after a lost ack.
    broker
        .publish_batch(&(1..=5).map(sale).collect::<Vec<_>>())
        .await
        .unwrap();
    for _ in 0..10 {
        let d = results.next().await.unwrap();
        assert!(d.envelope.id.starts_with("pr-1001-"));
        d.ack().await.unwrap();
        stock.next().await.unwrap().ack().await.unwrap();
    }
    assert_eq!(store.counts(1001, 1).await.unwrap().orders, 5);
    let o = store.get("1001-3").await.unwrap().unwrap();
    assert_eq!(
        (o.user_id, o.quantity, o.status),
        (2003, 1, OrderStatus::AwaitingPayment)
    );
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        broker
            .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
            .unwrap(),
        Some(0)
    );
}

/// A store that fails its first `failures` inserts (the database down), and refuses the
/// order `bad` for good (an invalid order).
struct Faulty {
    inner: MemoryOrderStore,
    failures: Mutex<u32>,
    bad: Option<&'static str>,
}

impl Faulty {
    fn new(failures: u32, bad: Option<&'static str>) -> Self {
        Self {
            inner: MemoryOrderStore::new(),
            failures: Mutex::new(failures),
            bad,
        }
    }
}

#[async_trait]
impl OrderStore for Faulty {
    async fn insert(&self, order: &Order) -> Result<bool, OrderError> {
        if self.bad == Some(order.order_id.as_str()) {
            return Err(OrderError::Invalid("refused".into()));
        }
        {
            let mut f = self.failures.lock();
            if *f > 0 {
                *f -= 1;
                return Err(OrderError::Store("database down".into()));
            }
        }
        self.inner.insert(order).await
    }
    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        self.inner.get(order_id).await
    }
    async fn counts(&self, product_id: u64, epoch: u64) -> Result<OrderCounts, OrderError> {
        self.inner.counts(product_id, epoch).await
    }
    async fn pay(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        self.inner.pay(order_id, now_ms).await
    }
    async fn cancel(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        self.inner.cancel(order_id, now_ms).await
    }
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, OrderError> {
        self.inner.due(now_ms, limit).await
    }
    async fn mark_stock_returned(&self, order_id: &str) -> Result<(), OrderError> {
        self.inner.mark_stock_returned(order_id).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_is_retried_until_the_order_is_stored() {
    let broker = Arc::new(MemoryBroker::new());
    let store = Arc::new(Faulty::new(10, None));
    let sub = broker
        .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(OrderConsumer::new(store.clone(), broker.clone()).run(sub, stop.clone()));
    broker.publish(&sale(1)).await.unwrap();
    // An outage longer than a broker's delivery attempts (10 failures, ~21 s of backoff in
    // paused time): the delivery is held and retried, never dead-lettered.
    for _ in 0..3000 {
        if store.counts(1001, 1).await.unwrap().orders == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.counts(1001, 1).await.unwrap().orders, 1);
    assert_eq!(*store.failures.lock(), 0);
    assert!(
        broker
            .dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .is_empty()
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_bad_message_does_not_hold_back_its_batch() {
    // The group declared, as the service does, so what is published before it subscribes waits.
    let broker = Arc::new(MemoryBroker::with_groups(vec![(
        Topic::OrderCreated,
        ORDER_SERVICE_GROUP.to_owned(),
    )]));
    let store = Arc::new(Faulty::new(0, Some("1001-5")));
    // Published before the consumer starts, so its first batch holds all ten.
    broker
        .publish_batch(&(1..=10).map(sale).collect::<Vec<_>>())
        .await
        .unwrap();
    let sub = broker
        .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(OrderConsumer::new(store.clone(), broker.clone()).run(sub, stop.clone()));
    for _ in 0..100 {
        if store.counts(1001, 1).await.unwrap().orders == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.counts(1001, 1).await.unwrap().orders, 9);
    assert_eq!(store.get("1001-5").await.unwrap(), None);
    // The bad one can never be stored: it is dead-lettered, not dropped and not retried forever.
    for _ in 0..100 {
        if !broker
            .dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dead = broker.dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "oc-1001-5");
    assert_eq!(
        broker
            .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
            .unwrap(),
        Some(0)
    );
    stop.cancel();
    task.await.unwrap();
}
