//! The reconciler finds a drift made by hand in Redis and repairs it from the order store
//! (real Redis and PostgreSQL).
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{Inventory, RedisConfig, RedisInventory};
use seckill_mq::{Broker, MemoryBroker};
use seckill_orders::OrderStore;
use seckill_orders::{OrdersConfig, PgOrderStore};
use seckill_service::{
    ActivityInput, Components, PurchaseInput, ReconcileError, Service, ServiceConfig,
    consumer_groups, reconcile,
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

struct Sale {
    prefix: String,
    inventory: Arc<RedisInventory>,
    store: Arc<PgOrderStore>,
    broker: Arc<dyn Broker>,
    pipeline: seckill_service::Pipeline,
}

/// Product P prewarmed with 10 items on Redis and PostgreSQL; users 1 to 3 bought one each.
async fn sale() -> Sale {
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
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::with_groups(consumer_groups()));
    let components = Components {
        inventory: inventory.clone(),
        orders: store.clone(),
        broker: broker.clone(),
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
    Sale {
        prefix,
        inventory,
        store,
        broker,
        pipeline,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finds_and_repairs_a_drift_made_by_hand() {
    let Sale {
        prefix,
        inventory,
        store,
        pipeline,
        ..
    } = sale().await;
    assert!(pipeline.shutdown(Duration::from_secs(30)).await);
    let clean = reconcile(&inventory, &*store, None, P, false)
        .await
        .unwrap();
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
    let found = reconcile(&inventory, &*store, None, P, false)
        .await
        .unwrap();
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
    let fixed = reconcile(&inventory, &*store, None, P, true).await.unwrap();
    assert!(fixed.repaired);
    let after = reconcile(&inventory, &*store, None, P, false)
        .await
        .unwrap();
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
    match reconcile(&inventory, &*store, None, P, true).await {
        Err(ReconcileError::InTransit { pending: n, .. }) => assert_eq!(n, pending),
        other => panic!("a repair with sales in transit ran: {other:?}"),
    }
    inventory.purge().await.unwrap();
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_the_store_lacks_is_redelivered_and_kept_by_the_repair() {
    let Sale {
        inventory,
        store,
        broker,
        pipeline,
        ..
    } = sale().await;
    let lost = inventory
        .purchase_of(P, 3)
        .await
        .unwrap()
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "three orders stored",
        || {
            let store = store.clone();
            async move { (store.live_orders(P, 1).await.ok()?.len() == 3).then_some(()) }
        },
    )
    .await;
    // As if the broker had lost buyer 3's sale: the row is not there, Redis holds the sale.
    let schema = store.schema().unwrap().to_owned();
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qAtc",
        ])
        .arg(format!(
            "DELETE FROM \"{schema}\".orders WHERE order_id = '{lost}'"
        ))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = reconcile(&inventory, &*store, None, P, false)
        .await
        .unwrap();
    assert_eq!((found.unaccounted_items, found.forgotten), (1, 0));
    assert_eq!(
        found
            .missing
            .iter()
            .map(|o| o.order_id.to_string())
            .collect::<Vec<_>>(),
        vec![lost.clone()]
    );
    // The repair sends it again and keeps it in Redis: the consumer stores it once.
    let fixed = reconcile(&inventory, &*store, Some(&*broker), P, true)
        .await
        .unwrap();
    assert!(fixed.repaired);
    assert_eq!(fixed.redelivered, 1);
    assert_eq!(
        inventory.stats(P).await.unwrap().unwrap().remaining_stock,
        7
    );
    let stored = eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "the redelivered order stored",
        || {
            let (store, lost) = (store.clone(), lost.clone());
            async move { store.get(&lost).await.ok().flatten() }
        },
    )
    .await;
    assert_eq!((stored.user_id, stored.quantity), (3, 1));
    assert!(pipeline.shutdown(Duration::from_secs(30)).await);
    assert!(
        reconcile(&inventory, &*store, None, P, false)
            .await
            .unwrap()
            .agrees()
    );
    inventory.purge().await.unwrap();
    store.drop_schema().await.unwrap();
}
