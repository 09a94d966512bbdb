//! A request id on every answer and every log line of its request: `x-request-id` taken from
//! the request when it is a usable id (1 to 128 visible ASCII characters), else a fresh one.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub use seckill_service::request_id::HEADER;

/// The middleware: runs the request inside a `request` span carrying its id, and answers
/// with the id.
pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let id =
        seckill_service::request_id::of(req.headers().get(HEADER).and_then(|v| v.to_str().ok()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
