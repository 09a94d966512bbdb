//! The `Broker` contract, run against every backend.

use std::collections::HashSet;
use std::sync::Arc;

use seckill_mq::{
    Broker, Envelope, MemoryBroker, Message, MqError, OrderCreated, PurchaseResult, Subscription,
    Topic,
};

fn order(n: u64) -> Envelope {
    Envelope::new(
        format!("oc-1001-{n}"),
        Message::OrderCreated(OrderCreated {
            order_id: format!("1001-{n}"),
            product_id: 1001,
            user_id: n,
            quantity: 1,
            price_cents: 100,
            sold_at_ms: 0,
            epoch: 1,
        }),
    )
}

async fn every_group_gets_every_message_and_members_share(broker: Arc<dyn Broker>, group: &str) {
    let other = format!("{group}-audit");
    let mut a1 = broker.subscribe(Topic::OrderCreated, group).await.unwrap();
    let mut a2 = broker.subscribe(Topic::OrderCreated, group).await.unwrap();
    let mut b = broker.subscribe(Topic::OrderCreated, &other).await.unwrap();
    let batch: Vec<Envelope> = (1..=10).map(order).collect();
    broker.publish_batch(&batch).await.unwrap();
    let mut seen = HashSet::new();
    for i in 0..10 {
        let d = if i % 2 == 0 {
            a1.next().await
        } else {
            a2.next().await
        }
        .unwrap();
        assert!(!d.redelivered);
        assert!(
            seen.insert(d.envelope.id.clone()),
            "a member of one group got a duplicate"
        );
        d.ack().await.unwrap();
    }
    assert_eq!(seen.len(), 10);
    let mut audit = HashSet::new();
    for _ in 0..10 {
        let d = b.next().await.unwrap();
        audit.insert(d.envelope.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(audit, seen, "each group gets every message");
    assert_eq!(
        broker.pending(Topic::OrderCreated, group).await.unwrap(),
        Some(0)
    );
}

async fn unsettled_or_requeued_deliveries_come_back(broker: Arc<dyn Broker>, group: &str) {
    let mut sub = broker.subscribe(Topic::OrderCreated, group).await.unwrap();
    broker.publish(&order(1)).await.unwrap();
    let d = sub.next().await.unwrap();
    assert_eq!(
        broker.pending(Topic::OrderCreated, group).await.unwrap(),
        Some(1)
    );
    drop(d); // a consumer that died before acknowledging
    let d = sub.next().await.unwrap();
    assert!(d.redelivered);
    assert_eq!(d.envelope.id, "oc-1001-1");
    d.nack(true).await.unwrap();
    let d = sub.next().await.unwrap();
    assert!(d.redelivered);
    d.ack().await.unwrap();
    assert_eq!(
        broker.pending(Topic::OrderCreated, group).await.unwrap(),
        Some(0)
    );
}

async fn topics_are_separate(broker: Arc<dyn Broker>, group: &str) {
    let mut results = broker
        .subscribe(Topic::PurchaseResult, group)
        .await
        .unwrap();
    broker.publish(&order(1)).await.unwrap();
    let pr = Envelope::new(
        "pr-1",
        Message::PurchaseResult(PurchaseResult {
            product_id: 1001,
            user_id: 1,
            order_id: Some("1001-1".into()),
            status: "success".into(),
        }),
    );
    broker.publish(&pr).await.unwrap();
    let d = results.next().await.unwrap();
    assert_eq!(d.envelope, pr);
    d.ack().await.unwrap();
}

/// `broker` was cleaned up and closed after `sub` subscribed: closing again returns, and every
/// call fails with `MqError::Closed`.
async fn a_closed_broker_refuses_work(
    broker: Arc<dyn Broker>,
    mut sub: Box<dyn Subscription>,
    group: &str,
) {
    broker.close().await;
    broker.close().await;
    assert!(matches!(sub.next().await, Err(MqError::Closed)));
    assert!(matches!(
        broker.publish(&order(1)).await,
        Err(MqError::Closed)
    ));
    assert!(matches!(
        broker.publish_batch(&[order(2), order(3)]).await,
        Err(MqError::Closed)
    ));
    assert!(matches!(
        broker.subscribe(Topic::OrderCreated, group).await,
        Err(MqError::Closed)
    ));
}

/// Runs the contract against one backend: `$make` is a future giving a fresh, isolated broker
/// (its own names), `$cleanup` a function of it returning a future that removes what it made
/// and closes it.
macro_rules! contract {
    ($backend:ident, $make:expr, $cleanup:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn every_group_gets_every_message_and_members_share() {
                let b = $make.await;
                super::every_group_gets_every_message_and_members_share(b.clone(), "g1").await;
                ($cleanup)(b).await;
            }
            #[tokio::test]
            async fn unsettled_or_requeued_deliveries_come_back() {
                let b = $make.await;
                super::unsettled_or_requeued_deliveries_come_back(b.clone(), "g2").await;
                ($cleanup)(b).await;
            }
            #[tokio::test]
            async fn topics_are_separate() {
                let b = $make.await;
                super::topics_are_separate(b.clone(), "g3").await;
                ($cleanup)(b).await;
            }
            #[tokio::test]
            async fn a_closed_broker_refuses_work() {
                let b = $make.await;
                let sub = b.subscribe(Topic::OrderCreated, "g4").await.unwrap();
                // A closed broker refuses its cleanup too: clean up (and close) first.
                ($cleanup)(b.clone()).await;
                super::a_closed_broker_refuses_work(b, sub, "g4").await;
            }
        }
    };
}

contract!(
    memory,
    async { Arc::new(MemoryBroker::new()) as Arc<dyn Broker> },
    |b: Arc<dyn Broker>| async move { b.close().await }
);

#[tokio::test]
async fn memory_keeps_messages_published_before_a_declared_group_and_dead_letters_nacks() {
    let broker = MemoryBroker::with_groups(vec![(Topic::OrderCreated, "late".to_owned())]);
    broker.publish(&order(1)).await.unwrap();
    broker.publish(&order(2)).await.unwrap();
    assert_eq!(
        broker.pending(Topic::OrderCreated, "late").await.unwrap(),
        Some(2)
    );
    let mut sub = broker.subscribe(Topic::OrderCreated, "late").await.unwrap();
    let d = sub.next().await.unwrap();
    assert_eq!(d.envelope.id, "oc-1001-1");
    d.nack(false).await.unwrap();
    sub.next().await.unwrap().ack().await.unwrap();
    let dead = broker.dead_letters(Topic::OrderCreated, "late");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "oc-1001-1");
    assert_eq!(broker.held(), 0);
    broker.close().await;
    assert!(matches!(sub.next().await, Err(MqError::Closed)));
    assert!(broker.publish(&order(3)).await.is_err());
}

