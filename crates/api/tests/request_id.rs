//! Every answer carries `x-request-id` (the caller's when usable, else a fresh one), and the
//! log lines of its request carry the same id.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Server, activity, settings};
use seckill_service::Components;

/// Log output kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_and_its_log_lines_carry_the_request_id() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let s = Server::start(settings(), Components::embedded()).await;
    let send = |id: Option<&str>, path: &str| {
        let mut r = s.client.get(s.url(path));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    // The caller's id comes back, on success and on errors alike.
    for path in ["/health", "/api/v1/seckill/stats/999", "/no/such/route"] {
        let r = send(Some("trace-abc-123"), path).await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "trace-abc-123", "{path}");
    }
    // None, or an unusable one: a fresh id, different each time.
    let fresh = |r: &reqwest::Response| {
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        id
    };
    let a = fresh(&send(None, "/health").await.unwrap());
    let b = fresh(&send(Some(&"x".repeat(200)), "/health").await.unwrap());
    let c = fresh(&send(Some("has space"), "/health").await.unwrap());
    assert!(a != b && b != c && a != c);
    // A log line written while serving a request names its id: the prewarm logs one.
    let r = s
        .client
        .post(s.url("/api/v1/seckill/activity/prewarm"))
        .header("x-request-id", "prewarm-req-42")
        .json(&activity(4401, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("4401"))
        .unwrap_or_else(|| panic!("no log line of the prewarm in:\n{text}"));
    assert!(line.contains("request_id=prewarm-req-42"), "{line}");
}
