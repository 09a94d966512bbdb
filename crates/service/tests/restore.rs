//! Redis forgets mid-sale (a restart without persistence); the operator runs the same prewarm
//! again: the sale is restored from the order store — earlier buyers keep their orders and stay
//! buyers, exactly the rest of the stock sells, no order id repeats, every sale is stored once.
#![cfg(feature = "redis")]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{RedisConfig, RedisInventory};
use seckill_service::{
    ActivityInput, Caller, Components, PurchaseInput, Sale, Service, ServiceConfig, ServiceError,
};
use seckill_test_support::{PrivateRedis, eventually, unique};

const P: u64 = 7301;

fn peer(user: u64) -> Option<IpAddr> {
    Some(IpAddr::from([
        10,
        7,
        (user / 250) as u8,
        (user % 250) as u8 + 1,
    ]))
}

async fn buy(service: &Service, user: u64) -> Result<Option<String>, ServiceError> {
    let caller: Caller = service.authenticate(None, peer(user))?;
    let input = PurchaseInput {
        product_id: P,
        user_id: Some(user),
        ..Default::default()
    };
    let purchase = service.purchase_request(&caller, input)?;
    let outcome = service.purchase(&purchase, &caller).await?;
    Ok(Sale::from_outcome(&purchase.request, &outcome).map(|s| s.order_id.to_string()))
}

fn activity() -> ActivityInput {
    let now = chrono::Utc::now();
    ActivityInput {
        product_id: P,
        product_name: "restored".into(),
        price: 10.0,
        stock: 50,
        start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
        end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_prewarm_after_redis_forgot_restores_the_sale_from_the_order_store() {
    let mut redis = PrivateRedis::start(&[]).await;
    let inventory = RedisInventory::connect(RedisConfig {
        host: "127.0.0.1".into(),
        port: redis.port,
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        key_prefix: unique("restore"),
        allow_volatile: true,
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    let components = Components {
        inventory: Arc::new(inventory),
        ..Components::embedded()
    };
    let (service, pipeline) = Service::start(ServiceConfig::default(), components)
        .await
        .unwrap();
    let operator = service
        .authenticate(None, Some([127, 0, 0, 1].into()))
        .unwrap();
    let first = service.prewarm(&operator, activity()).await.unwrap();
    assert_eq!(first.result, "created");
    let mut orders: HashMap<u64, String> = HashMap::new();
    for user in 1..=30 {
        orders.insert(user, buy(&service, user).await.unwrap().expect("sold"));
    }
    let stored = || async {
        let st = service.product_stats(P).await.ok()?;
        (st.orders_created == 30).then_some(())
    };
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "30 orders stored",
        stored,
    )
    .await;

    // Redis restarts without persistence: the activity, its buyers and its counter are gone.
    redis.restart().await;
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "Redis forgot the sale",
        || async {
            matches!(
                service.product_stats(P).await,
                Err(ServiceError::NotFound(_))
            )
            .then_some(())
        },
    )
    .await;
    let again = service.prewarm(&operator, activity()).await.unwrap();
    assert_eq!(
        (
            again.result,
            again.epoch,
            again.restored_orders,
            again.remaining_stock
        ),
        ("restored", first.epoch, Some(30), Some(20))
    );
    // Earlier buyers get their own order again, never a second sale.
    for (&user, id) in &orders {
        assert_eq!(
            buy(&service, user).await.unwrap().as_deref(),
            Some(id.as_str())
        );
    }
    let mut more = 0;
    for user in 31..=100 {
        if let Some(id) = buy(&service, user).await.unwrap() {
            assert!(!orders.values().any(|o| *o == id), "order id {id} reused");
            orders.insert(user, id);
            more += 1;
        }
    }
    assert_eq!(more, 20, "exactly the rest of the stock");
    assert!(pipeline.shutdown(Duration::from_secs(30)).await);
    let ids: HashSet<&String> = orders.values().collect();
    assert_eq!(ids.len(), 50);
    for (&user, id) in &orders {
        let o = service.order(&operator, id).await.unwrap();
        assert_eq!(o.user_id, user, "{id} is its buyer's order");
    }
    let st = service.product_stats(P).await.unwrap();
    assert_eq!(
        (st.remaining_stock, st.buyers, st.orders_created),
        (0, 50, 50)
    );
}