fn result(n: u64) -> Envelope {
    Envelope::new(
        format!("pr-{n}"),
        Message::PurchaseResult(PurchaseResult {
            product_id: 1001,
            user_id: n,
            order_id: Some(format!("1001-{n}")),
            status: "success".into(),
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn memory_keeps_nothing_of_a_topic_without_groups() {
    // The order service's group is declared; nobody listens to purchase results.
    let broker = MemoryBroker::with_groups(vec![(Topic::OrderCreated, "orders".to_owned())]);
    for n in 0..100 {
        let batch: Vec<Envelope> = (n * 100..(n + 1) * 100).map(result).collect();
        broker.publish_batch(&batch).await.unwrap();
    }
    assert_eq!(broker.held(), 0, "100 batches of results kept nothing");
    assert_eq!(
        broker.pending(Topic::PurchaseResult, "late").await.unwrap(),
        Some(0)
    );
    broker.publish(&order(1)).await.unwrap();
    assert_eq!(broker.held(), 1, "the declared group's message waits");

    // A group that subscribes later gets what is published from then on, not before.
    let mut late = broker
        .subscribe(Topic::PurchaseResult, "late")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), late.next())
            .await
            .is_err(),
        "nothing was kept for it"
    );
    broker.publish(&result(1)).await.unwrap();
    let d = late.next().await.unwrap();
    assert_eq!(d.envelope.id, "pr-1");
    d.ack().await.unwrap();
    assert_eq!(broker.held(), 1);

    // Without any declared group nothing is kept at all.
    let bare = MemoryBroker::new();
    bare.publish_batch(&(1..=1000).map(order).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(bare.held(), 0);
    assert_eq!(
        bare.pending(Topic::OrderCreated, "orders").await.unwrap(),
        Some(0)
    );
}

/// A name no other test (or run) uses, for a real broker's topics, exchanges and queues.
#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
fn unique_name() -> String {
    seckill_test_support::unique("t")
}

/// Settings for a Kafka broker of its own: a topic prefix no other test (or run) uses.
#[cfg(feature = "kafka")]
fn kafka_settings() -> seckill_mq::KafkaSettings {
    seckill_mq::KafkaSettings {
        topic_prefix: format!("{}-", unique_name()),
        ..Default::default()
    }
}

#[cfg(feature = "kafka")]
contract!(
    kafka,
    async {
        Arc::new(
            seckill_mq::KafkaBroker::connect(
                kafka_settings(),
                Arc::new(seckill_mq::MemoryOffsetStore::new()),
            )
            .await
            .unwrap(),
        )
    },
    |b: Arc<seckill_mq::KafkaBroker>| async move {
        b.close().await;
        b.delete_topics().await.unwrap();
    }
);

/// RabbitMQ settings with an exchange and queue prefix no other test (or run) uses.
#[cfg(feature = "rabbitmq")]
fn rabbit_settings() -> seckill_mq::RabbitSettings {
    seckill_mq::RabbitSettings {
        prefix: unique_name(),
        ..Default::default()
    }
}

#[cfg(feature = "rabbitmq")]
contract!(
    rabbitmq,
    async {
        Arc::new(
            seckill_mq::RabbitBroker::connect(rabbit_settings())
                .await
                .unwrap(),
        )
    },
    |b: Arc<seckill_mq::RabbitBroker>| async move {
        b.delete_topology().await.unwrap();
        b.close().await;
    }
);
