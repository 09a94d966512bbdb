//! The production stack for end-to-end tests: Redis inventory and results, PostgreSQL orders,
//! and RabbitMQ or Kafka — each under names of the test's own, removed by [`Stack::cleanup`].

use std::sync::Arc;
use std::time::Duration;

use seckill_api::Components;
use seckill_api::pipeline::{PURCHASE_WORKERS_GROUP, RedisResults};
use seckill_inventory::{RedisInventory, RedisInventoryOptions, RedisSettings};
use seckill_mq::{Broker, KafkaBroker, KafkaSettings, RabbitBroker, RabbitSettings, Topic};
use seckill_orders::{ORDER_SERVICE_GROUP, PgOrderStore, PgSettings};

use super::proxy::Proxy;

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mq {
    Rabbit,
    Kafka,
}

pub struct Stack {
    pub mq: Mq,
    pub name: String,
    pub orders: Arc<PgOrderStore>,
    /// Between the instances and RabbitMQ, when asked for.
    pub proxy: Option<Proxy>,
    inventories: parking_lot::Mutex<Vec<Arc<RedisInventory>>>,
    rabbits: parking_lot::Mutex<Vec<RabbitBroker>>,
    kafkas: parking_lot::Mutex<Vec<Arc<KafkaBroker>>>,
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("e2e_{}_{nanos}", std::process::id())
}

impl Stack {
    pub async fn new(mq: Mq) -> Self {
        Self::build(mq, false).await
    }

    /// A stack whose RabbitMQ connections go through a [`Proxy`] the test can take down.
    pub async fn with_proxy(mq: Mq) -> Self {
        Self::build(mq, true).await
    }

    async fn build(mq: Mq, proxied: bool) -> Self {
        let name = unique();
        let orders = Arc::new(
            PgOrderStore::connect(&PgSettings {
                schema: Some(name.clone()),
                ..PgSettings::default()
            })
            .await
            .expect("these tests need PostgreSQL at 127.0.0.1:5432: run `bash scripts/test.sh`"),
        );
        let proxy = if proxied {
            assert_eq!(mq, Mq::Rabbit, "the proxy is for RabbitMQ");
            Some(Proxy::start("127.0.0.1:5672".parse().unwrap()).await)
        } else {
            None
        };
        Self {
            mq,
            name,
            orders,
            proxy,
            inventories: Default::default(),
            rabbits: Default::default(),
            kafkas: Default::default(),
        }
    }

    /// Components of one more instance: its own connections to the shared backends.
    pub async fn components(&self) -> Components {
        let inventory = Arc::new(
            RedisInventory::connect(
                &RedisSettings::default(),
                RedisInventoryOptions {
                    key_prefix: self.name.clone(),
                    // A crashed instance's claimed sales are taken over after 1 s.
                    reclaim_after: Duration::from_secs(1),
                    ..Default::default()
                },
            )
            .await
            .expect("these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`"),
        );
        self.inventories.lock().push(inventory.clone());
        let broker: Arc<dyn Broker> = match self.mq {
            Mq::Rabbit => {
                let port = self.proxy.as_ref().map_or(5672, |p| p.addr.port());
                let b = RabbitBroker::connect(self.rabbit_settings(port))
                    .await
                    .expect(
                        "these tests need RabbitMQ at 127.0.0.1:5672: run `bash scripts/test.sh`",
                    );
                self.rabbits.lock().push(b.clone());
                Arc::new(b)
            }
            Mq::Kafka => {
                let b = Arc::new(
                    KafkaBroker::connect(
                        KafkaSettings {
                            topic_prefix: format!("{}.", self.name),
                            lease_ttl: Duration::from_secs(3),
                            ..KafkaSettings::default()
                        },
                        self.orders.clone(),
                    )
                    .await
                    .expect("these tests need a Kafka broker at 127.0.0.1:9092: run `bash scripts/test.sh`"),
                );
                self.kafkas.lock().push(b.clone());
                b
            }
        };
        Components {
            results: Some(Arc::new(RedisResults::new(
                inventory.client().clone(),
                &self.name,
                Duration::from_secs(600),
            ))),
            inventory,
            broker,
            orders: self.orders.clone(),
        }
    }

    /// Drops every broker connection made so far without a goodbye, as a killed process does:
    /// RabbitMQ requeues their unacknowledged messages, Kafka partition leases lapse.
    pub async fn kill_brokers(&self) {
        let rabbits: Vec<_> = self.rabbits.lock().drain(..).collect();
        for r in rabbits {
            r.close().await;
        }
        let kafkas: Vec<_> = self.kafkas.lock().drain(..).collect();
        for k in kafkas {
            k.shutdown().await;
        }
    }

    fn rabbit_settings(&self, port: u16) -> RabbitSettings {
        RabbitSettings {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            prefix: self.name.clone(),
            groups: vec![
                (Topic::OrderCreated, ORDER_SERVICE_GROUP.into()),
                (Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP.into()),
            ],
            ..RabbitSettings::default()
        }
    }

    /// Removes the test's keys, queues or topics, and schema.
    pub async fn cleanup(self) {
        let inventories: Vec<_> = self.inventories.lock().drain(..).collect();
        if let Some(inv) = inventories.first() {
            // Stock, outboxes and asynchronous results all live under the prefix.
            inv.purge().await.unwrap();
        }
        self.kill_brokers().await;
        if self.mq == Mq::Rabbit {
            let r = RabbitBroker::connect(self.rabbit_settings(5672))
                .await
                .unwrap();
            r.delete_topology().await.unwrap();
            r.close().await;
        }
        if self.mq == Mq::Kafka {
            let b = KafkaBroker::connect(
                KafkaSettings {
                    topic_prefix: format!("{}.", self.name),
                    ..KafkaSettings::default()
                },
                Arc::new(seckill_mq::MemoryOffsetStore::new()),
            )
            .await
            .unwrap();
            b.delete_topics().await.unwrap();
            b.shutdown().await;
        }
        self.orders.drop_schema().await.unwrap();
    }
}
