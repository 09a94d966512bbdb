//! A request id on every answer and every log line of its request: `x-request-id` taken from
//! the request when it is a usable id (1 to 128 visible ASCII characters), else a fresh one.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, in both directions.
pub const HEADER: &str = "x-request-id";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh id: 32 hexadecimal digits, unique within the process and unlikely to repeat
/// across processes.
fn fresh() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = std::collections::hash_map::RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(n), state.hash_one(!n))
}

fn usable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware: runs the request inside a `request` span carrying its id, and answers
/// with the id.
pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable(v))
        .map_or_else(fresh, str::to_owned);
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
