//! The reconciler finds a drift made by hand in Redis and repairs it from the order store
//! (real Redis and PostgreSQL).
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{Inventory, RedisConfig, RedisInventory};
use seckill_orders::{OrdersConfig, PgOrderStore};
use seckill_service::{
    ActivityInput, Components, PurchaseInput, ReconcileError, Service, ServiceConfig, reconcile,
};
use seckill_test_support::{eventually, unique};

const P: u64 = 7401;

fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finds_and_repairs_a_drift_made_by_hand() {
    let prefix = unique("recon");
    let inventory = Arc::new(
        RedisInventory::connect(RedisConfig {
            host: "127.0.0.1".into(),
            key_prefix: prefix.clone(),
            connect_timeout: Duration::from_secs(10),
            ..RedisConfig::default()
        })
        .await
        .expect("Redis at 127.0.0.1:6379 (bash scripts/test.sh starts it)"),
    );
    let store = Arc::new(
        PgOrderStore::connect(&OrdersConfig {
            schema: Some(unique("recon")),
            ..OrdersConfig::default()
        })
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (bash scripts/test.sh starts it)"),
    );
    let components = Components {
        inventory: inventory.clone(),
        orders: store.clone(),
        ..Components::embedded()
    };
    let (service, pipeline) = Service::start(ServiceConfig::default(), components)
        .await
        .unwrap();
    let operator = service
        .authenticate(None, Some([127, 0, 0, 1].into()))
        .unwrap();
    let now = chrono::Utc::now();
    service
        .prewarm(
            &operator,
            ActivityInput {
                product_id: P,
                product_name: "reconciled".into(),
                price: 1.0,
                stock: 10,
                start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
                end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for user in 1..=3u64 {
        let buyer = service
            .authenticate(None, Some([10, 9, 0, user as u8].into()))
            .unwrap();
        let input = PurchaseInput {
            product_id: P,
            user_id: Some(user),
            ..Default::default()
        };
        let purchase = service.purchase_request(&buyer, input).unwrap();
        assert!(
            service
                .purchase(&purchase, &buyer)
                .await
                .unwrap()
                .is_success()
        );
    }
    assert!(pipeline.shutdown(Duration::from_secs(30)).await);
    let clean = reconcile(&inventory, &*store, P, false).await.unwrap();
    assert_eq!(
        (
            clean.sold,
            clean.stored_orders,
            clean.unaccounted_items,
            clean.unaccounted_buyers
        ),
        (3, 3, 0, 0)
    );

    // By hand: two items put back on sale and a buyer forgotten, as a bad "repair" would.
    let activity = format!("{prefix}:{{{P}}}:activity");
    let buyers = format!("{prefix}:{{{P}}}:buyers");
    redis_cli(&["HSET", &activity, "stock", "9"]);
    redis_cli(&["HDEL", &buyers, "2"]);
    let found = reconcile(&inventory, &*store, P, false).await.unwrap();
    assert_eq!(
        (
            found.sold,
            found.buyers,
            found.unaccounted_items,
            found.unaccounted_buyers,
            found.repaired
        ),
        (1, 2, -2, -1, false)
    );
    // Repaired from the order store: the books agree again and buyer 2 is a buyer again.
    let fixed = reconcile(&inventory, &*store, P, true).await.unwrap();
    assert!(fixed.repaired);
    let after = reconcile(&inventory, &*store, P, false).await.unwrap();
    assert_eq!(
        (after.sold, after.buyers, after.unaccounted_items),
        (3, 3, 0)
    );
    assert!(inventory.purchase_of(P, 2).await.unwrap().is_some());
    let st = inventory.stats(P).await.unwrap().unwrap();
    assert_eq!(st.remaining_stock, 7);
    // A sale in the outbox makes a repair wait: it would be forgotten.
    inventory
        .purchase(&seckill_inventory::PurchaseRequest {
            product_id: P,
            user_id: 4,
            quantity: 1,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let pending = eventually(
        Duration::from_secs(5),
        Duration::from_millis(10),
        "pending",
        || {
            let inventory = inventory.clone();
            async move {
                let st = inventory.stats(P).await.ok()??;
                (st.outbox_pending > 0).then_some(st.outbox_pending)
            }
        },
    )
    .await;
    redis_cli(&["HSET", &activity, "stock", "9"]);
    match reconcile(&inventory, &*store, P, true).await {
        Err(ReconcileError::InTransit { pending: n, .. }) => assert_eq!(n, pending),
        other => panic!("a repair with sales in transit ran: {other:?}"),
    }
    inventory.purge().await.unwrap();
    store.drop_schema().await.unwrap();
}
