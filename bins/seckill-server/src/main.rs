//! `seckill-server`: reads the configuration, installs telemetry, builds the components and
//! serves until SIGINT or SIGTERM.
//!
//! Usage: `seckill-server [--config FILE]` (or `SECKILL_CONFIG=FILE`). Without a file it reads
//! `config/seckill.yaml` when present; `SECKILL_<SECTION>__<KEY>` variables override both.
//! An invalid configuration exits with status 64, naming each bad key and its source.

use std::process::ExitCode;

use anyhow::Context;
use seckill_api::{App, Components};
use tokio::net::TcpListener;

use seckill_server::config::{self, Config, FileChoice, InventoryBackend};
use seckill_server::telemetry;

/// Exit status for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn file_choice() -> Result<FileChoice, String> {
    let mut args = std::env::args().skip(1);
    let mut named = std::env::var_os("SECKILL_CONFIG").map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            named = Some(args.next().ok_or("--config needs a file path")?.into());
        } else if let Some(path) = arg.strip_prefix("--config=") {
            named = Some(path.into());
        } else if arg == "--help" || arg == "-h" {
            println!(
                "usage: seckill-server [--config FILE]\n\nconfiguration: {} when present, then SECKILL_<SECTION>__<KEY> environment variables",
                config::DEFAULT_FILE
            );
            std::process::exit(0);
        } else {
            return Err(format!("unknown argument {arg:?} (try --help)"));
        }
    }
    Ok(named.map_or(FileChoice::Default, FileChoice::Named))
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match file_choice().and_then(|f| config::load(&f)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("seckill-server: invalid configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_logging(&config.telemetry);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("seckill-server failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let render = telemetry::init_metrics(&config.telemetry)?;
    let mut components = Components::embedded();
    if config.inventory.backend == InventoryBackend::Redis {
        let (settings, options) = config.redis_settings();
        let inventory = seckill_inventory::RedisInventory::connect(&settings, options)
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}:{} (inventory.backend = redis)",
                    settings.host, settings.port
                )
            })?;
        components.inventory = std::sync::Arc::new(inventory);
    }
    let app = App::start(config.api_settings(), components, render)
        .await
        .context("starting the order pipeline")?;
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
    seckill_api::serve(listener, app, shutdown_signal()).await?;
    tracing::info!("seckill-server stopped");
    Ok(())
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
