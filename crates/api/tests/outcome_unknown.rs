//! Redis stops (SIGSTOP) mid-burst: every buyer whose purchase happened can see it, and was
//! answered 200 or 503 50304 "outcome unknown" — never 50303, which means it did not happen.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Server, activity};
use seckill_inventory::{RedisConfig, RedisInventory};
use seckill_service::Components;
use seckill_test_support::{PrivateRedis, eventually, unique};

const P: u64 = 6601;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_answers_200_or_outcome_unknown_for_every_sale_that_happened() {
    let redis = PrivateRedis::start(&[]).await;
    let inventory = RedisInventory::connect(RedisConfig {
        host: "127.0.0.1".into(),
        port: redis.port,
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_millis(300),
        key_prefix: unique("unknown"),
        allow_volatile: true,
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    let components = Components {
        inventory: Arc::new(inventory),
        ..Components::embedded()
    };
    let mut settings = common::settings();
    // The breaker opens on the failures; a short recovery lets the retries through.
    settings.circuit_breaker.recovery_timeout = Duration::from_millis(500);
    let s = Arc::new(Server::start(settings, components).await);
    assert_eq!(s.prewarm(activity(P, 100)).await.0, 200);
    assert_eq!(s.purchase(P, 1).await.0, 200);
    redis.signal("STOP");
    let mut tasks = Vec::new();
    for user in 2..=40u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (status, body) = s.purchase(P, user).await;
            (user, status, body["code"].as_i64().unwrap_or(-1))
        }));
    }
    let mut answers = HashMap::new();
    for t in tasks {
        let (user, status, code) = t.await.unwrap();
        assert_eq!(status, 503, "user {user}");
        assert!(code == 50304 || code == 50303, "user {user}: code {code}");
        answers.insert(user, code);
    }
    assert!(answers.values().any(|&c| c == 50304), "{answers:?}");
    redis.signal("CONT");
    // What happened is visible; each buyer it happened to was told "unknown", and their retry
    // answers the sale.
    let mut happened = 0;
    for user in 2..=40u64 {
        let path = format!("/api/v1/seckill/purchased/{P}/{user}");
        let v = eventually(
            Duration::from_secs(15),
            Duration::from_millis(50),
            "Redis answers",
            || {
                let s = s.clone();
                let path = path.clone();
                async move {
                    let (st, v) = s.get(&path).await;
                    (st == 200).then_some(v)
                }
            },
        )
        .await;
        if v["data"]["purchased"] == true {
            happened += 1;
            assert_eq!(answers[&user], 50304, "user {user}'s sale happened: {v}");
            let again = eventually(
                Duration::from_secs(15),
                Duration::from_millis(50),
                "a retry",
                || {
                    let s = s.clone();
                    async move {
                        let (st, again) = s.purchase(P, user).await;
                        (st == 200).then_some(again)
                    }
                },
            )
            .await;
            assert_eq!(again["data"]["order_id"], v["data"]["order_id"]);
        }
    }
    assert!(happened > 0, "the sent calls ran once Redis resumed");
    let st = s.stats(P).await;
    assert_eq!(st["sold"], happened + 1);
    assert_eq!(
        s.wait_orders(P, happened + 1).await["orders_created"],
        happened + 1
    );
}
