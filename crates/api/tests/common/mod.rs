//! Starts the real server on an ephemeral port for a test.

#![allow(dead_code, unreachable_pub)]

pub mod faulty;
pub mod proxy;
pub mod stack;

use std::time::Duration;

use seckill_api::{App, ServerConfig};
use seckill_orders::OrdersConfig;
use seckill_service::{
    AntibotConfig, AuthConfig, Components, Pipeline, RateLimits, Service, ServiceConfig, Settings,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub service: Service,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// The pipeline, when the test holds it (see [`Server::start_holding_pipeline`]).
    pipeline: Option<Pipeline>,
}

/// Settings for tests: the specification's, without the global rate limit unless a test sets it.
pub fn settings() -> Settings {
    Settings {
        rate_limit: RateLimits {
            enable: false,
            ..RateLimits::default()
        },
        ..Settings::default()
    }
}

/// The configuration of a test server beyond the service's settings.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub orders: OrdersConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub antibot: AntibotConfig,
}

async fn app(settings: Settings, setup: Setup, components: Components) -> App {
    let config = ServiceConfig {
        seckill: settings,
        orders: setup.orders,
        auth: setup.auth,
        antibot: setup.antibot,
    };
    let (service, pipeline) = Service::start(config, components)
        .await
        .expect("the service starts");
    App::new(service, pipeline, setup.server, None)
}

impl Server {
    pub async fn start(settings: Settings, components: Components) -> Self {
        Self::start_with(settings, Setup::default(), components).await
    }

    pub async fn start_with(settings: Settings, setup: Setup, components: Components) -> Self {
        let app = app(settings, setup, components).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let service = app.service.clone();
        let task = tokio::spawn(seckill_api::serve(listener, app, async {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            client: client(),
            service,
            stop: Some(tx),
            task: Some(task),
            pipeline: None,
        }
    }

    /// Starts an instance whose pipeline the test holds, so it can crash it
    /// ([`Server::crash_pipeline`]) while the HTTP side keeps serving.
    pub async fn start_holding_pipeline(
        settings: Settings,
        setup: Setup,
        components: Components,
    ) -> Self {
        let App {
            router,
            pipeline,
            service,
            ..
        } = app(settings, setup, components).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            base: format!("http://{addr}"),
            client: client(),
            service,
            stop: Some(tx),
            task: Some(task),
            pipeline: Some(pipeline),
        }
    }

    /// Takes the held pipeline, to crash it with [`Pipeline::abort`] while the server is
    /// borrowed elsewhere.
    pub fn take_pipeline(&mut self) -> Pipeline {
        self.pipeline
            .take()
            .expect("started with start_holding_pipeline")
    }

    /// Kills this instance's relay, order consumers, workers and sweeper mid-stream, as a
    /// crash would; the HTTP side keeps taking purchases.
    pub async fn crash_pipeline(&mut self) {
        self.pipeline
            .take()
            .expect("started with start_holding_pipeline")
            .abort()
            .await;
    }

    pub async fn embedded() -> Self {
        Self::start(settings(), Components::embedded()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs JSON; returns the status and the body as JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON with a bearer token (when given).
    pub async fn post_as(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut r = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs with a bearer token (when given).
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn prewarm(&self, body: Value) -> (u16, Value) {
        self.post("/api/v1/seckill/activity/prewarm", body).await
    }

    /// [`Server::prewarm`] with a bearer token.
    pub async fn prewarm_as(&self, token: &str, body: Value) -> (u16, Value) {
        self.post_as("/api/v1/seckill/activity/prewarm", Some(token), body)
            .await
    }

    pub async fn purchase(&self, product_id: u64, user_id: u64) -> (u16, Value) {
        self.post(
            "/api/v1/seckill/purchase",
            json!({"product_id": product_id, "user_id": user_id, "quantity": 1}),
        )
        .await
    }

    pub async fn stats(&self, product_id: u64) -> Value {
        let (s, v) = self
            .get(&format!("/api/v1/seckill/stats/{product_id}"))
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }

    /// Polls the product's stats until `orders_created` reaches `n` (the pipeline is
    /// asynchronous), failing after 10 s.
    pub async fn wait_orders(&self, product_id: u64, n: u64) -> Value {
        self.wait_orders_within(product_id, n, Duration::from_secs(10))
            .await
    }

    /// [`Server::wait_orders`] with a deadline of `within`.
    pub async fn wait_orders_within(&self, product_id: u64, n: u64, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let st = self.stats(product_id).await;
            if st["orders_created"] == n {
                return st;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "orders_created never reached {n}: {st}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends the shutdown signal and waits for the server (and its pipeline drain) to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        if let Some(p) = self.pipeline.take() {
            assert!(
                p.shutdown(Duration::from_secs(30)).await,
                "pipeline drained"
            );
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// Which inventory a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// In process.
    Memory,
    /// The real Redis at 127.0.0.1:6379, under a unique key prefix.
    Redis,
}

/// Components for `backend`, and the Redis inventory to purge after the test.
pub async fn components(
    backend: Backend,
) -> (
    Components,
    Option<std::sync::Arc<seckill_inventory::RedisInventory>>,
) {
    let mut c = Components::embedded();
    match backend {
        Backend::Memory => (c, None),
        Backend::Redis => {
            let inv = std::sync::Arc::new(
                seckill_inventory::RedisInventory::connect(seckill_inventory::RedisConfig {
                    key_prefix: seckill_test_support::unique("test-api"),
                    // A loaded two-core machine can be slow to accept a pool's connections.
                    connect_timeout: Duration::from_secs(10),
                    ..Default::default()
                })
                .await
                .expect("these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it"),
            );
            c.inventory = inv.clone();
            (c, Some(inv))
        }
    }
}

/// The specification's prewarm body, moved to a window around now.
pub fn activity(product_id: u64, stock: u64) -> Value {
    let now = chrono::Utc::now();
    json!({
        "product_id": product_id,
        "product_name": "iPhone 15 Pro",
        "price": 8999.00,
        "stock": stock,
        "start_time": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "end_time": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "status": "active"
    })
}
