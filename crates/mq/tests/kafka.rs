//! The Kafka backend against a real Kafka-compatible broker on 127.0.0.1:9092
//! (`bash scripts/services.sh kafka`). Every test uses topics of its own and deletes them.
#![cfg(feature = "kafka")]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use seckill_mq::{
    Broker, Delivery, Envelope, KafkaBroker, KafkaSettings, Lease, MemoryOffsetStore, Message,
    MqError, OffsetStore, OrderCreated, PartitionKey, Topic,
};

/// Upper bound of a whole test: a hang fails instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(120);

async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the test did not finish in time")
}

/// Settings with a topic prefix no other test (or run) uses.
fn settings() -> KafkaSettings {
    KafkaSettings {
        topic_prefix: format!("{}-", seckill_test_support::unique("t")),
        ..Default::default()
    }
}

fn order(product: u64, seq: u64) -> Envelope {
    Envelope::new(
        format!("oc-{product}-{seq}"),
        Message::OrderCreated(OrderCreated {
            order_id: format!("{product}-{seq}"),
            product_id: product,
            user_id: seq,
            quantity: 1,
            price_cents: 100,
            sold_at_ms: 0,
            epoch: 1,
        }),
    )
}

/// `count` orders round-robin over `products` products (1000, 1001, ...), each product's
/// sequence numbers counting up from 1.
fn orders(count: u64, products: u64) -> Vec<Envelope> {
    (0..count)
        .map(|i| order(1000 + i % products, i / products + 1))
        .collect()
}

