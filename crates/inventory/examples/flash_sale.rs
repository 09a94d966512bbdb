//! A flash sale without any server: 1,000 buyers race for 100 items, then the sales are taken
//! from the outbox as an order pipeline would.
//!
//! ```text
//! cargo run -p seckill-inventory --example flash_sale                      # in process
//! cargo run -p seckill-inventory --example flash_sale --features redis -- redis   # on 127.0.0.1:6379
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, Inventory, InventoryError, MemoryInventory, PurchaseOutcome,
    PurchaseRequest,
};

#[tokio::main]
async fn main() -> Result<(), InventoryError> {
    let use_redis = std::env::args().nth(1).as_deref() == Some("redis");
    let inventory: Arc<dyn Inventory> = if use_redis {
        redis().await?
    } else {
        Arc::new(MemoryInventory::new())
    };
    let now = Utc::now();
    inventory
        .prewarm(
            &Activity {
                product_id: 1001,
                product_name: "iPhone 15 Pro".into(),
                price_cents: 899_900,
                stock: 100,
                start_time: now - Span::seconds(1),
                end_time: now + Span::minutes(10),
                status: ActivityStatus::Active,
                per_user_limit: 1,
            },
            true,
        )
        .await?;

    let buyers: Vec<_> = (1..=1_000u64)
        .map(|user_id| {
            let inventory = inventory.clone();
            tokio::spawn(async move {
                inventory
                    .purchase(&PurchaseRequest {
                        product_id: 1001,
                        user_id,
                        quantity: 1,
                        idempotency_key: None,
                    })
                    .await
            })
        })
        .collect();
    let (mut sold, mut sold_out) = (0, 0);
    for b in buyers {
        match b.await.expect("buyer task")? {
            PurchaseOutcome::Success { .. } => sold += 1,
            PurchaseOutcome::SoldOut { .. } => sold_out += 1,
            other => println!("unexpected: {other:?}"),
        }
    }
    println!("sold {sold}, sold out for {sold_out} buyers");

    // What an order pipeline does: claim, deliver, acknowledge.
    let mut orders = HashSet::new();
    loop {
        let batch = inventory.outbox_read(64, Duration::from_millis(50)).await?;
        if batch.is_empty() {
            break;
        }
        let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
        orders.extend(batch.into_iter().map(|e| e.record.order_id));
        inventory.outbox_ack(&ids).await?;
    }
    let stats = inventory.stats(1001).await?.expect("prewarmed");
    println!(
        "{} orders handed over; remaining stock {}, buyers {}",
        orders.len(),
        stats.remaining_stock,
        stats.buyers
    );
    assert_eq!((sold, orders.len(), stats.remaining_stock), (100, 100, 0));
    Ok(())
}

#[cfg(feature = "redis")]
async fn redis() -> Result<Arc<dyn Inventory>, InventoryError> {
    use seckill_inventory::{RedisConfig, RedisInventory};
    let config = RedisConfig {
        host: "127.0.0.1".into(),
        key_prefix: "example".into(),
        ..RedisConfig::default()
    };
    Ok(Arc::new(RedisInventory::connect(config).await?))
}

#[cfg(not(feature = "redis"))]
async fn redis() -> Result<Arc<dyn Inventory>, InventoryError> {
    Err(InventoryError::Backend(
        "built without the `redis` feature: add --features redis".into(),
    ))
}
