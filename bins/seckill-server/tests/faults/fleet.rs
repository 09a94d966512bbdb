//! A fleet of real `seckill-server` processes on a private redis-server, the shared
//! PostgreSQL (a schema of the test's own, optionally behind a [`Proxy`]) and the shared
//! RabbitMQ or Kafka (names of the test's own), with the helpers the fault tests drive it with.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use seckill_mq::{Broker, KafkaBroker, KafkaSettings, RabbitBroker, RabbitSettings};
use seckill_test_support::{PrivateRedis, Proxy, clean_command, eventually, free_port, unique};
use serde_json::{Value, json};

/// The broker of a fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mq {
    Rabbit,
    Kafka,
}

/// One server process.
pub struct Instance {
    child: Option<Child>,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl Instance {
    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &c.id().to_string()])
                .status();
        }
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One answer to a purchase.
#[derive(Clone, Debug)]
pub struct Answer {
    pub user: u64,
    pub status: u16,
    /// The envelope's code (0 when there was no answer at all).
    pub code: i64,
    pub order_id: Option<String>,
}

impl Answer {
    /// A 200 with an order.
    pub fn sold(&self) -> bool {
        self.status == 200 && self.order_id.is_some()
    }
}

/// One stored order, as PostgreSQL holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub order_id: String,
    pub user_id: u64,
    pub status: String,
    pub epoch: u64,
}

pub struct Fleet {
    pub mq: Mq,
    pub name: String,
    pub redis: PrivateRedis,
    pub db_proxy: Option<Proxy>,
    pub instances: Vec<Instance>,
    pub client: reqwest::Client,
    env: Vec<(String, String)>,
    dir: std::path::PathBuf,
}