fn product_and_seq(d: &Delivery) -> (u64, u64) {
    match &d.envelope.message {
        Message::OrderCreated(o) => (o.product_id, o.user_id),
        other => panic!("unexpected message {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_messages_are_consumed_exactly_once_in_product_order() {
    let broker = Arc::new(
        KafkaBroker::connect(settings(), Arc::new(MemoryOffsetStore::new()))
            .await
            .unwrap(),
    );
    within(async {
        const PRODUCTS: u64 = 16;
        const TOTAL: u64 = 2_000;
        let all = orders(TOTAL, PRODUCTS);
        // Four concurrent publishers, each with its own products, in batches of 50: a
        // product's batches go out one after the other.
        let mut publishers = Vec::new();
        for p in 0..4 {
            let mine: Vec<Envelope> = all
                .iter()
                .filter(|e| e.message.key() % 4 == p)
                .cloned()
                .collect();
            let broker = Arc::clone(&broker);
            publishers.push(tokio::spawn(async move {
                for batch in mine.chunks(50) {
                    broker.publish_batch(batch).await.unwrap();
                }
            }));
        }
        for p in publishers {
            p.await.unwrap();
        }
        // The group subscribes after the messages were published: it must still get them all.
        assert_eq!(
            broker.pending(Topic::OrderCreated, "orders").await.unwrap(),
            Some(TOTAL)
        );
        let mut sub = broker
            .subscribe(Topic::OrderCreated, "orders")
            .await
            .unwrap();
        let mut seen = HashSet::new();
        let mut last_seq: HashMap<u64, u64> = HashMap::new();
        for _ in 0..TOTAL {
            let d = sub.next().await.unwrap();
            assert!(!d.redelivered);
            assert!(
                seen.insert(d.envelope.id.clone()),
                "duplicate {}",
                d.envelope.id
            );
            let (product, seq) = product_and_seq(&d);
            let last = last_seq.insert(product, seq).unwrap_or(0);
            assert_eq!(seq, last + 1, "product {product} out of order");
            d.ack().await.unwrap();
        }
        assert_eq!(seen.len() as u64, TOTAL);
        assert_eq!(last_seq.len() as u64, PRODUCTS);
        assert!(last_seq.values().all(|&s| s == TOTAL / PRODUCTS));
        assert_eq!(
            broker.pending(Topic::OrderCreated, "orders").await.unwrap(),
            Some(0)
        );
    })
    .await;
    broker.close().await;
    broker.delete_topics().await.unwrap();
}

/// A consumer acknowledges the first half of what it received and then stops — crashed
/// (dropped, its leases left to expire) or shut down (leases released). A new instance on the
/// same offset store gets exactly the messages that were not acknowledged.
async fn a_new_instance_resumes_from_the_committed_offsets(crash: bool) {
    let store: Arc<dyn OffsetStore> = Arc::new(MemoryOffsetStore::new());
    let settings = KafkaSettings {
        // A crashed instance's leases expire after a second, and the new one retries often.
        lease_ttl: Duration::from_secs(1),
        lease_retry: Duration::from_millis(100),
        ..settings()
    };
    let first = KafkaBroker::connect(settings.clone(), Arc::clone(&store))
        .await
        .unwrap();
    let all = orders(100, 8);
    let all_ids: HashSet<String> = all.iter().map(|e| e.id.clone()).collect();
    let second = within(async move {
        first.publish_batch(&all).await.unwrap();
        let mut sub = first.subscribe(Topic::OrderCreated, "g").await.unwrap();
        let mut held = Vec::new();
        for _ in 0..60 {
            held.push(sub.next().await.unwrap());
        }
        // Each partition's deliveries come in offset order, so acknowledging the first 30 of
        // them acknowledges a prefix of every partition: the commits cover exactly these.
        let unacked = held.split_off(30);
        let mut acked = HashSet::new();
        for d in held {
            acked.insert(d.envelope.id.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(
            first.pending(Topic::OrderCreated, "g").await.unwrap(),
            Some(70)
        );
        if crash {
            drop(first);
            // The deliveries of the dead instance can no longer be settled.
            for d in unacked {
                assert!(matches!(d.ack().await, Err(MqError::Closed)));
            }
        } else {
            first.close().await;
            drop(unacked);
        }

        let second = KafkaBroker::connect(settings.clone(), Arc::clone(&store))
            .await
            .unwrap();
        assert_eq!(
            second.pending(Topic::OrderCreated, "g").await.unwrap(),
            Some(70)
        );
        let mut sub = second.subscribe(Topic::OrderCreated, "g").await.unwrap();
        let mut rest = HashSet::new();
        for _ in 0..70 {
            let d = sub.next().await.unwrap();
            assert!(
                !acked.contains(&d.envelope.id),
                "{} was acknowledged below the committed offset and came again",
                d.envelope.id
            );
            assert!(
                rest.insert(d.envelope.id.clone()),
                "duplicate {}",
                d.envelope.id
            );
            d.ack().await.unwrap();
        }
        let expected: HashSet<String> = all_ids.difference(&acked).cloned().collect();
        assert_eq!(rest, expected);
        assert_eq!(
            second.pending(Topic::OrderCreated, "g").await.unwrap(),
            Some(0)
        );
        second
    })
    .await;
    second.close().await;
    second.delete_topics().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_new_instance_takes_over_from_the_committed_offsets() {
    a_new_instance_resumes_from_the_committed_offsets(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_shutdown_a_new_instance_takes_over_from_the_committed_offsets() {
    a_new_instance_resumes_from_the_committed_offsets(false).await;
}

/// An offset store view that never grants the lease of some partitions: an instance configured
/// to stay off them.
struct Declining {
    store: Arc<dyn OffsetStore>,
    declined: Vec<i32>,
}

#[async_trait]
impl OffsetStore for Declining {
    async fn lease(
        &self,
        key: &PartitionKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, MqError> {
        if self.declined.contains(&key.partition) {
            return Ok(Lease::HeldByAnother);
        }
        self.store.lease(key, owner, ttl).await
    }

    async fn commit(
        &self,
        key: &PartitionKey,
        owner: &str,
        next_offset: i64,
    ) -> Result<bool, MqError> {
        self.store.commit(key, owner, next_offset).await
    }

    async fn position(&self, key: &PartitionKey) -> Result<Option<i64>, MqError> {
        self.store.position(key).await
    }

    async fn release(&self, key: &PartitionKey, owner: &str) -> Result<(), MqError> {
        self.store.release(key, owner).await
    }
}

/// Two instances on one offset store consume one group. The first stays off partitions 2 and 3,
/// so the second gets those (and whatever of 0 and 1 it leases first); leases are renewed well
/// within their time-to-live, so no partition changes hands and no message is handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_group_and_never_handle_a_message_twice() {
    const TOTAL: usize = 400;
    let store: Arc<dyn OffsetStore> = Arc::new(MemoryOffsetStore::new());
    let settings = settings();
    let a = KafkaBroker::connect(
        settings.clone(),
        Arc::new(Declining {
            store: Arc::clone(&store),
            declined: vec![2, 3],
        }),
    )
    .await
    .unwrap();
    let b = KafkaBroker::connect(settings, Arc::clone(&store))
        .await
        .unwrap();
    within(async {
        let all = orders(TOTAL as u64, 16);
        a.publish_batch(&all).await.unwrap();
        let mut sub_a = a.subscribe(Topic::OrderCreated, "g").await.unwrap();
        // The first instance consumes before the second subscribes.
        let first = sub_a.next().await.unwrap();
        let mut handled_a = vec![first.envelope.id.clone()];
        first.ack().await.unwrap();
        let mut sub_b = b.subscribe(Topic::OrderCreated, "g").await.unwrap();
        let mut handled_b = Vec::new();
        while handled_a.len() + handled_b.len() < TOTAL {
            tokio::select! {
                d = sub_a.next() => {
                    let d = d.unwrap();
                    handled_a.push(d.envelope.id.clone());
                    d.ack().await.unwrap();
                }
                d = sub_b.next() => {
                    let d = d.unwrap();
                    handled_b.push(d.envelope.id.clone());
                    d.ack().await.unwrap();
                }
            }
        }
        let set_a: HashSet<&String> = handled_a.iter().collect();
        let set_b: HashSet<&String> = handled_b.iter().collect();
        assert_eq!(
            set_a.len(),
            handled_a.len(),
            "the first instance got a duplicate"
        );
        assert_eq!(
            set_b.len(),
            handled_b.len(),
            "the second instance got a duplicate"
        );
        assert!(set_a.is_disjoint(&set_b), "a message was handled by both");
        let all_ids: HashSet<&String> = all.iter().map(|e| &e.id).collect();
        let union: HashSet<&String> = set_a.union(&set_b).copied().collect();
        assert_eq!(union, all_ids);
        assert!(!handled_b.is_empty(), "the second instance got nothing");

        let owned_a = a.owned_partitions(Topic::OrderCreated, "g");
        let owned_b = b.owned_partitions(Topic::OrderCreated, "g");
        assert!(!owned_a.is_empty());
        assert!(owned_a.iter().all(|p| !owned_b.contains(p)));
        assert!(owned_b.contains(&2) && owned_b.contains(&3));
        assert_eq!(owned_a.len() + owned_b.len(), 4);
        assert_eq!(a.pending(Topic::OrderCreated, "g").await.unwrap(), Some(0));
        assert_eq!(b.pending(Topic::OrderCreated, "g").await.unwrap(), Some(0));
    })
    .await;
    a.close().await;
    b.close().await;
    a.delete_topics().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_land_in_the_dead_letter_topic() {
    let broker = KafkaBroker::connect(
        KafkaSettings {
            max_attempts: 3,
            ..settings()
        },
        Arc::new(MemoryOffsetStore::new()),
    )
    .await
    .unwrap();
    within(async {
        let (poisoned, rejected) = (order(1001, 1), order(1001, 2));
        broker
            .publish_batch(&[poisoned.clone(), rejected.clone()])
            .await
            .unwrap();
        let mut sub = broker.subscribe(Topic::OrderCreated, "g").await.unwrap();
        // Three failed handlings (max_attempts) of the first message...
        for attempt in 0..3 {
            let d = sub.next().await.unwrap();
            assert_eq!(d.envelope, poisoned);
            assert_eq!(d.redelivered, attempt > 0);
            d.nack(true).await.unwrap();
        }
        // ...dead-letter it; the second is given up at once.
        let d = sub.next().await.unwrap();
        assert_eq!(d.envelope, rejected);
        assert!(!d.redelivered);
        d.nack(false).await.unwrap();
        assert_eq!(
            broker.pending(Topic::OrderCreated, "g").await.unwrap(),
            Some(0)
        );
        assert_eq!(
            broker.dead_letters(Topic::OrderCreated, "g").await.unwrap(),
            vec![poisoned.clone(), rejected.clone()]
        );
        assert!(
            broker
                .dead_letters(Topic::OrderCreated, "other")
                .await
                .unwrap()
                .is_empty()
        );

        // Read the dead-letter topic itself, by its documented name.
        let dlq = format!("{}.dlq", broker.topic_name(Topic::OrderCreated));
        let client = ClientBuilder::new(vec!["127.0.0.1:9092".to_owned()])
            .build()
            .await
            .unwrap();
        let mut found = Vec::new();
        for partition in 0..4 {
            let pc = client
                .partition_client(dlq.as_str(), partition, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let (records, _) = pc.fetch_records(0, 1..1_000_000, 1).await.unwrap();
            for r in records {
                let envelope = Envelope::from_json(r.record.value.as_deref().unwrap()).unwrap();
                assert_eq!(r.record.headers["seckill-dlq-group"], b"g");
                found.push((
                    envelope.id,
                    r.record.headers["seckill-dlq-attempts"].clone(),
                ));
            }
        }
        assert_eq!(
            found,
            vec![
                ("oc-1001-1".to_owned(), b"3".to_vec()),
                ("oc-1001-2".to_owned(), b"1".to_vec()),
            ]
        );
    })
    .await;
    broker.close().await;
    broker.delete_topics().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_broker_refuses_work() {
    let broker = KafkaBroker::connect(settings(), Arc::new(MemoryOffsetStore::new()))
        .await
        .unwrap();
    within(async {
        let mut sub = broker.subscribe(Topic::StockChanged, "g").await.unwrap();
        broker.close().await;
        assert!(matches!(sub.next().await, Err(MqError::Closed)));
        assert!(matches!(
            broker.publish(&order(1, 1)).await,
            Err(MqError::Closed)
        ));
        assert!(matches!(
            broker.subscribe(Topic::StockChanged, "g").await,
            Err(MqError::Closed)
        ));
    })
    .await;
    broker.delete_topics().await.unwrap();
}

#[tokio::test]
async fn connect_refuses_invalid_settings() {
    let invalid = KafkaSettings {
        partitions: 0,
        ..settings()
    };
    let err = KafkaBroker::connect(invalid, Arc::new(MemoryOffsetStore::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MqError::InvalidConfig {
                key: "partitions",
                ..
            }
        ),
        "{err:?}"
    );
}
