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
    async fn live_orders(&self, product_id: u64, epoch: u64) -> Result<Vec<Order>, OrderError> {
        self.inner.live_orders(product_id, epoch).await
    }
    async fn last_epoch(&self, product_id: u64) -> Result<Option<u64>, OrderError> {
        self.inner.last_epoch(product_id).await
    }
    async fn void_before(&self, product_id: u64, epoch: u64, now: i64) -> Result<u64, OrderError> {
        self.inner.void_before(product_id, epoch, now).await
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

/// Runs a consumer over `store` until `done` holds of it (paused time), then stops it.
async fn consume_until<S: OrderStore>(
    store: Arc<S>,
    broker: Arc<MemoryBroker>,
    timeout: Duration,
    done: impl Fn(&MemoryBroker) -> bool,
) {
    let sub = broker
        .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let consumer = OrderConsumer::new(store, broker.clone()).with_payment_timeout(timeout);
    let task = tokio::spawn(consumer.run(sub, stop.clone()));
    let b = broker.clone();
    seckill_test_support::eventually(
        Duration::from_secs(30),
        Duration::from_millis(10),
        "the consumer's work",
        || {
            let ok = done(&b);
            async move { ok.then_some(()) }
        },
    )
    .await;
    stop.cancel();
    task.await.unwrap();
}

fn groups() -> Arc<MemoryBroker> {
    Arc::new(MemoryBroker::with_groups(vec![(
        Topic::OrderCreated,
        ORDER_SERVICE_GROUP.to_owned(),
    )]))
}

fn sale_of(n: u64, user_id: u64, quantity: u32) -> Envelope {
    let mut e = sale(n);
    if let Message::OrderCreated(oc) = &mut e.message {
        oc.user_id = user_id;
        oc.quantity = quantity;
    }
    e.id = format!("{}-u{user_id}", e.id);
    e
}

#[tokio::test]
async fn another_sale_under_a_stored_id_is_an_alarm_not_a_duplicate() {
    let broker = groups();
    let store = Arc::new(MemoryOrderStore::new());
    // 1001-1 sold to 2001 and stored; then a different sale claims 1001-1 (as after a reset
    // order sequence), beside a true redelivery of 1001-2 and a new 1001-3.
    broker.publish(&sale(1)).await.unwrap();
    broker.publish(&sale(2)).await.unwrap();
    broker
        .publish_batch(&[sale_of(1, 9999, 1), sale(2), sale(3)])
        .await
        .unwrap();
    consume_until(
        store.clone(),
        broker.clone(),
        Duration::from_secs(60),
        |b| {
            !b.dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP)
                .is_empty()
        },
    )
    .await;
    let dead = broker.dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP);
    assert_eq!(dead.len(), 1, "only the conflicting sale is dead-lettered");
    assert_eq!(dead[0].id, "oc-1001-1-u9999");
    let kept = store.get("1001-1").await.unwrap().unwrap();
    assert_eq!(kept.user_id, 2001, "the stored order is untouched");
    assert_eq!(store.counts(1001, 1).await.unwrap().orders, 3);
    assert_eq!(
        broker
            .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
            .unwrap(),
        Some(0),
        "the redelivery and the new sale are acknowledged"
    );
}

#[tokio::test]
async fn the_payment_deadline_runs_from_when_the_order_is_stored() {
    let broker = groups();
    let store = Arc::new(MemoryOrderStore::new());
    // Sold long ago (sold_at_ms 1): a pipeline that was down for hours delivers it now.
    broker.publish(&sale(1)).await.unwrap();
    let s = store.clone();
    consume_until(store.clone(), broker, Duration::from_secs(60), move |_| {
        !s.all().is_empty()
    })
    .await;
    let o = store.get("1001-1").await.unwrap().unwrap();
    assert_eq!(o.expires_at_ms, o.created_at_ms + 60_000);
    let now = store.now_ms().await.unwrap();
    assert!(o.expires_at_ms > now, "still payable when it arrives");
    assert!(store.due(now, 10).await.unwrap().is_empty(), "not swept");
    assert!(matches!(
        store.pay("1001-1", now).await.unwrap(),
        Transition::Done(_)
    ));
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use seckill_orders::{OrdersConfig, PgOrderStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_violation_is_dead_lettered_and_its_batch_neighbours_are_stored() {
        let settings = OrdersConfig {
            schema: Some(seckill_test_support::unique("t")),
            ..OrdersConfig::default()
        };
        let store = Arc::new(PgOrderStore::connect(&settings).await.unwrap());
        let broker = groups();
        // Ten sales in one batch; the fifth has quantity 0, which the table's CHECK refuses.
        let batch: Vec<Envelope> = (1..=10)
            .map(|n| if n == 5 { sale_of(5, 2005, 0) } else { sale(n) })
            .collect();
        broker.publish_batch(&batch).await.unwrap();
        consume_until(
            store.clone(),
            broker.clone(),
            Duration::from_secs(60),
            |b| {
                !b.dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP)
                    .is_empty()
            },
        )
        .await;
        let dead = broker.dead_letters(Topic::OrderCreated, ORDER_SERVICE_GROUP);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, "oc-1001-5-u2005");
        assert_eq!(store.counts(1001, 1).await.unwrap().orders, 9);
        assert_eq!(store.get("1001-5").await.unwrap(), None);
        // The store's refusal is permanent; its SQLSTATE is kept.
        let bad = Order {
            quantity: 0,
            ..store.get("1001-4").await.unwrap().unwrap()
        };
        let bad = Order {
            order_id: "1001-99".into(),
            ..bad
        };
        match store.insert(&bad).await {
            Err(e @ OrderError::Rejected { .. }) => {
                assert!(e.is_permanent());
                assert!(e.to_string().contains("23514"), "{e}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        // The deadline is on the database's clock.
        let o = store.get("1001-1").await.unwrap().unwrap();
        assert_eq!(o.expires_at_ms, o.created_at_ms + 60_000);
        let now = store.now_ms().await.unwrap();
        assert!((now - seckill_orders::now_ms()).abs() < 60_000);
        store.drop_schema().await.unwrap();
    }
}
