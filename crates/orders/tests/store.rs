//! The `OrderStore` contract, run against the in-process store and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;

use seckill_orders::{MemoryOrderStore, Order, OrderStatus, OrderStore, Transition};

const NOW: i64 = 1_800_000_000_000;

fn order(product: u64, n: u64, expires_at_ms: i64) -> Order {
    Order {
        order_id: format!("{product}-{n}"),
        product_id: product,
        user_id: 5000 + n,
        quantity: 1 + (n % 2) as u32,
        price_cents: 100,
        status: OrderStatus::AwaitingPayment,
        sold_at_ms: NOW - 1000,
        created_at_ms: NOW,
        expires_at_ms,
        updated_at_ms: NOW,
        stock_returned: false,
        epoch: 1,
    }
}

async fn inserts_are_idempotent_under_concurrency(store: Arc<dyn OrderStore>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = 0;
            for n in 1..=50 {
                if store.insert(&order(7, n, NOW + 60_000)).await.unwrap() {
                    new += 1;
                }
            }
            new
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 50, "each order id inserted exactly once");
    let c = store.counts(7, 1).await.unwrap();
    assert_eq!((c.orders, c.live_orders), (50, 50));
    assert_eq!(c.live_items, (1..=50u64).map(|n| 1 + n % 2).sum::<u64>());
    assert_eq!(store.counts(7, 2).await.unwrap().orders, 0, "per epoch");
    let o = store.get("7-3").await.unwrap().unwrap();
    assert_eq!(o, order(7, 3, NOW + 60_000));
    assert_eq!(store.get("7-51").await.unwrap(), None);
}

