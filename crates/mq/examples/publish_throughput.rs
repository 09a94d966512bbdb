//! Messages per second published with confirms, unbatched (one message, wait for its confirm)
//! and batched (`publish_batch` of 256, confirms awaited together), on every backend, measured
//! in interleaved rounds in one run.
//!
//! ```text
//! cargo run --release -p seckill-mq --features rabbitmq,kafka --example publish_throughput -- [ROUNDS] [MESSAGES]
//! ```
//! Needs RabbitMQ on 127.0.0.1:5672 and a Kafka-compatible broker on 127.0.0.1:9092
//! (`bash scripts/services.sh rabbitmq kafka`). Each round uses its own exchange/topic prefix and
//! deletes it afterwards.

use std::sync::Arc;
use std::time::Instant;

use seckill_mq::{
    Broker, Envelope, KafkaBroker, KafkaSettings, MemoryBroker, MemoryOffsetStore, Message,
    OrderCreated, RabbitBroker, RabbitSettings, Topic,
};

const BATCH: usize = 256;

fn messages(n: usize) -> Vec<Envelope> {
    (0..n as u64)
        .map(|i| {
            Envelope::new(
                format!("oc-{}-{i}", 1000 + i % 16),
                Message::OrderCreated(OrderCreated {
                    order_id: format!("{}-{i}", 1000 + i % 16),
                    product_id: 1000 + i % 16,
                    user_id: i,
                    quantity: 1,
                    price_cents: 899_900,
                    sold_at_ms: 0,
                    epoch: 1,
                }),
            )
        })
        .collect()
}

async fn publish(broker: &dyn Broker, msgs: &[Envelope], batched: bool) -> f64 {
    let t0 = Instant::now();
    if batched {
        for chunk in msgs.chunks(BATCH) {
            broker.publish_batch(chunk).await.expect("published");
        }
    } else {
        for m in msgs {
            broker.publish(m).await.expect("published");
        }
    }
    msgs.len() as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One backend under test, and how to remove what it made.
enum Backend {
    Memory(MemoryBroker),
    Rabbit(RabbitBroker),
    Kafka(Arc<KafkaBroker>),
}

impl Backend {
    async fn connect(name: &str, prefix: &str) -> Self {
        match name {
            "memory" => {
                let b = MemoryBroker::new();
                // A subscribed group, so messages are queued as on the real brokers.
                b.subscribe(Topic::OrderCreated, "bench").await.unwrap();
                Self::Memory(b)
            }
            "rabbitmq" => Self::Rabbit(
                RabbitBroker::connect(RabbitSettings {
                    prefix: prefix.to_owned(),
                    groups: vec![(Topic::OrderCreated, "bench".into())],
                    ..RabbitSettings::default()
                })
                .await
                .expect("RabbitMQ at 127.0.0.1:5672"),
            ),
            _ => Self::Kafka(Arc::new(
                KafkaBroker::connect(
                    KafkaSettings {
                        topic_prefix: format!("{prefix}."),
                        ..KafkaSettings::default()
                    },
                    Arc::new(MemoryOffsetStore::new()),
                )
                .await
                .expect("Kafka at 127.0.0.1:9092"),
            )),
        }
    }

    fn broker(&self) -> &dyn Broker {
        match self {
            Self::Memory(b) => b,
            Self::Rabbit(b) => b,
            Self::Kafka(b) => &**b,
        }
    }

    async fn cleanup(self) {
        match self {
            Self::Memory(_) => {}
            Self::Rabbit(b) => {
                b.delete_topology().await.unwrap();
                b.close().await;
            }
            Self::Kafka(b) => {
                b.delete_topics().await.unwrap();
                b.close().await;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let n: usize = args.next().map_or(5_000, |a| a.parse().expect("MESSAGES"));
    let msgs = messages(n);
    let unbatched_n = (n / 5).max(1);
    let names = ["memory", "rabbitmq", "kafka"];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); names.len()];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            let prefix = format!("bench-{}-{round}", std::process::id());
            let backend = Backend::connect(name, &prefix).await;
            results[i]
                .0
                .push(publish(backend.broker(), &msgs[..unbatched_n], false).await);
            results[i]
                .1
                .push(publish(backend.broker(), &msgs, true).await);
            backend.cleanup().await;
        }
    }
    println!(
        "messages/s published with confirms, medians of {rounds} interleaved rounds ({unbatched_n} one by one, {n} in batches of {BATCH}):"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>8}",
        "backend", "unbatched", "batched", "ratio"
    );
    for (i, name) in names.iter().enumerate() {
        let (u, b) = (median(results[i].0.clone()), median(results[i].1.clone()));
        println!("{name:<10} {u:>12.0} {b:>12.0} {:>7.1}x", b / u);
    }
}
