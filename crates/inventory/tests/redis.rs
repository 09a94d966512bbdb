//! Behaviour of the Redis backend beyond the shared contract: script reloads and the lock.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use seckill_inventory::{
    Activity, ActivityStatus, Inventory, InventoryError, PurchaseOutcome, PurchaseRequest,
    RedisClient, RedisConfig, RedisInventory, RedisLock,
};

const NEED_REDIS: &str =
    "these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it";

fn unique(what: &str) -> String {
    seckill_test_support::unique(&format!("test_{what}"))
}

/// The test Redis, a small pool, and a generous bound for the first connection (the machine
/// is shared and loaded).
fn config(key_prefix: String) -> RedisConfig {
    RedisConfig {
        host: "127.0.0.1".into(),
        pool_size: 4,
        connect_timeout: Duration::from_secs(10),
        key_prefix,
        ..RedisConfig::default()
    }
}

async fn connect(config: RedisConfig) -> RedisInventory {
    RedisInventory::connect(config).await.expect(NEED_REDIS)
}

async fn client() -> RedisClient {
    RedisClient::connect(&config(unique("client")))
        .await
        .expect(NEED_REDIS)
}

async fn inventory() -> RedisInventory {
    connect(config(unique("inv"))).await
}

/// An activity on sale now.
fn on_sale(product_id: u64, stock: u64) -> Activity {
    let now = Utc::now();
    Activity {
        product_id,
        product_name: "test".into(),
        price_cents: 1,
        stock,
        start_time: now - Span::minutes(1),
        end_time: now + Span::hours(1),
        status: ActivityStatus::Active,
        per_user_limit: 1,
    }
}