async fn pay_and_cancel_race_and_one_wins(store: Arc<dyn OrderStore>) {
    for n in 1..=40 {
        store.insert(&order(8, n, NOW + 60_000)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in 1..=40u64 {
        let (a, b) = (store.clone(), store.clone());
        let id = format!("8-{n}");
        let id2 = id.clone();
        tasks.push(tokio::spawn(async move {
            let (p, c) = tokio::join!(
                tokio::spawn(async move { a.pay(&id, NOW).await.unwrap() }),
                tokio::spawn(async move { b.cancel(&id2, NOW).await.unwrap() })
            );
            (p.unwrap(), c.unwrap())
        }));
    }
    let (mut paid, mut cancelled) = (0, 0);
    for (n, t) in tasks.into_iter().enumerate() {
        let (p, c) = t.await.unwrap();
        let winner = match (&p, &c) {
            (Transition::Done(o), Transition::Final(f)) => {
                assert_eq!(f.status, OrderStatus::Paid);
                paid += 1;
                o.status
            }
            (Transition::Final(f), Transition::Done(o)) => {
                assert_eq!(f.status, OrderStatus::Cancelled);
                cancelled += 1;
                o.status
            }
            other => panic!("order 8-{}: not exactly one winner: {other:?}", n + 1),
        };
        let stored = store.get(&format!("8-{}", n + 1)).await.unwrap().unwrap();
        assert_eq!(stored.status, winner);
    }
    assert_eq!(paid + cancelled, 40);
    let c = store.counts(8, 1).await.unwrap();
    assert_eq!(c.live_orders, paid);
    // Final states stay final.
    assert!(matches!(
        store.cancel("8-1", NOW).await.unwrap(),
        Transition::Final(_)
    ));
    assert_eq!(store.pay("8-999", NOW).await.unwrap(), Transition::NotFound);
}

async fn the_deadline_refuses_payment_and_the_sweeper_finds_what_is_due(
    store: Arc<dyn OrderStore>,
) {
    store.insert(&order(9, 1, NOW - 1)).await.unwrap(); // past its deadline
    store.insert(&order(9, 2, NOW + 60_000)).await.unwrap();
    store.insert(&order(9, 3, NOW - 5)).await.unwrap();
    let mut paid = order(9, 4, NOW - 10);
    paid.status = OrderStatus::Paid;
    store.insert(&paid).await.unwrap();
    assert!(matches!(
        store.pay("9-1", NOW).await.unwrap(),
        Transition::Expired(o) if o.status == OrderStatus::AwaitingPayment
    ));
    let due: Vec<String> = store
        .due(NOW, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(
        due,
        ["9-3", "9-1"],
        "unpaid past the deadline, oldest first"
    );
    assert_eq!(store.due(NOW, 1).await.unwrap().len(), 1, "limit");
    // Cancelled with the stock not returned yet stays due until marked.
    assert!(matches!(
        store.cancel("9-2", NOW).await.unwrap(),
        Transition::Done(_)
    ));
    let due: HashSet<String> = store
        .due(NOW, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(
        due,
        HashSet::from(["9-1".into(), "9-2".into(), "9-3".into()])
    );
    store.mark_stock_returned("9-2").await.unwrap();
    assert!(store.get("9-2").await.unwrap().unwrap().stock_returned);
    assert_eq!(store.due(NOW, 10).await.unwrap().len(), 2);
}

async fn batch_inserts_report_each_order_once(store: Arc<dyn OrderStore>) {
    store.insert(&order(10, 2, NOW)).await.unwrap();
    let batch = [
        order(10, 1, NOW),
        order(10, 2, NOW), // exists already
        order(10, 3, NOW),
        order(10, 1, NOW), // twice in the batch
    ];
    assert_eq!(
        store.insert_many(&batch).await.unwrap(),
        [true, false, true, false]
    );
    assert_eq!(store.counts(10, 1).await.unwrap().orders, 3);
    assert_eq!(store.insert_many(&batch).await.unwrap(), [false; 4]);
    assert_eq!(store.insert_many(&[]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(store.get("10-3").await.unwrap().unwrap(), order(10, 3, NOW));
}

async fn earlier_epochs_are_voided_and_live_orders_listed(store: Arc<dyn OrderStore>) {
    let at = |n: u64, epoch: u64| Order {
        epoch,
        ..order(11, n, NOW + 60_000)
    };
    for (n, epoch) in [(1, 1), (2, 1), (3, 1), (4, 2)] {
        store.insert(&at(n, epoch)).await.unwrap();
    }
    assert!(matches!(
        store.pay("11-2", NOW).await.unwrap(),
        Transition::Done(_)
    ));
    assert!(matches!(
        store.cancel("11-3", NOW).await.unwrap(),
        Transition::Done(_)
    ));
    assert_eq!(store.last_epoch(11).await.unwrap(), Some(2));
    assert_eq!(store.last_epoch(12).await.unwrap(), None);
    let mut live: Vec<String> = store
        .live_orders(11, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    live.sort();
    assert_eq!(
        live,
        ["11-1", "11-2"],
        "awaiting payment and paid, not cancelled"
    );
    // Epoch 2 replaced epoch 1: its unpaid order is void, the paid one stands.
    assert_eq!(store.void_before(11, 2, NOW).await.unwrap(), 1);
    let void = store.get("11-1").await.unwrap().unwrap();
    assert_eq!(
        (void.status, void.stock_returned),
        (OrderStatus::Cancelled, true)
    );
    assert_eq!(
        store.get("11-2").await.unwrap().unwrap().status,
        OrderStatus::Paid
    );
    assert_eq!(
        store.get("11-4").await.unwrap().unwrap().status,
        OrderStatus::AwaitingPayment
    );
    assert_eq!(store.void_before(11, 2, NOW).await.unwrap(), 0, "once");
    // Epoch 1's sales still on their way are stored void, one at a time or in a batch;
    // epoch 2's are not.
    store.insert(&at(5, 1)).await.unwrap();
    store.insert_many(&[at(6, 1), at(7, 2)]).await.unwrap();
    for (id, status, returned) in [
        ("11-5", OrderStatus::Cancelled, true),
        ("11-6", OrderStatus::Cancelled, true),
        ("11-7", OrderStatus::AwaitingPayment, false),
    ] {
        let o = store.get(id).await.unwrap().unwrap();
        assert_eq!((o.status, o.stock_returned), (status, returned), "{id}");
    }
    assert!(matches!(
        store.pay("11-5", NOW).await.unwrap(),
        Transition::Final(_)
    ));
    let mut due: Vec<String> = store
        .due(NOW + 120_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    due.sort();
    assert_eq!(
        due,
        ["11-3", "11-4", "11-7"],
        "the void orders need no sweep"
    );
    assert!(store.now_ms().await.unwrap() > 0);
}

macro_rules! contract {
    ($backend:ident, $make:expr, $cleanup:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn inserts_are_idempotent_under_concurrency() {
                let s = $make.await;
                super::inserts_are_idempotent_under_concurrency(s.clone()).await;
                ($cleanup)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch_inserts_report_each_order_once() {
                let s = $make.await;
                super::batch_inserts_report_each_order_once(s.clone()).await;
                ($cleanup)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn earlier_epochs_are_voided_and_live_orders_listed() {
                let s = $make.await;
                super::earlier_epochs_are_voided_and_live_orders_listed(s.clone()).await;
                ($cleanup)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pay_and_cancel_race_and_one_wins() {
                let s = $make.await;
                super::pay_and_cancel_race_and_one_wins(s.clone()).await;
                ($cleanup)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_deadline_refuses_payment_and_the_sweeper_finds_what_is_due() {
                let s = $make.await;
                super::the_deadline_refuses_payment_and_the_sweeper_finds_what_is_due(s.clone())
                    .await;
                ($cleanup)(s).await;
            }
        }
    };
}

contract!(
    memory,
    async { Arc::new(MemoryOrderStore::new()) as Arc<dyn OrderStore> },
    |_s: Arc<dyn OrderStore>| async {}
);

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use seckill_orders::{OrdersConfig, PgOrderStore};

    pub(crate) async fn store() -> Arc<PgOrderStore> {
        let settings = OrdersConfig {
            schema: Some(seckill_test_support::unique("t")),
            ..OrdersConfig::default()
        };
        Arc::new(PgOrderStore::connect(&settings).await.unwrap())
    }

    contract!(postgres, store(), |s: Arc<PgOrderStore>| async move {
        s.drop_schema().await.unwrap()
    });

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_apply_once_when_instances_start_together() {
        let first = store().await;
        let settings = OrdersConfig {
            schema: first.schema().map(str::to_owned),
            ..OrdersConfig::default()
        };
        let mut starts = Vec::new();
        for _ in 0..4 {
            let settings = settings.clone();
            starts.push(tokio::spawn(async move {
                PgOrderStore::connect(&settings).await.unwrap()
            }));
        }
        for s in starts {
            assert_eq!(s.await.unwrap().migrations().await.unwrap(), [1, 2, 3]);
        }
        first.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_are_leased_to_one_owner_and_only_it_commits() {
        use seckill_mq::{Lease, OffsetStore, PartitionKey};
        use std::time::Duration;
        let s = store().await;
        let key = PartitionKey {
            group: "order-service".into(),
            topic: "seckill.order.created".into(),
            partition: 3,
        };
        let long = Duration::from_secs(60);
        assert_eq!(s.lease(&key, "a", long).await.unwrap(), Lease::Fresh);
        assert_eq!(
            s.lease(&key, "b", long).await.unwrap(),
            Lease::HeldByAnother
        );
        assert!(s.commit(&key, "a", 42).await.unwrap());
        assert!(!s.commit(&key, "b", 7).await.unwrap());
        assert_eq!(s.position(&key).await.unwrap(), Some(42));
        assert_eq!(s.lease(&key, "a", long).await.unwrap(), Lease::Resume(42));
        // An expired lease is taken over; the old owner can no longer commit.
        assert_eq!(
            s.lease(&key, "a", Duration::ZERO).await.unwrap(),
            Lease::Resume(42)
        );
        assert_eq!(s.lease(&key, "b", long).await.unwrap(), Lease::Resume(42));
        assert!(!s.commit(&key, "a", 50).await.unwrap());
        s.release(&key, "b").await.unwrap();
        assert_eq!(s.lease(&key, "c", long).await.unwrap(), Lease::Resume(42));
        s.drop_schema().await.unwrap();
    }
}
