//! The Redis path's group commit and functions: a batch answers each request exactly as it
//! would be answered alone; a failed batch call fails each member as a backend fault; the
//! functions survive SCRIPT FLUSH and a restart with persistence, and come back after FUNCTION
//! FLUSH.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, Inventory, InventoryError, PurchaseOutcome, PurchaseRequest,
    RedisConfig, RedisInventory,
};
use seckill_test_support::{PrivateRedis, unique};

fn on_sale(product_id: u64, stock: u64, per_user_limit: u32) -> Activity {
    let now = Utc::now();
    Activity {
        product_id,
        product_name: "batch".into(),
        price_cents: 100,
        stock,
        start_time: now - Span::minutes(1),
        end_time: now + Span::hours(1),
        status: ActivityStatus::Active,
        per_user_limit,
    }
}

fn buy(product_id: u64, user_id: u64, quantity: u32, key: Option<&str>) -> PurchaseRequest {
    PurchaseRequest {
        product_id,
        user_id,
        quantity,
        idempotency_key: key.map(str::to_owned),
    }
}

fn config(port: u16) -> RedisConfig {
    RedisConfig {
        host: "127.0.0.1".into(),
        port,
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        key_prefix: unique("batch"),
        ..RedisConfig::default()
    }
}

async fn shared() -> RedisInventory {
    RedisInventory::connect(config(6379)).await.expect(
        "these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it",
    )
}