impl Fleet {
    /// A fleet with no instance yet; `env` is added to every instance's environment (after
    /// the fleet's own, so it overrides).
    pub async fn new(mq: Mq, db_proxied: bool, env: &[(&str, &str)]) -> Self {
        let name = unique("fault");
        let redis = PrivateRedis::start(&[]).await;
        let db_proxy = if db_proxied {
            Some(Proxy::start("127.0.0.1:5432".parse().unwrap()).await)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let db_port = db_proxy.as_ref().map_or(5432, |p| p.addr.port());
        let mut all: Vec<(String, String)> = vec![
            ("SECKILL_SERVER__HOST".into(), "127.0.0.1".into()),
            ("SECKILL_SERVER__SHUTDOWN_TIMEOUT".into(), "2s".into()),
            ("SECKILL_INVENTORY__BACKEND".into(), "redis".into()),
            ("SECKILL_REDIS__HOST".into(), "127.0.0.1".into()),
            ("SECKILL_REDIS__PORT".into(), redis.port.to_string()),
            ("SECKILL_REDIS__KEY_PREFIX".into(), name.clone()),
            // Its own redis-server, which persists nothing: restarts are what the tests do.
            ("SECKILL_REDIS__ALLOW_VOLATILE".into(), "true".into()),
            ("SECKILL_REDIS__RECLAIM_AFTER".into(), "1s".into()),
            ("SECKILL_ORDERS__STORE".into(), "postgres".into()),
            (
                "SECKILL_ORDERS__DATABASE_URL".into(),
                format!("postgres://postgres@127.0.0.1:{db_port}/postgres"),
            ),
            ("SECKILL_ORDERS__SCHEMA".into(), name.clone()),
            ("SECKILL_ORDERS__CONNECT_TIMEOUT".into(), "2s".into()),
            ("SECKILL_ORDERS__QUERY_TIMEOUT".into(), "2s".into()),
            ("SECKILL_SECKILL__RATE_LIMIT__ENABLE".into(), "false".into()),
            (
                "SECKILL_SECKILL__CIRCUIT_BREAKER__RECOVERY_TIMEOUT".into(),
                "500ms".into(),
            ),
            ("SECKILL_RECONCILER__INTERVAL".into(), "1s".into()),
            ("SECKILL_TELEMETRY__LOG_LEVEL".into(), "info".into()),
        ];
        match mq {
            Mq::Rabbit => {
                all.push(("SECKILL_MQ__BACKEND".into(), "rabbitmq".into()));
                all.push(("SECKILL_MQ__RABBITMQ__PREFIX".into(), name.clone()));
            }
            Mq::Kafka => {
                all.push(("SECKILL_MQ__BACKEND".into(), "kafka".into()));
                all.push(("SECKILL_MQ__KAFKA__TOPIC_PREFIX".into(), format!("{name}.")));
                all.push(("SECKILL_MQ__KAFKA__PARTITIONS".into(), "2".into()));
                // A killed instance's partitions are taken over within seconds.
                all.push(("SECKILL_MQ__KAFKA__LEASE_TTL".into(), "3s".into()));
                all.push(("SECKILL_MQ__KAFKA__LEASE_RETRY".into(), "500ms".into()));
            }
        }
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Self {
            mq,
            name,
            redis,
            db_proxy,
            instances: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            env: all,
            dir,
        }
    }

    /// The server command with the fleet's environment and nothing else of `SECKILL_*`.
    pub fn command(&self) -> Command {
        let mut c = clean_command(env!("CARGO_BIN_EXE_seckill-server"));
        c.current_dir(&self.dir);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts one more instance and waits until it listens; its index.
    pub async fn start(&mut self) -> usize {
        let port = free_port();
        let mut child = self
            .command()
            .env("SECKILL_SERVER__PORT", port.to_string())
            .env("SECKILL_SERVER__GRPC_PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (up_tx, up_rx) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, up_tx) = (log.clone(), up_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.contains("seckill-server listening") {
                        let _ = up_tx.send(());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let instance = Instance {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let up = tokio::task::spawn_blocking(move || up_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(
            up.is_ok(),
            "instance did not start; its log:\n{}",
            instance.log()
        );
        self.instances.push(instance);
        self.instances.len() - 1
    }

    /// `POST path` on instance `i`; (status, body). A connection failure is status 0.
    pub async fn post(&self, i: usize, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}{path}", self.instances[i].base))
            .json(&body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        match r.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// `GET path` on instance `i`.
    pub async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        match self
            .client
            .get(format!("{}{path}", self.instances[i].base))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// The metrics exposition of instance `i`.
    pub async fn metrics(&self, i: usize) -> String {
        self.client
            .get(format!("{}/metrics", self.instances[i].base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits up to `within` until a line of instance `i`'s metrics satisfies `matches`.
    pub async fn metric_line(&self, i: usize, within: Duration, matches: impl Fn(&str) -> bool) {
        eventually(
            within,
            Duration::from_millis(100),
            "the metric line",
            || async { self.metrics(i).await.lines().any(&matches).then_some(()) },
        )
        .await;
    }

    /// Prewarms `product` with `stock` items on instance `i`; the answer's data.
    pub async fn prewarm(&self, i: usize, product: u64, stock: u64) -> Value {
        let now = chrono::Utc::now();
        let body = json!({
            "product_id": product,
            "product_name": "fault",
            "price": 10.0,
            "stock": stock,
            "start_time": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "end_time": (now + chrono::Duration::hours(2)).to_rfc3339(),
        });
        let (st, v) = self
            .post(i, "/api/v1/seckill/activity/prewarm", body, None)
            .await;
        assert_eq!(st, 200, "prewarm: {v}");
        v["data"].clone()
    }

    /// The stats of `product` on instance `i`.
    pub async fn stats(&self, i: usize, product: u64) -> Value {
        let (st, v) = self
            .get(i, &format!("/api/v1/seckill/stats/{product}"))
            .await;
        assert_eq!(st, 200, "stats: {v}");
        v["data"].clone()
    }

    /// One purchase of one item by `user` on instance `i`, with `key` as its Idempotency-Key.
    pub async fn buy(&self, i: usize, product: u64, user: u64, key: Option<&str>) -> Answer {
        let (status, v) = self
            .post(
                i,
                "/api/v1/seckill/purchase",
                json!({"product_id": product, "user_id": user, "quantity": 1}),
                key,
            )
            .await;
        Answer {
            user,
            status,
            code: v["code"].as_i64().unwrap_or(0),
            order_id: v["data"]["order_id"].as_str().map(str::to_owned),
        }
    }

    /// Every user of `users` buys once on instance `i`, 32 at a time, with the Idempotency-Key
    /// `k-{user}`; `done` counts the answers as they come.
    pub async fn burst(
        self: &Arc<Self>,
        i: usize,
        product: u64,
        users: Vec<u64>,
        done: Arc<AtomicUsize>,
    ) -> Vec<Answer> {
        let queue = Arc::new(Mutex::new(users));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (fleet, queue, done) = (self.clone(), queue.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let Some(user) = queue.lock().unwrap().pop() else {
                        return out;
                    };
                    out.push(
                        fleet
                            .buy(i, product, user, Some(&format!("k-{user}")))
                            .await,
                    );
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    }

    /// Runs SQL on the test's schema through `psql`; its rows, `|`-separated.
    pub fn sql(&self, sql: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qAt",
            ])
            .arg("-c")
            .arg(format!("SET search_path TO \"{}\"; {sql}", self.name))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty() && *l != "SET")
            .map(str::to_owned)
            .collect()
    }

    /// Every stored order of `product`.
    pub fn rows(&self, product: u64) -> Vec<Row> {
        self.sql(&format!(
            "SELECT order_id, user_id, status, epoch FROM orders WHERE product_id = {product}"
        ))
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Row {
                order_id: f[0].to_owned(),
                user_id: f[1].parse().unwrap(),
                status: f[2].to_owned(),
                epoch: f[3].parse().unwrap(),
            }
        })
        .collect()
    }

    /// Waits until nothing of `product` is in transit on instance `i` (every item Redis
    /// counts as sold is a stored order) and returns the rows.
    pub async fn settled(&self, i: usize, product: u64, within: Duration) -> Vec<Row> {
        eventually(
            within,
            Duration::from_millis(100),
            "the sale settles",
            || async {
                let st = self.stats(i, product).await;
                let live = self
                    .rows(product)
                    .into_iter()
                    .filter(|r| r.status != "cancelled")
                    .count() as u64;
                (st["in_transit"] == 0
                    && st["outbox_pending"] == 0
                    && st["sold"].as_u64() == Some(live))
                .then_some(())
            },
        )
        .await;
        self.rows(product)
    }

    /// Removes what the test left on the shared services.
    pub async fn cleanup(mut self) {
        for i in &mut self.instances {
            i.kill();
        }
        if let Some(p) = &self.db_proxy {
            p.up();
        }
        self.sql(&format!("DROP SCHEMA \"{}\" CASCADE", self.name));
        match self.mq {
            Mq::Rabbit => {
                let r = RabbitBroker::connect(RabbitSettings {
                    prefix: self.name.clone(),
                    groups: seckill_service::consumer_groups(),
                    ..RabbitSettings::default()
                })
                .await
                .unwrap();
                r.delete_topology().await.unwrap();
                r.close().await;
            }
            Mq::Kafka => {
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
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks the books of `product` once settled: every row a distinct order id and a distinct
/// buyer; every buyer answered 200 holds exactly the order they were answered with; items
/// left plus live rows make the stock. Returns the live rows by buyer.
pub fn assert_books(
    answers: &[Answer],
    rows: &[Row],
    stats: &Value,
    stock: u64,
) -> HashMap<u64, Row> {
    let mut by_id = HashMap::new();
    let mut by_user = HashMap::new();
    for r in rows.iter().filter(|r| r.status != "cancelled") {
        assert!(
            by_id.insert(r.order_id.clone(), r.clone()).is_none(),
            "order id {} stored twice",
            r.order_id
        );
        assert!(
            by_user.insert(r.user_id, r.clone()).is_none(),
            "user {} holds two orders",
            r.user_id
        );
    }
    for a in answers.iter().filter(|a| a.sold()) {
        let id = a.order_id.as_ref().unwrap();
        let row = by_user
            .get(&a.user)
            .unwrap_or_else(|| panic!("user {}'s answered sale {id} was lost", a.user));
        assert_eq!(
            &row.order_id, id,
            "user {} was answered another order",
            a.user
        );
    }
    assert_eq!(
        stats["remaining_stock"].as_u64().unwrap() + by_user.len() as u64,
        stock,
        "the ledger does not balance: {stats}"
    );
    by_user
}
