//! When Redis forgets — emptied, restarted without persistence, failed over — the books stay
//! right: order ids never repeat, a restore from the recorded sale sells exactly the rest and
//! keeps earlier buyers out, a Redis that persists nothing is refused unless allowed, and a
//! purchase its replicas did not confirm is answered "outcome unknown".
#![cfg(feature = "redis")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, Inventory, InventoryError, OrderId, PrewarmOutcome, PurchaseOutcome,
    PurchaseRequest, RecordedOrder, RecordedSale, RedisConfig, RedisInventory,
};
use seckill_test_support::{PrivateRedis, unique};

fn on_sale(product_id: u64, stock: u64) -> Activity {
    let now = Utc::now();
    Activity {
        product_id,
        product_name: "state loss".into(),
        price_cents: 100,
        stock,
        start_time: now - Span::minutes(1),
        end_time: now + Span::hours(1),
        status: ActivityStatus::Active,
        per_user_limit: 1,
    }
}

fn buy(product_id: u64, user_id: u64) -> PurchaseRequest {
    PurchaseRequest {
        product_id,
        user_id,
        quantity: 1,
        idempotency_key: None,
    }
}

fn config(port: u16) -> RedisConfig {
    RedisConfig {
        host: "127.0.0.1".into(),
        port,
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_millis(600),
        key_prefix: unique("loss"),
        ..RedisConfig::default()
    }
}

