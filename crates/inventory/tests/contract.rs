//! The `Inventory` contract, run against every backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, CancelOutcome, Inventory, InventoryError, MemoryInventory, OrderId,
    PrewarmOutcome, PurchaseOutcome, PurchaseRequest, RecordedOrder, RecordedSale,
};

fn activity(product_id: u64, stock: u64) -> Activity {
    let now = Utc::now();
    Activity {
        product_id,
        product_name: "iPhone 15 Pro".into(),
        price_cents: 899_900,
        stock,
        start_time: now - Span::minutes(1),
        end_time: now + Span::hours(1),
        status: ActivityStatus::Active,
        per_user_limit: 1,
    }
}

/// Breaks one field of an activity.
type Breaker = fn(&mut Activity);

fn buy(product_id: u64, user_id: u64, quantity: u32) -> PurchaseRequest {
    PurchaseRequest {
        product_id,
        user_id,
        quantity,
        idempotency_key: None,
    }
}

async fn prewarm(inv: &dyn Inventory, a: &Activity) {
    let out = inv.prewarm(a, false).await.expect("prewarm");
    assert!(
        matches!(
            out,
            PrewarmOutcome::Created { .. } | PrewarmOutcome::Replaced { .. }
        ),
        "{out:?}"
    );
}

async fn sell(inv: &dyn Inventory, product_id: u64, user_id: u64) -> OrderId {
    match inv.purchase(&buy(product_id, user_id, 1)).await.unwrap() {
        PurchaseOutcome::Success { order_id, .. } => order_id,
        other => panic!("expected a sale, got {other:?}"),
    }
}

