//! `seckill-server`: reads the configuration, installs telemetry, builds the components and
//! serves until SIGINT or SIGTERM.
//!
//! Usage: `seckill-server [--config FILE]` (or `SECKILL_CONFIG=FILE`). Without a file it reads
//! `config/seckill.yaml` when present; `SECKILL_<SECTION>__<KEY>` variables override both.
//! An invalid configuration exits with status 64, naming each bad key and its source.
//!
//! `seckill-server token --sub SUBJECT [--role ROLE]... [--ttl 1h]` prints a development JWT
//! signed with the configured `auth.jwt.secret`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use seckill_api::App;
use seckill_service::{Components, Service, ServiceConfig};
use tokio::net::TcpListener;

use seckill_server::config::{self, Config, FileChoice, InventoryBackend, MqBackend};
use seckill_server::telemetry;

/// mimalloc: glibc's allocator contends on its arena locks under the server's many small,
/// short-lived allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// What the command line asks for.
enum Command {
    /// Serve.
    Serve,
    /// Print a development token.
    Token {
        subject: String,
        roles: Vec<String>,
        ttl: std::time::Duration,
    },
    /// Compare Redis with the order store (and repair Redis from it).
    Reconcile { products: Vec<u64>, repair: bool },
}

fn parse_args() -> Result<(Command, FileChoice), String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut named = std::env::var_os("SECKILL_CONFIG").map(Into::into);
    let mut command = Command::Serve;
    if args.peek().map(String::as_str) == Some("reconcile") {
        args.next();
        command = Command::Reconcile {
            products: Vec::new(),
            repair: false,
        };
    } else if args.peek().map(String::as_str) == Some("token") {
        args.next();
        command = Command::Token {
            subject: String::new(),
            roles: Vec::new(),
            ttl: std::time::Duration::from_secs(3600),
        };
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        if let Command::Token {
            subject,
            roles,
            ttl,
        } = &mut command
        {
            match arg.as_str() {
                "--sub" => {
                    *subject = value("--sub")?;
                    continue;
                }
                "--role" => {
                    roles.push(value("--role")?);
                    continue;
                }
                "--ttl" => {
                    *ttl = humantime::parse_duration(&value("--ttl")?)
                        .map_err(|e| format!("--ttl: {e}"))?;
                    continue;
                }
                _ => {}
            }
        }
        if let Command::Reconcile { products, repair } = &mut command {
            match arg.as_str() {
                "--product" => {
                    let p = value("--product")?;
                    products.push(
                        p.parse()
                            .ok()
                            .filter(|&p: &u64| p > 0)
                            .ok_or(format!("--product: {p:?} is not a product id"))?,
                    );
                    continue;
                }
                "--repair" => {
                    *repair = true;
                    continue;
                }
                _ => {}
            }
        }
        if arg == "--config" {
            named = Some(args.next().ok_or("--config needs a file path")?.into());
        } else if let Some(path) = arg.strip_prefix("--config=") {
            named = Some(path.into());
        } else if arg == "--help" || arg == "-h" {
            println!(
                "usage: seckill-server [--config FILE]\n       seckill-server token --sub SUBJECT [--role ROLE]... [--ttl 1h] [--config FILE]\n       seckill-server reconcile --product ID... [--repair] [--config FILE]\n\nconfiguration: {} when present, then SECKILL_<SECTION>__<KEY> environment variables",
                config::DEFAULT_FILE
            );
            std::process::exit(0);
        } else {
            return Err(format!("unknown argument {arg:?} (try --help)"));
        }
    }
    if let Command::Token { subject, .. } = &command {
        if subject.is_empty() {
            return Err("token needs --sub SUBJECT".into());
        }
    }
    if let Command::Reconcile { products, .. } = &command {
        if products.is_empty() {
            return Err("reconcile needs --product ID".into());
        }
    }
    Ok((
        command,
        named.map_or(FileChoice::Default, FileChoice::Named),
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (command, file) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("seckill-server: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("seckill-server: invalid configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Token {
        subject,
        roles,
        ttl,
    } = command
    {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        return match seckill_service::mint_token(&config.auth, &subject, &roles, ttl) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "seckill-server: invalid configuration:\ninvalid auth.{}: {}",
                    e.key, e.reason
                );
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    telemetry::init_logging(&config.telemetry);
    if let Command::Reconcile { products, repair } = command {
        return match reconcile(&config, &products, repair).await {
            Ok(true) => ExitCode::SUCCESS,
            // Drift found and left as it is.
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                tracing::error!("seckill-server reconcile failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let code = match run(config, file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("seckill-server failed: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry::shutdown();
    code
}

async fn run(config: Config, file: FileChoice) -> anyhow::Result<()> {
    let render = telemetry::init_metrics(&config.telemetry)?;
    let components = components(&config).await?;
    let broker = components.broker.clone();
    let service_config = ServiceConfig {
        seckill: config.seckill.clone(),
        orders: config.orders.clone(),
        auth: config.auth.clone(),
        antibot: config.antibot.clone(),
    };
    let (service, pipeline) = Service::start(service_config, components)
        .await
        .context("starting the service")?;
    let addr = (config.server.host.as_str(), config.server.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {}:{}", addr.0, addr.1))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        inventory = ?config.inventory.backend,
        mq = ?config.mq.backend,
        orders = ?config.orders.store,
        "seckill-server listening"
    );
    let admin_listener = match config.server.admin_port {
        None => None,
        Some(port) => {
            let l = TcpListener::bind((addr.0, port))
                .await
                .with_context(|| format!("binding {}:{port} (server.admin_port)", addr.0))?;
            tracing::info!(addr = %l.local_addr()?, "admin plane listening");
            Some(l)
        }
    };
    let grpc_listener = TcpListener::bind((addr.0, config.server.grpc_port))
        .await
        .with_context(|| {
            format!(
                "binding {}:{} (server.grpc_port)",
                addr.0, config.server.grpc_port
            )
        })?;
    tracing::info!(addr = %grpc_listener.local_addr()?, "gRPC listening");
    // One signal stops both fronts.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(file, service.clone()));
    #[cfg(not(unix))]
    drop(file);
    let grpc = tokio::spawn(seckill_grpc::serve(
        grpc_listener,
        service.clone(),
        stopped(stop_rx.clone()),
    ));
    let app = App::new(service, pipeline, config.server.clone(), render);
    seckill_api::serve_with_admin(listener, admin_listener, app, stopped(stop_rx)).await?;
    grpc.await
        .context("the gRPC server panicked")?
        .context("serving gRPC")?;
    // Let the broker go cleanly: Kafka partition leases are released at once, so another
    // instance takes over without waiting for them to lapse.
    broker.close().await;
    tracing::info!("seckill-server stopped");
    Ok(())
}

/// `seckill-server reconcile`: one JSON line per product; true when every product's books
/// agree (or were repaired). A repair sends the sales only Redis holds to the broker again.
async fn reconcile(config: &Config, products: &[u64], repair: bool) -> anyhow::Result<bool> {
    anyhow::ensure!(
        config.inventory.backend == InventoryBackend::Redis
            && config.orders.store == seckill_orders::OrderStoreKind::Postgres,
        "reconcile compares Redis with PostgreSQL: it needs inventory.backend: redis and orders.store: postgres"
    );
    let inventory = seckill_inventory::RedisInventory::connect(config.redis.clone())
        .await
        .context("connecting to Redis")?;
    let orders = Arc::new(
        seckill_orders::PgOrderStore::connect(&config.orders)
            .await
            .context("connecting to PostgreSQL")?,
    );
    // Where a repair sends the sales the order store lacks (none with the in-process broker).
    let broker = broker(config, Some(orders.clone())).await?;
    let mut agree = true;
    for &p in products {
        let drift =
            seckill_service::reconcile(&inventory, &*orders, broker.as_deref(), p, repair).await?;
        println!("{}", serde_json::to_string(&drift)?);
        agree &= drift.repaired || drift.agrees();
    }
    if let Some(b) = broker {
        b.close().await;
    }
    Ok(agree)
}

/// Builds the backends the configuration names; embedded (in-process) for the rest. With
/// Redis and PostgreSQL, also starts the reconciler of the one against the other.
async fn components(config: &Config) -> anyhow::Result<Components> {
    let mut components = Components::embedded();
    let mut redis = None;
    if config.inventory.backend == InventoryBackend::Redis {
        let r = &config.redis;
        let inventory = seckill_inventory::RedisInventory::connect(r.clone())
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}:{} (inventory.backend = redis)",
                    r.host, r.port
                )
            })?;
        inventory
            .check_durability()
            .await
            .context("checking that Redis persists the sales (redis.allow_volatile)")?;
        // Asynchronous results and used purchase tokens live beside the stock, so any
        // instance answers the poll and a token is used once across instances.
        components.results = Some(Arc::new(seckill_service::RedisResults::new(
            inventory.client().clone(),
            &r.key_prefix,
            config.seckill.result_ttl,
        )));
        components.ledger = Some(Arc::new(seckill_service::RedisLedger::new(
            inventory.client().clone(),
            &r.key_prefix,
        )));
        let inventory = Arc::new(inventory);
        redis = Some(inventory.clone());
        components.inventory = inventory;
    }
    let mut pg = None;
    if config.orders.store == seckill_orders::OrderStoreKind::Postgres {
        let store = seckill_orders::PgOrderStore::connect(&config.orders)
            .await
            .context("connecting to PostgreSQL (orders.store = postgres)")?;
        let store = Arc::new(store);
        components.orders = store.clone();
        pg = Some(store);
    }
    if let Some(broker) = broker(config, pg.clone()).await? {
        components.broker = broker;
    }
    if let (Some(inventory), Some(store)) = (redis, pg) {
        tokio::spawn(seckill_service::run_reconciler(
            inventory,
            store,
            components.broker.clone(),
            config.reconciler.clone(),
        ));
    }
    Ok(components)
}

/// The broker `mq.backend` names; `None` for the in-process one. Kafka keeps its consumer
/// positions in `pg` when given.
async fn broker(
    config: &Config,
    pg: Option<Arc<seckill_orders::PgOrderStore>>,
) -> anyhow::Result<Option<Arc<dyn seckill_mq::Broker>>> {
    Ok(Some(match config.mq.backend {
        MqBackend::Memory => return Ok(None),
        MqBackend::Rabbitmq => {
            let settings = seckill_mq::RabbitSettings {
                // Declared at connect, so nothing published before they first subscribe is
                // dropped.
                groups: seckill_service::consumer_groups(),
                ..config.mq.rabbitmq.clone()
            };
            let broker = seckill_mq::RabbitBroker::connect(settings)
                .await
                .with_context(|| {
                    format!(
                        "connecting to RabbitMQ at {} (mq.backend = rabbitmq)",
                        redact(&config.mq.rabbitmq.url)
                    )
                })?;
            Arc::new(broker)
        }
        MqBackend::Kafka => {
            // Consumer positions are kept beside the orders when those are in PostgreSQL.
            let offsets: Arc<dyn seckill_mq::OffsetStore> = match pg {
                Some(store) => store,
                None => {
                    tracing::warn!(
                        "mq.backend = kafka with orders.store = memory: consumer positions are kept in memory; a restart re-reads each partition from its start"
                    );
                    Arc::new(seckill_mq::MemoryOffsetStore::new())
                }
            };
            let broker = seckill_mq::KafkaBroker::connect(config.mq.kafka.clone(), offsets)
                .await
                .with_context(|| {
                    format!(
                        "connecting to Kafka at {:?} (mq.backend = kafka)",
                        config.mq.kafka.brokers
                    )
                })?;
            Arc::new(broker)
        }
    }))
}

/// A URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// On each SIGHUP, reads the configuration again and applies its levers (rate limits,
/// degradation, breaker settings) without a restart; a configuration that does not load is
/// refused, naming its bad keys, and the running settings stay.
#[cfg(unix)]
async fn reload_on_sighup(file: FileChoice, service: seckill_service::Service) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be watched: the levers reload only through the admin API");
        return;
    };
    while hup.recv().await.is_some() {
        match config::load(&file) {
            Ok(next) => {
                let changed = service.reload(&next.seckill);
                tracing::info!(?changed, "configuration reloaded on SIGHUP");
            }
            Err(e) => tracing::error!(
                "configuration reload on SIGHUP refused; the running settings stay: {}",
                e.to_string().trim().replace('\n', "; ")
            ),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received: no new connections; finishing in-flight requests");
}