#[tokio::test]
async fn one_batch_answers_each_request_as_alone() {
    let inv = shared().await;
    inv.prewarm(&on_sale(8001, 3, 2), false).await.unwrap();
    // An earlier sale with a key, to be replayed inside the batch.
    let first = inv.purchase(&buy(8001, 1, 1, Some("k-1"))).await.unwrap();
    assert!(first.is_success());
    let batch = [
        buy(8001, 2, 1, None),        // a success
        buy(8001, 1, 1, None),        // user 1 holds a sale of 1: that order again
        buy(8001, 3, 1, None),        // two requests of the same buyer:
        buy(8001, 3, 1, None),        //   one sale, both answered with it
        buy(8001, 1, 1, Some("k-1")), // an idempotent replay
        buy(8001, 1, 2, Some("k-1")), // the same key, another quantity
        buy(8001, 4, 1, None),        // the last item: one of these two wins,
        buy(8001, 5, 1, None),        //   the other hears sold out
        buy(8001, 6, 3, None),        // above the per-user limit
        buy(8001, 1, 2, None),        // user 1 asks another quantity: already bought
    ];
    let out = inv.purchase_batch(8001, &batch).await.unwrap();
    assert_eq!(out.len(), batch.len());
    assert!(out[0].is_success(), "{out:?}");
    let order = |o: &PurchaseOutcome| match o {
        PurchaseOutcome::Success { order_id, .. } => *order_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(order(&out[1]), order(&first), "a resent purchase replays");
    assert!(out[2].is_success());
    assert_eq!(
        order(&out[3]),
        order(&out[2]),
        "one sale for the same buyer's two"
    );
    assert_eq!(out[9], PurchaseOutcome::AlreadyBought);
    assert_eq!(out[4], first, "the replay answers the first sale");
    assert_eq!(out[5], PurchaseOutcome::KeyReused);
    // Stock 3: user 1 took one before, users 2 and 3 one each now — nothing left.
    assert_eq!(out[6], PurchaseOutcome::SoldOut { remaining_stock: 0 });
    assert_eq!(out[7], PurchaseOutcome::SoldOut { remaining_stock: 0 });
    assert_eq!(out[8], PurchaseOutcome::InvalidQuantity { max: 2 });
    // Order ids are distinct and the books add up.
    let ids: Vec<_> = [&first, &out[0], &out[2]]
        .iter()
        .map(|o| match o {
            PurchaseOutcome::Success { order_id, .. } => *order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let st = inv.stats(8001).await.unwrap().unwrap();
    assert_eq!((st.sold, st.remaining_stock, st.buyers), (3, 0, 3));
    assert_eq!(inv.outbox_len().await.unwrap(), 3);
    inv.purge().await.unwrap();
}

#[tokio::test]
async fn the_last_item_goes_to_exactly_one_of_a_batch() {
    let inv = shared().await;
    inv.prewarm(&on_sale(8002, 1, 1), false).await.unwrap();
    let batch: Vec<_> = (1..=50).map(|u| buy(8002, u, 1, None)).collect();
    let out = inv.purchase_batch(8002, &batch).await.unwrap();
    assert_eq!(out.iter().filter(|o| o.is_success()).count(), 1);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, PurchaseOutcome::SoldOut { .. }))
            .count(),
        49
    );
    inv.purge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_purchases_share_calls_and_keep_their_answers() {
    let inv = Arc::new(shared().await);
    inv.prewarm(&on_sale(8003, 300, 1), false).await.unwrap();
    // 400 buyers, each trying twice at once: 300 sales, every buyer at most once.
    let mut tasks = Vec::new();
    for user in 1..=400u64 {
        for _ in 0..2 {
            let inv = inv.clone();
            tasks.push(tokio::spawn(async move {
                (user, inv.purchase(&buy(8003, user, 1, None)).await.unwrap())
            }));
        }
    }
    let mut sold: std::collections::HashMap<u64, std::collections::HashSet<_>> =
        std::collections::HashMap::new();
    for t in tasks {
        let (user, o) = t.await.unwrap();
        if let PurchaseOutcome::Success { order_id, .. } = o {
            sold.entry(user).or_default().insert(order_id);
        }
    }
    assert_eq!(sold.len(), 300, "exactly the stock");
    assert!(
        sold.values().all(|ids| ids.len() == 1),
        "never one buyer twice: a buyer's second try answers the same order"
    );
    let st = inv.stats(8003).await.unwrap().unwrap();
    assert_eq!((st.sold, st.remaining_stock, st.buyers), (300, 0, 300));
    inv.purge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_answers_outcome_unknown_and_the_retry_finds_the_sale() {
    let redis = PrivateRedis::start(&[]).await;
    let inv = Arc::new(
        RedisInventory::connect(RedisConfig {
            command_timeout: Duration::from_millis(300),
            ..config(redis.port)
        })
        .await
        .unwrap(),
    );
    inv.prewarm(&on_sale(8004, 100, 1), false).await.unwrap();
    redis.signal("STOP");
    let mut tasks = Vec::new();
    for user in 1..=20u64 {
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            inv.purchase(&buy(8004, user, 1, None)).await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            // Sent and timed out: it may run once Redis resumes — "unknown", never "failed".
            Err(e @ InventoryError::OutcomeUnknown) => assert!(e.is_backend_fault(), "{e}"),
            other => panic!("a stopped Redis answered {other:?}"),
        }
    }
    redis.signal("CONT");
    // The calls ran when Redis resumed: each buyer's retry finds their order, and the books
    // hold each sale once.
    let mut ids = std::collections::HashSet::new();
    for user in 1..=20u64 {
        let retried = seckill_test_support::eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            "a retry after Redis resumed",
            || {
                let inv = inv.clone();
                async move { inv.purchase(&buy(8004, user, 1, None)).await.ok() }
            },
        )
        .await;
        let PurchaseOutcome::Success { order_id, .. } = retried else {
            panic!("{retried:?}")
        };
        assert_eq!(inv.purchase_of(8004, user).await.unwrap(), Some(order_id));
        ids.insert(order_id);
    }
    assert_eq!(ids.len(), 20);
    let st = inv.stats(8004).await.unwrap().unwrap();
    assert_eq!((st.sold, st.buyers, st.outbox_pending), (20, 20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_survive_a_restart_with_persistence_and_come_back_after_a_flush() {
    let mut redis = PrivateRedis::start(&["--appendonly", "yes"]).await;
    let inv = RedisInventory::connect(config(redis.port)).await.unwrap();
    inv.prewarm(&on_sale(8005, 10, 1), false).await.unwrap();
    assert!(
        inv.purchase(&buy(8005, 1, 1, None))
            .await
            .unwrap()
            .is_success()
    );
    assert!(redis.cli(&["FUNCTION", "LIST"]).contains("seckill_v2"));
    // SCRIPT FLUSH does not touch functions.
    inv.client().script_flush().await.unwrap();
    assert!(redis.cli(&["FUNCTION", "LIST"]).contains("seckill_v2"));
    // A restart with persistence keeps them, with the data.
    redis.restart().await;
    assert!(
        redis.cli(&["FUNCTION", "LIST"]).contains("seckill_v2"),
        "the library persists with the dataset"
    );
    // The pool reconnects with backoff.
    let after = seckill_test_support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "a purchase after the restart",
        || async { inv.purchase(&buy(8005, 2, 1, None)).await.ok() },
    )
    .await;
    assert!(after.is_success(), "{after:?}");
    // After FUNCTION FLUSH the next call reloads the library and succeeds.
    inv.client().function_flush().await.unwrap();
    assert!(!redis.cli(&["FUNCTION", "LIST"]).contains("seckill_v2"));
    assert!(
        inv.purchase(&buy(8005, 3, 1, None))
            .await
            .unwrap()
            .is_success()
    );
    let st = inv.stats(8005).await.unwrap().unwrap();
    assert_eq!((st.sold, st.buyers), (3, 3));
}
