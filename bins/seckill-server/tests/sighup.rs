//! SIGHUP reloads the levers from the configuration file: a tightened limit applies at once,
//! a changed limit hands out no fresh burst, and a broken file changes nothing. The server
//! logs JSON lines here, each request's with its request id.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use seckill_test_support::{clean_command, free_port};
use serde_json::{Value, json};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn limits(rps: u32, burst: u32, message: &str) -> String {
    format!(
        "seckill:\n  rate_limit:\n    enable: true\n    requests_per_second: {rps}\n    burst_size: {burst}\n  degradation:\n    response_message: \"{message}\"\n"
    )
}

/// Waits for the next log line that contains `what`.
fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no log line with {what:?}"));
        if line.contains(what) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_levers_and_refuses_a_broken_file() {
    let dir = std::env::temp_dir().join(seckill_test_support::unique("sighup"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seckill.yaml");
    std::fs::write(&file, limits(10_000, 10_000, "busy")).unwrap();
    let port = free_port();
    let mut child = clean_command(env!("CARGO_BIN_EXE_seckill-server"))
        .current_dir(&dir)
        .arg("--config")
        .arg(&file)
        .env("SECKILL_SERVER__HOST", "127.0.0.1")
        .env("SECKILL_SERVER__PORT", port.to_string())
        .env("SECKILL_SERVER__GRPC_PORT", free_port().to_string())
        .env("SECKILL_TELEMETRY__LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().unwrap();
    let pid = child.id().to_string();
    let _running = Running(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let up: Value = serde_json::from_str(&next_line(&lines, "seckill-server listening")).unwrap();
    assert_eq!(up["level"], "INFO", "{up}");
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client
                .post(url)
                .header("x-request-id", "sighup-test")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = chrono::Utc::now();
    let (st, v) = post(
        "/api/v1/seckill/activity/prewarm",
        json!({
            "product_id": 31, "product_name": "reload", "price": 1.0, "stock": 100000,
            "start_time": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "end_time": (now + chrono::Duration::hours(1)).to_rfc3339(),
        }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let prewarmed: Value = serde_json::from_str(&next_line(&lines, "activity prewarmed")).unwrap();
    assert_eq!(
        prewarmed["span"]["request_id"], "sighup-test",
        "{prewarmed}"
    );
    let mut user = 0u64;
    let mut buy = |n: usize| {
        let users: Vec<u64> = (0..n)
            .map(|_| {
                user += 1;
                user
            })
            .collect();
        let post = &post;
        async move {
            let mut statuses = Vec::new();
            for u in users {
                let (st, _) = post(
                    "/api/v1/seckill/purchase",
                    json!({"product_id": 31, "user_id": u, "quantity": 1}),
                )
                .await;
                statuses.push(st);
            }
            statuses
        }
    };
    assert!(buy(5).await.iter().all(|&s| s == 200));

    // Tightened in the file: applies to the next request.
    std::fs::write(&file, limits(1, 2, "busy")).unwrap();
    hup();
    let line = next_line(&lines, "reloaded on SIGHUP");
    assert!(line.contains("seckill.rate_limit"), "{line}");
    // One permit a second: a slow machine earns one more per second the test takes.
    let tightened = std::time::Instant::now();
    let after = buy(5).await;
    let earned = tightened.elapsed().as_secs() as usize;
    assert!(
        after.iter().filter(|&&s| s == 200).count() <= 2 + earned,
        "a burst of 2 let through {after:?}"
    );
    // A looser burst hands out no fresh one: the bucket is still spent.
    std::fs::write(&file, limits(1, 3, "busy")).unwrap();
    hup();
    next_line(&lines, "reloaded on SIGHUP");
    let again = buy(3).await;
    let earned = tightened.elapsed().as_secs() as usize;
    assert!(
        again.iter().filter(|&&s| s == 200).count() <= 1 + earned,
        "a fresh burst after the reload: {again:?}"
    );

    // A broken file is refused, naming the key, and the running settings stay.
    std::fs::write(
        &file,
        "seckill:\n  rate_limit:\n    requests_per_second: 0\n",
    )
    .unwrap();
    hup();
    let refused = next_line(&lines, "refused");
    assert!(refused.contains("requests_per_second"), "{refused}");
    let limit: Value = client
        .get(format!("{base}/api/v1/system/rate-limit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            limit["data"]["requests_per_second"].as_u64(),
            limit["data"]["burst_size"].as_u64()
        ),
        (Some(1), Some(3)),
        "{limit}"
    );
    // The admin lever still works beside the file.
    let (st, v) = post("/api/v1/system/rate-limit", json!({"enable": false})).await;
    assert_eq!(st, 200, "{v}");
    assert!(buy(5).await.iter().all(|&s| s == 200));
    let _ = std::fs::remove_dir_all(&dir);
}