/// SCRIPT FLUSH drops every loaded script, as a restart or failover does; purchases in flight
/// at that moment must still succeed (reload and retry), never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_fails_no_request() {
    let inv = Arc::new(inventory().await);
    inv.prewarm(&on_sale(7001, 1_000_000), false).await.unwrap();
    let admin = client().await;
    let sold = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (inv, sold) = (inv.clone(), sold.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..1_000u64 {
                let out = inv
                    .purchase(&PurchaseRequest {
                        product_id: 7001,
                        user_id: t * 1_000 + i + 1,
                        quantity: 1,
                        idempotency_key: None,
                    })
                    .await
                    .expect("no purchase fails across SCRIPT FLUSH");
                assert!(matches!(out, PurchaseOutcome::Success { .. }), "{out:?}");
                sold.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut flushes = 0;
    while sold.load(Ordering::Relaxed) < 8_000 && flushes < 20 {
        admin.script_flush().await.unwrap();
        flushes += 1;
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(flushes >= 2, "the run was too short to flush mid-way");
    let st = inv.stats(7001).await.unwrap().unwrap();
    assert_eq!(
        (st.sold, st.buyers, st.outbox_pending),
        (8_000, 8_000, 8_000)
    );
    inv.purge().await.unwrap();
}

async fn lock(name: &str, ttl: Duration) -> RedisLock {
    RedisLock::new(client().await, name, ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_excludes_under_contention_with_increasing_fencing_tokens() {
    let name = unique("lock");
    let holders = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let tokens = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = lock(&name, Duration::from_secs(10)).await;
        let (holders, max_seen, tokens) = (holders.clone(), max_seen.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let g = l
                    .acquire(Duration::from_secs(30), Duration::from_millis(1))
                    .await
                    .unwrap()
                    .expect("acquired within the wait");
                let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                tokens.lock().push(g.fencing_token());
                tokio::task::yield_now().await;
                holders.fetch_sub(1, Ordering::SeqCst);
                assert!(
                    g.release().await.unwrap(),
                    "the holder releases its own lock"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "never two holders at once"
    );
    let tokens = tokens.lock().clone();
    assert_eq!(tokens.len(), 80);
    // Tokens were recorded in acquisition order (one holder at a time): strictly increasing.
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    cleanup_lock(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_cannot_release_or_extend_the_next_holders_lock() {
    let name = unique("lock");
    let ttl = Duration::from_millis(50);
    let a = lock(&name, ttl).await;
    let b = lock(&name, Duration::from_secs(10)).await;
    let first = a.try_acquire().await.unwrap().expect("free lock");
    assert!(b.try_acquire().await.unwrap().is_none(), "held");
    // Waiting for the TTL is what is under test: poll until Redis expires the lock.
    let started = tokio::time::Instant::now();
    let second = loop {
        if let Some(g) = b.try_acquire().await.unwrap() {
            break g;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(started.elapsed() >= ttl - Duration::from_millis(5));
    assert!(second.fencing_token() > first.fencing_token());
    assert!(
        !first.extend(Duration::from_secs(10)).await.unwrap(),
        "stale extend refused"
    );
    assert!(!first.release().await.unwrap(), "stale release refused");
    assert!(
        a.try_acquire().await.unwrap().is_none(),
        "the second holder still holds it"
    );
    assert!(second.extend(Duration::from_secs(10)).await.unwrap());
    assert!(second.release().await.unwrap());
    assert!(a.try_acquire().await.unwrap().is_some(), "free again");
    cleanup_lock(&name).await;
}

async fn cleanup_lock(name: &str) {
    client()
        .await
        .delete(&[format!("{{{name}}}"), format!("{{{name}}}:fence")])
        .await
        .unwrap();
}

/// A sold-out product is answered from the process's copy of its buyers, with the script's
/// answers; an item returned by another process's cancel sells again once the copy expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_answers_are_local_and_exact_and_expire() {
    let prefix = unique("inv");
    let with_cache = |cache: Duration| {
        connect(RedisConfig {
            sold_out_cache: cache,
            ..config(prefix.clone())
        })
    };
    let a = with_cache(Duration::from_millis(200)).await;
    let b = with_cache(Duration::ZERO).await;
    a.prewarm(&on_sale(7002, 2), false).await.unwrap();
    let buy = |user_id| PurchaseRequest {
        product_id: 7002,
        user_id,
        quantity: 1,
        idempotency_key: None,
    };
    let PurchaseOutcome::Success { order_id, .. } = a.purchase(&buy(1)).await.unwrap() else {
        panic!("first sale")
    };
    assert!(a.purchase(&buy(2)).await.unwrap().is_success());
    // Sold out: this answer fills the copy.
    assert_eq!(
        a.purchase(&buy(3)).await.unwrap(),
        PurchaseOutcome::SoldOut { remaining_stock: 0 }
    );
    // A buyer asks Redis, which holds their order (a replay); the copy answers the rest in
    // the script's order of checks.
    assert_eq!(
        a.purchase(&buy(1)).await.unwrap(),
        PurchaseOutcome::Success {
            order_id,
            remaining_stock: 0
        }
    );
    assert_eq!(
        a.purchase(&PurchaseRequest {
            quantity: 2,
            ..buy(4)
        })
        .await
        .unwrap(),
        PurchaseOutcome::InvalidQuantity { max: 1 }
    );
    // Another process cancels: the item is back in Redis.
    assert!(matches!(
        b.cancel(order_id).await.unwrap(),
        seckill_inventory::CancelOutcome::Cancelled { .. }
    ));
    assert_eq!(b.purchase_of(7002, 1).await.unwrap(), None);
    // Within the copy's lifetime this process may still say sold out; after it, the item sells.
    let started = tokio::time::Instant::now();
    loop {
        match a.purchase(&buy(5)).await.unwrap() {
            PurchaseOutcome::Success { .. } => break,
            PurchaseOutcome::SoldOut { .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the returned item never sold on the caching process"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = b.stats(7002).await.unwrap().unwrap();
    assert_eq!((st.remaining_stock, st.buyers, st.cancelled), (0, 2, 1));
    a.purge().await.unwrap();
}

/// A prefix full of glob characters purges its own keys and nobody else's: `t*` and `t[ab]`
/// would match other prefixes as `SCAN` patterns (and `t[ab]` not even its own keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_takes_the_prefix_literally() {
    let base = unique("glob");
    let star = connect(config(format!("{base}*"))).await;
    let class = connect(config(format!("{base}[ab]"))).await;
    let other = connect(config(format!("{base}-other"))).await;
    let a = connect(config(format!("{base}a"))).await;
    for (inv, product) in [(&star, 7101), (&class, 7102), (&other, 7103), (&a, 7104)] {
        inv.prewarm(&on_sale(product, 5), false).await.unwrap();
        let out = inv
            .purchase(&PurchaseRequest {
                product_id: product,
                user_id: 1,
                quantity: 1,
                idempotency_key: None,
            })
            .await
            .unwrap();
        assert!(out.is_success(), "{out:?}");
    }
    let removed = star.purge().await.unwrap();
    assert!(removed >= 3, "its activity, buyers, orders…: {removed}");
    assert!(star.stats(7101).await.unwrap().is_none(), "own keys purged");
    let removed = class.purge().await.unwrap();
    assert!(removed >= 3, "{removed}");
    assert!(
        class.stats(7102).await.unwrap().is_none(),
        "own keys purged"
    );
    for (inv, product) in [(&other, 7103), (&a, 7104)] {
        let st = inv.stats(product).await.unwrap().expect("kept");
        assert_eq!((st.sold, st.buyers), (1, 1));
        inv.purge().await.unwrap();
    }
}

/// An invalid section is refused before any connection is tried.
#[tokio::test]
async fn an_invalid_config_names_its_key() {
    let bad = RedisConfig {
        pool_size: 0,
        ..config(unique("bad"))
    };
    match RedisInventory::connect(bad).await {
        Err(InventoryError::InvalidConfig { key, .. }) => assert_eq!(key, "pool_size"),
        other => panic!("{other:?}"),
    }
    let bad = RedisConfig {
        key_prefix: "a{1}".into(),
        ..config(unique("bad"))
    };
    match RedisClient::connect(&bad).await {
        Err(InventoryError::InvalidConfig { key, .. }) => assert_eq!(key, "key_prefix"),
        other => panic!("{other:?}"),
    }
}

/// SET NX PX: the first writer wins, a later one leaves the value alone, and the key can be
/// set again once Redis expires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_nx_px_sets_only_a_missing_key() {
    let c = client().await;
    let key = unique("setnx");
    let ttl = Duration::from_millis(50);
    assert!(
        c.set_nx_px(&key, "first", ttl).await.unwrap(),
        "missing: set"
    );
    assert!(
        !c.set_nx_px(&key, "second", ttl).await.unwrap(),
        "there: kept"
    );
    assert_eq!(c.get_string(&key).await.unwrap().as_deref(), Some("first"));
    // Waiting for the TTL is what is under test: poll until Redis expires the key.
    let started = tokio::time::Instant::now();
    while !c
        .set_nx_px(&key, "third", Duration::from_secs(10))
        .await
        .unwrap()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(c.get_string(&key).await.unwrap().as_deref(), Some("third"));
    assert_eq!(c.delete(&[key]).await.unwrap(), 1);
}