/// Sells to `users`, returning each sale's order.
async fn sell(
    inv: &RedisInventory,
    product: u64,
    users: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, OrderId)> {
    let mut sold = Vec::new();
    for u in users {
        if let PurchaseOutcome::Success { order_id, .. } =
            inv.purchase(&buy(product, u)).await.unwrap()
        {
            sold.push((u, order_id));
        }
    }
    sold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_redis_restored_from_the_record_reuses_no_id_and_oversells_nothing() {
    let mut redis = PrivateRedis::start(&[]).await;
    let inv = RedisInventory::connect(RedisConfig {
        allow_volatile: true,
        ..config(redis.port)
    })
    .await
    .unwrap();
    let a = on_sale(9101, 50);
    let PrewarmOutcome::Created { epoch } = inv.prewarm(&a, false).await.unwrap() else {
        panic!("created")
    };
    let before = sell(&inv, 9101, 1..=30).await;
    assert_eq!(before.len(), 30);
    // What the order store recorded: 30 orders, one since cancelled (user 30).
    let recorded = RecordedSale {
        epoch,
        orders: before[..29]
            .iter()
            .map(|&(user_id, order_id)| RecordedOrder {
                order_id,
                user_id,
                quantity: 1,
            })
            .collect(),
    };
    // Redis restarts without persistence: it forgot everything.
    redis.restart().await;
    let gone = seckill_test_support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "the pool reconnects",
        || async { inv.activity(9101).await.ok() },
    )
    .await;
    assert_eq!(gone, None);
    // The same prewarm on the forgetful Redis would start over; a restore continues.
    assert_eq!(
        inv.restore(&a, &recorded).await.unwrap(),
        PrewarmOutcome::Restored {
            epoch,
            orders: 29,
            remaining_stock: 21
        }
    );
    // Restoring again changes nothing (the activity is loaded now).
    assert_eq!(
        inv.restore(&a, &recorded).await.unwrap(),
        PrewarmOutcome::Unchanged { epoch }
    );
    assert_eq!(
        inv.prewarm(&a, false).await.unwrap(),
        PrewarmOutcome::Unchanged { epoch }
    );
    // Earlier buyers are still buyers (their order replayed), the cancelled one may buy again.
    for &(user, order_id) in &before[..29] {
        assert_eq!(inv.purchase_of(9101, user).await.unwrap(), Some(order_id));
        assert!(matches!(
            inv.purchase(&buy(9101, user)).await.unwrap(),
            PurchaseOutcome::Success { order_id: o, .. } if o == order_id
        ));
    }
    let after = sell(&inv, 9101, 30..=100).await;
    assert_eq!(after.len(), 21, "exactly the stock left");
    let mut ids: HashSet<OrderId> = before.iter().map(|s| s.1).collect();
    for (_, id) in &after {
        assert!(ids.insert(*id), "order id {id} reused");
    }
    let st = inv.stats(9101).await.unwrap().unwrap();
    assert_eq!((st.epoch, st.remaining_stock, st.buyers), (epoch, 0, 50));
    // A restored order cancels like any other: its item is back on sale.
    assert!(matches!(
        inv.cancel(before[0].1).await.unwrap(),
        seckill_inventory::CancelOutcome::Cancelled {
            quantity: 1,
            remaining_stock: 1
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_forgot_gives_new_order_ids_even_without_a_restore() {
    let mut redis = PrivateRedis::start(&[]).await;
    let inv = RedisInventory::connect(config(redis.port)).await.unwrap();
    let a = on_sale(9102, 10);
    inv.prewarm(&a, false).await.unwrap();
    let first = sell(&inv, 9102, 1..=5).await;
    redis.restart().await;
    let created = seckill_test_support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "a prewarm after the restart",
        || async { inv.prewarm(&a, false).await.ok() },
    )
    .await;
    assert!(
        matches!(created, PrewarmOutcome::Created { .. }),
        "{created:?}"
    );
    let second = sell(&inv, 9102, 1..=5).await;
    let ids: HashSet<OrderId> = first.iter().chain(&second).map(|s| s.1).collect();
    assert_eq!(
        ids.len(),
        10,
        "a fresh sequence starts at a new nonce: {first:?} {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_persists_nothing_is_refused_unless_allowed() {
    let volatile = PrivateRedis::start(&["--appendonly", "no"]).await;
    let inv = RedisInventory::connect(config(volatile.port))
        .await
        .unwrap();
    match inv.check_durability().await {
        Err(InventoryError::InvalidConfig { key, reason }) => {
            assert_eq!(key, "allow_volatile");
            assert!(reason.contains("persists nothing"), "{reason}");
        }
        other => panic!("a volatile Redis was accepted: {other:?}"),
    }
    let allowed = RedisInventory::connect(RedisConfig {
        allow_volatile: true,
        ..config(volatile.port)
    })
    .await
    .unwrap();
    allowed.check_durability().await.unwrap();
    let aof = PrivateRedis::start(&["--appendonly", "yes"]).await;
    RedisInventory::connect(config(aof.port))
        .await
        .unwrap()
        .check_durability()
        .await
        .unwrap();
    let rdb = PrivateRedis::start(&["--save", "60 1"]).await;
    RedisInventory::connect(config(rdb.port))
        .await
        .unwrap()
        .check_durability()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_its_replicas_did_not_confirm_is_answered_outcome_unknown() {
    let primary = PrivateRedis::start(&["--appendonly", "yes"]).await;
    let port = primary.port.to_string();
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &port]).await;
    seckill_test_support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "the replica is in sync",
        || async {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                .then_some(())
        },
    )
    .await;
    let inv = Arc::new(
        RedisInventory::connect(RedisConfig {
            wait_replicas: 1,
            ..config(primary.port)
        })
        .await
        .unwrap(),
    );
    inv.prewarm(&on_sale(9103, 10), false).await.unwrap();
    assert!(inv.purchase(&buy(9103, 1)).await.unwrap().is_success());
    // The replica stops acknowledging: the sale happens on the primary, unconfirmed.
    replica.signal("STOP");
    match inv.purchase(&buy(9103, 2)).await {
        Err(e @ InventoryError::OutcomeUnknown) => assert!(e.is_backend_fault()),
        other => panic!("an unconfirmed sale was answered {other:?}"),
    }
    // Rejections write nothing and wait for nobody.
    assert_eq!(
        inv.purchase(&PurchaseRequest {
            quantity: 5,
            ..buy(9103, 3)
        })
        .await
        .unwrap(),
        PurchaseOutcome::InvalidQuantity { max: 1 }
    );
    replica.signal("CONT");
    // Once confirmed, the buyer's retry answers their sale.
    let retried = seckill_test_support::eventually(
        Duration::from_secs(15),
        Duration::from_millis(50),
        "a confirmed retry",
        || {
            let inv = inv.clone();
            async move { inv.purchase(&buy(9103, 2)).await.ok() }
        },
    )
    .await;
    assert!(retried.is_success());
    assert_eq!(inv.stats(9103).await.unwrap().unwrap().sold, 2);
}