async fn purchase_outcomes_follow_the_script(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    prewarm(inv, &activity(1001, 2)).await;
    let first = inv.purchase(&buy(1001, 1, 1)).await.unwrap();
    let PurchaseOutcome::Success {
        order_id,
        remaining_stock,
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(remaining_stock, 1);
    assert_eq!(order_id.product_id, 1001);
    // The buyer's purchase again (resent, retried): their order, not a second sale.
    assert_eq!(
        inv.purchase(&buy(1001, 1, 1)).await.unwrap(),
        PurchaseOutcome::Success {
            order_id,
            remaining_stock: 1
        }
    );
    assert!(inv.purchase(&buy(1001, 2, 1)).await.unwrap().is_success());
    assert_eq!(
        inv.purchase(&buy(1001, 3, 1)).await.unwrap(),
        PurchaseOutcome::SoldOut { remaining_stock: 0 }
    );
    // A repeat buyer of a sold-out product gets their order, not "sold out".
    assert!(inv.purchase(&buy(1001, 2, 1)).await.unwrap().is_success());
    assert_eq!(
        inv.purchase(&buy(4242, 1, 1)).await.unwrap(),
        PurchaseOutcome::UnknownProduct
    );
    assert_eq!(
        inv.purchase_of(1001, 1)
            .await
            .unwrap()
            .map(|o| o.product_id),
        Some(1001)
    );
    assert_eq!(inv.purchase_of(1001, 3).await.unwrap(), None);
    assert_eq!(inv.purchase_of(4242, 1).await.unwrap(), None);
}

async fn quantity_is_checked_against_the_per_user_limit(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let mut a = activity(1002, 10);
    a.per_user_limit = 3;
    prewarm(inv, &a).await;
    for q in [0, 4] {
        assert_eq!(
            inv.purchase(&buy(1002, 7, q)).await.unwrap(),
            PurchaseOutcome::InvalidQuantity { max: 3 }
        );
    }
    let out = inv.purchase(&buy(1002, 7, 3)).await.unwrap();
    assert!(
        matches!(
            out,
            PurchaseOutcome::Success {
                remaining_stock: 7,
                ..
            }
        ),
        "{out:?}"
    );
    // Fewer left than asked for is "sold out" with the remaining count.
    let mut b = activity(1003, 2);
    b.per_user_limit = 3;
    prewarm(inv, &b).await;
    assert_eq!(
        inv.purchase(&buy(1003, 8, 3)).await.unwrap(),
        PurchaseOutcome::SoldOut { remaining_stock: 2 }
    );
    let st = inv.stats(1003).await.unwrap().unwrap();
    assert_eq!((st.remaining_stock, st.sold, st.buyers), (2, 0, 0));
}

async fn time_window_and_status_are_enforced(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let now = Utc::now();
    let mut early = activity(1004, 5);
    early.start_time = now + Span::hours(1);
    early.end_time = now + Span::hours(2);
    prewarm(inv, &early).await;
    assert_eq!(
        inv.purchase(&buy(1004, 1, 1)).await.unwrap(),
        PurchaseOutcome::NotStarted
    );
    let mut late = activity(1005, 5);
    late.start_time = now - Span::hours(2);
    late.end_time = now - Span::hours(1);
    prewarm(inv, &late).await;
    assert_eq!(
        inv.purchase(&buy(1005, 1, 1)).await.unwrap(),
        PurchaseOutcome::Ended
    );
    let mut off = activity(1006, 5);
    off.status = ActivityStatus::Inactive;
    prewarm(inv, &off).await;
    assert_eq!(
        inv.purchase(&buy(1006, 1, 1)).await.unwrap(),
        PurchaseOutcome::Inactive
    );
    for p in [1004, 1005, 1006] {
        let st = inv.stats(p).await.unwrap().unwrap();
        assert_eq!(
            (st.remaining_stock, st.sold, st.buyers),
            (5, 0, 0),
            "product {p}"
        );
    }
}

async fn prewarm_is_idempotent_and_guards_a_started_sale(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let now = Utc::now();
    let mut future = activity(1007, 5);
    future.start_time = now + Span::hours(1);
    future.end_time = now + Span::hours(2);
    let PrewarmOutcome::Created { epoch: e1 } = inv.prewarm(&future, false).await.unwrap() else {
        panic!("first prewarm creates")
    };
    assert_eq!(
        inv.prewarm(&future, false).await.unwrap(),
        PrewarmOutcome::Unchanged { epoch: e1 }
    );
    // Not started yet: a different activity replaces it without force.
    future.stock = 8;
    let PrewarmOutcome::Replaced { epoch: e2 } = inv.prewarm(&future, false).await.unwrap() else {
        panic!("replace before the start")
    };
    assert!(e2 > e1);
    assert_eq!(inv.stats(1007).await.unwrap().unwrap().initial_stock, 8);

    let started = activity(1008, 3);
    prewarm(inv, &started).await;
    sell(inv, 1008, 1).await;
    let keyed = PurchaseRequest {
        idempotency_key: Some("k-2".into()),
        ..buy(1008, 2, 1)
    };
    let PurchaseOutcome::Success {
        order_id: first_of_2,
        ..
    } = inv.purchase(&keyed).await.unwrap()
    else {
        panic!("user 2 buys")
    };
    let mut changed = started.clone();
    changed.stock = 100;
    assert_eq!(
        inv.prewarm(&changed, false).await.unwrap(),
        PrewarmOutcome::SaleStarted
    );
    let st = inv.stats(1008).await.unwrap().unwrap();
    assert_eq!((st.initial_stock, st.remaining_stock, st.buyers), (3, 1, 2));
    // The same activity again is still fine after the start.
    assert!(matches!(
        inv.prewarm(&started, false).await.unwrap(),
        PrewarmOutcome::Unchanged { .. }
    ));
    // Forced: a new epoch with fresh stock and buyers; order ids never repeat.
    let PrewarmOutcome::Replaced { epoch } = inv.prewarm(&changed, true).await.unwrap() else {
        panic!("forced replace")
    };
    let st = inv.stats(1008).await.unwrap().unwrap();
    assert_eq!(st.epoch, epoch);
    assert_eq!(
        (st.initial_stock, st.remaining_stock, st.buyers),
        (100, 100, 0)
    );
    assert_eq!(inv.purchase_of(1008, 1).await.unwrap(), None);
    // A retry of the earlier epoch's keyed purchase gets its first answer, not a new sale.
    match inv.purchase(&keyed).await.unwrap() {
        PurchaseOutcome::Success { order_id, .. } => assert_eq!(order_id, first_of_2),
        other => panic!("the earlier key bought again: {other:?}"),
    }
    assert_eq!(inv.stats(1008).await.unwrap().unwrap().remaining_stock, 100);
    let again = sell(inv, 1008, 1).await;
    assert!(
        again.seq > first_of_2.seq,
        "order ids stay unique across epochs"
    );
}

async fn invalid_activities_change_nothing(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let good = activity(1009, 5);
    let cases: [(&str, Breaker); 5] = [
        ("product_id", |a| a.product_id = 0),
        ("product_name", |a| a.product_name = "  ".into()),
        ("stock", |a| a.stock = u64::MAX),
        ("end_time", |a| a.end_time = a.start_time),
        ("per_user_limit", |a| a.per_user_limit = 0),
    ];
    for (field, break_it) in cases {
        let mut a = good.clone();
        break_it(&mut a);
        match inv.prewarm(&a, true).await {
            Err(InventoryError::InvalidActivity { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidActivity, got {other:?}"),
        }
    }
    assert!(inv.stats(1009).await.unwrap().is_none());
}

async fn idempotency_keys_return_the_first_answer(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let mut two = activity(1010, 5);
    two.per_user_limit = 2;
    prewarm(inv, &two).await;
    let req = PurchaseRequest {
        idempotency_key: Some("retry-abc".into()),
        ..buy(1010, 5, 1)
    };
    let first = inv.purchase(&req).await.unwrap();
    assert!(first.is_success());
    assert_eq!(inv.purchase(&req).await.unwrap(), first);
    // Another key of the same buyer: their order again, never a second sale; another
    // quantity is a different purchase, already made.
    let other_key = PurchaseRequest {
        idempotency_key: Some("another".into()),
        ..buy(1010, 5, 1)
    };
    assert!(inv.purchase(&other_key).await.unwrap().is_success());
    let other_quantity = PurchaseRequest {
        idempotency_key: Some("third".into()),
        ..buy(1010, 5, 2)
    };
    assert_eq!(
        inv.purchase(&other_quantity).await.unwrap(),
        PurchaseOutcome::AlreadyBought
    );
    let st = inv.stats(1010).await.unwrap().unwrap();
    assert_eq!((st.sold, st.buyers), (1, 1));
    assert_eq!(inv.outbox_len().await.unwrap(), 1);
    // The same key with another quantity is not that request: refused, nothing sold.
    let mut limit_two = activity(1012, 5);
    limit_two.per_user_limit = 2;
    prewarm(inv, &limit_two).await;
    let one = PurchaseRequest {
        idempotency_key: Some("k-1".into()),
        ..buy(1012, 5, 1)
    };
    let first = inv.purchase(&one).await.unwrap();
    assert!(first.is_success());
    let two = PurchaseRequest {
        quantity: 2,
        ..one.clone()
    };
    assert_eq!(
        inv.purchase(&two).await.unwrap(),
        PurchaseOutcome::KeyReused
    );
    assert_eq!(
        inv.purchase(&one).await.unwrap(),
        first,
        "the first answer stands"
    );
    let st = inv.stats(1012).await.unwrap().unwrap();
    assert_eq!((st.sold, st.remaining_stock), (1, 4));
}

async fn cancel_returns_stock_and_buyer_once(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    prewarm(inv, &activity(1011, 1)).await;
    let order = sell(inv, 1011, 9).await;
    assert_eq!(
        inv.purchase(&buy(1011, 10, 1)).await.unwrap(),
        PurchaseOutcome::SoldOut { remaining_stock: 0 }
    );
    assert_eq!(
        inv.cancel(order).await.unwrap(),
        CancelOutcome::Cancelled {
            quantity: 1,
            remaining_stock: 1
        }
    );
    assert_eq!(
        inv.cancel(order).await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(inv.purchase_of(1011, 9).await.unwrap(), None);
    let st = inv.stats(1011).await.unwrap().unwrap();
    assert_eq!(
        (st.remaining_stock, st.sold, st.buyers, st.cancelled),
        (1, 0, 0, 1)
    );
    // The item sells again, to someone else.
    sell(inv, 1011, 10).await;
    assert_eq!(
        inv.cancel(OrderId {
            product_id: 1011,
            seq: 999_999
        })
        .await
        .unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        inv.cancel(OrderId {
            product_id: 4243,
            seq: 1
        })
        .await
        .unwrap(),
        CancelOutcome::NotFound
    );
}

/// `inv` must offer an unacknowledged claim again at once (a zero reclaim timeout).
async fn outbox_holds_each_sale_until_acknowledged(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    prewarm(inv, &activity(1012, 10)).await;
    let mut sold = HashSet::new();
    for user in 1..=3 {
        sold.insert(sell(inv, 1012, user).await);
    }
    assert_eq!(inv.stats(1012).await.unwrap().unwrap().outbox_pending, 3);
    let batch = inv
        .outbox_read(10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        batch
            .iter()
            .map(|e| e.record.order_id)
            .collect::<HashSet<_>>(),
        sold
    );
    for e in &batch {
        assert_eq!(e.record.product_id, 1012);
        assert_eq!(e.record.quantity, 1);
        assert_eq!(e.record.price_cents, 899_900);
    }
    // Not acknowledged: offered again (the relay that claimed it may have died).
    let again = inv
        .outbox_read(10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    inv.outbox_ack(&batch.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(inv.outbox_len().await.unwrap(), 0);
    assert_eq!(inv.stats(1012).await.unwrap().unwrap().outbox_pending, 0);
    assert!(
        inv.outbox_read(10, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// 50 tasks × 2,000 attempts from 1,000 users on stock 100.
async fn concurrent_buyers_never_oversell(inv: Arc<dyn Inventory>) {
    prewarm(&*inv, &activity(1013, 100)).await;
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..2_000u64 {
                let user = (t * 2_000 + i) % 1_000 + 1;
                if let PurchaseOutcome::Success { order_id, .. } =
                    inv.purchase(&buy(1013, user, 1)).await.unwrap()
                {
                    won.push((user, order_id));
                }
            }
            won
        }));
    }
    let mut wins = HashSet::new();
    for t in tasks {
        wins.extend(t.await.unwrap());
    }
    // A buyer's later attempts answer their order again: one order per winner.
    assert_eq!(wins.len(), 100, "exactly the stock is sold");
    let users: HashSet<u64> = wins.iter().map(|w| w.0).collect();
    assert_eq!(users.len(), 100, "no user buys twice");
    let st = inv.stats(1013).await.unwrap().unwrap();
    assert_eq!((st.remaining_stock, st.sold, st.buyers), (0, 100, 100));
    let mut outbox = Vec::new();
    loop {
        let batch = inv
            .outbox_read(64, Duration::from_millis(10))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        inv.outbox_ack(&batch.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
            .await
            .unwrap();
        outbox.extend(batch.into_iter().map(|e| e.record));
    }
    let orders: HashSet<OrderId> = outbox.iter().map(|r| r.order_id).collect();
    assert_eq!(outbox.len(), 100);
    assert_eq!(orders.len(), 100, "distinct order ids");
    assert_eq!(orders, wins.iter().map(|w| w.1).collect::<HashSet<_>>());
}

/// A backend that holds nothing of product 1020 (it forgot it) gets the sale the order store
/// recorded: its epoch, its buyers and the stock they left.
async fn a_restore_continues_the_recorded_sale(inv: Arc<dyn Inventory>) {
    let inv = &*inv;
    let a = activity(1020, 10);
    let id = |seq| OrderId {
        product_id: 1020,
        seq,
    };
    let recorded = RecordedSale {
        epoch: 4,
        orders: vec![
            RecordedOrder {
                order_id: id(5),
                user_id: 1,
                quantity: 1,
            },
            RecordedOrder {
                order_id: id(7),
                user_id: 2,
                quantity: 1,
            },
        ],
    };
    let mut bad = a.clone();
    bad.stock = u64::MAX;
    assert!(matches!(
        inv.restore(&bad, &recorded).await,
        Err(InventoryError::InvalidActivity { field: "stock", .. })
    ));
    assert_eq!(
        inv.restore(&a, &recorded).await.unwrap(),
        PrewarmOutcome::Restored {
            epoch: 4,
            orders: 2,
            remaining_stock: 8
        }
    );
    assert_eq!(inv.purchase_of(1020, 1).await.unwrap(), Some(id(5)));
    assert!(matches!(
        inv.purchase(&buy(1020, 2, 1)).await.unwrap(),
        PurchaseOutcome::Success { order_id, remaining_stock: 8 } if order_id == id(7)
    ));
    let new = sell(inv, 1020, 3).await;
    assert!(new.seq > 7, "the sequence continues past the recorded ids");
    let st = inv.stats(1020).await.unwrap().unwrap();
    assert_eq!((st.epoch, st.remaining_stock, st.buyers), (4, 7, 3));
    assert!(matches!(
        inv.cancel(id(7)).await.unwrap(),
        CancelOutcome::Cancelled {
            quantity: 1,
            remaining_stock: 8
        }
    ));
    // Loaded now: a restore or the same prewarm changes nothing.
    assert_eq!(
        inv.restore(&a, &recorded).await.unwrap(),
        PrewarmOutcome::Unchanged { epoch: 4 }
    );
    assert_eq!(
        inv.prewarm(&a, false).await.unwrap(),
        PrewarmOutcome::Unchanged { epoch: 4 }
    );
    // A later activity continues the epochs.
    let mut next = a.clone();
    next.product_name = "next".into();
    assert_eq!(
        inv.prewarm(&next, true).await.unwrap(),
        PrewarmOutcome::Replaced { epoch: 5 }
    );
}

/// A backend under test, and what to clean up after it.
struct Backend {
    inventory: Arc<dyn Inventory>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<seckill_inventory::RedisInventory>>,
}

impl Backend {
    async fn cleanup(self) {
        #[cfg(feature = "redis")]
        if let Some(r) = self.redis {
            r.purge().await.expect("purge test keys");
        }
    }
}

fn memory() -> Backend {
    Backend {
        inventory: Arc::new(MemoryInventory::with_reclaim_after(Duration::ZERO)),
        #[cfg(feature = "redis")]
        redis: None,
    }
}

/// A Redis inventory under a unique prefix; an unclaimed outbox entry is offered again at once.
#[cfg(feature = "redis")]
async fn redis() -> Backend {
    let inv = Arc::new(redis_inventory(Duration::ZERO).await);
    Backend {
        inventory: inv.clone(),
        redis: Some(inv),
    }
}

#[cfg(feature = "redis")]
async fn redis_inventory(reclaim_after: Duration) -> seckill_inventory::RedisInventory {
    use seckill_inventory::{RedisConfig, RedisInventory};
    RedisInventory::connect(RedisConfig {
        host: "127.0.0.1".into(),
        pool_size: 4,
        // The machine is shared and loaded: a generous bound for the first connection.
        connect_timeout: Duration::from_secs(10),
        key_prefix: seckill_test_support::unique("test_inv"),
        reclaim_after,
        ..RedisConfig::default()
    })
    .await
    .expect("these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it")
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let backend = $make;
                        super::$name(backend.inventory.clone()).await;
                        backend.cleanup().await;
                    }
                };
            }

            case!(purchase_outcomes_follow_the_script);
            case!(quantity_is_checked_against_the_per_user_limit);
            case!(time_window_and_status_are_enforced);
            case!(prewarm_is_idempotent_and_guards_a_started_sale);
            case!(invalid_activities_change_nothing);
            case!(idempotency_keys_return_the_first_answer);
            case!(cancel_returns_stock_and_buyer_once);
            case!(outbox_holds_each_sale_until_acknowledged);
            case!(concurrent_buyers_never_oversell);
            case!(a_restore_continues_the_recorded_sale);
        }
    };
}

contract!(memory, super::memory());
#[cfg(feature = "redis")]
contract!(redis, super::redis().await);
