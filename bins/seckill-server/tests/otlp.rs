//! With the `otlp` feature and `telemetry.otlp_endpoint`, the binary exports its spans —
//! the request (with its request id), the purchase, the relay, the order store — over
//! OTLP/HTTP, here to a small receiver of the test's own.

#![cfg(all(unix, feature = "otlp"))]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use seckill_test_support::{clean_command, free_port};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_otlp_endpoint() {
    // The receiver: keeps every export request's body.
    let bodies: Arc<Mutex<Vec<u8>>> = Arc::default();
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: bytes::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().extend_from_slice(&body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let port = free_port();
    let dir = std::env::temp_dir().join(seckill_test_support::unique("otlp"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = clean_command(env!("CARGO_BIN_EXE_seckill-server"))
        .current_dir(&dir)
        .env("SECKILL_SERVER__HOST", "127.0.0.1")
        .env("SECKILL_SERVER__PORT", port.to_string())
        .env("SECKILL_SERVER__GRPC_PORT", free_port().to_string())
        .env("SECKILL_SECKILL__RATE_LIMIT__ENABLE", "false")
        .env(
            "SECKILL_TELEMETRY__OTLP_ENDPOINT",
            format!("http://{receiver}"),
        )
        .env("SECKILL_TELEMETRY__SERVICE_NAME", "seckill-otlp-test")
        // Export every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("seckill-server listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the server listens");

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let now = chrono::Utc::now();
    let r = client
        .post(format!("{base}/api/v1/seckill/activity/prewarm"))
        .json(&json!({
            "product_id": 5, "product_name": "traced", "price": 1.0, "stock": 10,
            "start_time": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "end_time": (now + chrono::Duration::hours(1)).to_rfc3339(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/v1/seckill/purchase"))
        .header("x-request-id", "traced-request-77")
        .json(&json!({"product_id": 5, "user_id": 1, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Protobuf keeps strings as they are: the span names and attributes show in the bytes.
    let contains = |needle: &str| {
        let b = bodies.lock().unwrap();
        b.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    seckill_test_support::eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        "the spans exported",
        || async {
            [
                "seckill-otlp-test",
                "traced-request-77",
                "purchase",
                "relay",
                "store_orders",
            ]
            .iter()
            .all(|n| contains(n))
            .then_some(())
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
