//! `seckill-bench`: an HTTP/1.1 keep-alive load generator, and the bare server it is compared
//! with (the HTTP ceiling of this machine).
//!
//! ```text
//! seckill-bench load --url http://127.0.0.1:8083/api/v1/seckill/purchase \
//!     --body '{"product_id":1001,"user_id":{user},"quantity":1}' --connections 64 --seconds 10
//! seckill-bench bare --port 18090
//! seckill-bench memory --stock 1000000000 --sales 1000000
//! ```
//! `{user}` in the body is replaced by a counter (1, 2, …) per request; `--rate R` paces the
//! whole load at R requests per second (otherwise each connection sends as fast as answered). `load` prints one JSON
//! line: requests, requests per second, statuses, latency percentiles in microseconds.
//! `memory` runs embedded mode in this process, sells `--sales` items to new buyers, lets the
//! pipeline drain and prints one JSON line with the resident memory it grew by per sale.

mod memory;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

struct LoadArgs {
    url: hyper::Uri,
    body: Option<String>,
    connections: usize,
    seconds: u64,
    threads: usize,
    user_start: u64,
    /// Total requests per second to pace at (spread over the connections); `None`: as fast as
    /// the server answers.
    rate: Option<f64>,
}

fn parse_load(args: &[String]) -> anyhow::Result<LoadArgs> {
    let mut out = LoadArgs {
        url: "http://127.0.0.1:8083/health".parse()?,
        body: None,
        connections: 64,
        seconds: 10,
        threads: 1,
        user_start: 1,
        rate: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context("missing value");
        match a.as_str() {
            "--url" => out.url = val()?.parse()?,
            "--body" => out.body = Some(val()?.clone()),
            "--connections" => out.connections = val()?.parse()?,
            "--seconds" => out.seconds = val()?.parse()?,
            "--threads" => out.threads = val()?.parse()?,
            "--user-start" => out.user_start = val()?.parse()?,
            "--rate" => out.rate = Some(val()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(out)
}

#[derive(Default)]
struct ConnResult {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

async fn connection(
    args: Arc<LoadArgs>,
    users: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<ConnResult> {
    let host = args.url.host().context("url without host")?.to_owned();
    let port = args.url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = format!("{host}:{port}");
    let mut res = ConnResult::default();
    // Paced: this connection's share of the rate, one request per interval.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r.max(0.001)));
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(i) = interval {
            tokio::time::sleep_until(next).await;
            next += i;
        }
        let req = match &args.body {
            Some(tpl) => {
                let body = if tpl.contains("{user}") {
                    let u = users.fetch_add(1, Ordering::Relaxed);
                    tpl.replace("{user}", &u.to_string())
                } else {
                    tpl.clone()
                };
                Request::post(args.url.clone())
                    .header("host", authority.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?
            }
            None => Request::get(args.url.clone())
                .header("host", authority.as_str())
                .body(Full::new(Bytes::new()))?,
        };
        let t0 = Instant::now();
        match send.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.into_body().collect().await.is_err() {
                    res.errors += 1;
                    break;
                }
                res.latencies_us
                    .push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *res.statuses.entry(status).or_default() += 1;
            }
            Err(_) => {
                res.errors += 1;
                break;
            }
        }
    }
    Ok(res)
}

fn load(args: LoadArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let args = Arc::new(args);
    let users = Arc::new(AtomicU64::new(args.user_start));
    let stop = Arc::new(AtomicBool::new(false));
    let (results, elapsed) = rt.block_on(async {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(connection(args.clone(), users.clone(), stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        (results, t0.elapsed())
    });
    let mut lat = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    for r in results {
        match r {
            Ok(Ok(r)) => {
                lat.extend(r.latencies_us);
                for (s, n) in r.statuses {
                    *statuses.entry(s).or_default() += n;
                }
                errors += r.errors;
            }
            _ => errors += 1,
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize]
        }
    };
    let requests = lat.len() as u64;
    let out = serde_json::json!({
        "url": args.url.to_string(),
        "connections": args.connections,
        "seconds": elapsed.as_secs_f64(),
        "requests": requests,
        "rps": (requests as f64 / elapsed.as_secs_f64()).round(),
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "errors": errors,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": lat.last().copied().unwrap_or(0),
    });
    println!("{out}");
    Ok(())
}

fn bare(port: u16) -> anyhow::Result<()> {
    use axum::routing::{get, post};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        const BODY: &str = r#"{"code":40901,"message":"sold out","data":null}"#;
        let answer = || async {
            (
                axum::http::StatusCode::CONFLICT,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                BODY,
            )
        };
        let app = axum::Router::new()
            .route("/api/v1/seckill/purchase", post(answer))
            .route("/health", get(answer));
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(parse_load(&args[1..])?),
        Some("bare") => {
            let port = args
                .iter()
                .position(|a| a == "--port")
                .and_then(|i| args.get(i + 1))
                .map_or(Ok(18090), |p| p.parse())?;
            bare(port)
        }
        Some("memory") => memory::run(memory::parse(&args[1..])?),
        _ => bail!(
            "usage: seckill-bench load [--url U] [--body B] [--connections N] [--seconds S] [--threads T] | bare [--port P] | memory [--stock S] [--sales N] [--tasks T] [--threads T] [--checkpoints C]"
        ),
    }
}
