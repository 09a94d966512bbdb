//! `POST /api/v1/seckill/purchase` and `/purchase/async`, `GET /api/v1/seckill/result/{id}`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seckill_inventory::{PurchaseOutcome, PurchaseRequest};
use serde::{Deserialize, Serialize};

use super::{Kind, envelope, ok, parse_json, read_body};
use crate::ApiError;
use crate::error::codes;
use crate::pipeline::{AsyncStatus, Job, purchase_requested};
use crate::state::{AppState, Inner, rejection};
use crate::stats::Outcome;

/// Longest wait for the broker to confirm an accepted asynchronous purchase.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Deserialize)]
struct PurchaseBody {
    product_id: u64,
    user_id: u64,
    #[serde(default = "one")]
    quantity: u64,
}

fn one() -> u64 {
    1
}

const FIELDS: &[(&str, Kind, bool)] = &[
    ("product_id", Kind::PositiveInt, true),
    ("user_id", Kind::PositiveInt, true),
    ("quantity", Kind::PositiveInt, false),
];

#[derive(Serialize)]
struct Sold {
    order_id: String,
    product_id: u64,
    user_id: u64,
    quantity: u32,
    remaining_stock: u64,
}

/// Reads, validates and admits a purchase through degradation and the rate limits.
async fn admit(s: &Inner, req: Request) -> Result<PurchaseRequest, ApiError> {
    let (parts, body) = req.into_parts();
    let invalid = |e: ApiError| {
        s.stats.count(Outcome::Invalid);
        e
    };
    let bytes = read_body(&parts.headers, body, s.settings.max_body_bytes)
        .await
        .map_err(invalid)?;
    s.flow.check_degradation(&s.stats)?;
    s.flow.check_global(&s.stats)?;
    let b: PurchaseBody = parse_json(&bytes, FIELDS).map_err(invalid)?;
    if b.product_id == 0 {
        return Err(invalid(ApiError::invalid_field(
            "product_id",
            "must be a positive integer",
        )));
    }
    if b.user_id == 0 {
        return Err(invalid(ApiError::invalid_field(
            "user_id",
            "must be a positive integer",
        )));
    }
    if b.quantity == 0 {
        return Err(invalid(ApiError::invalid_field(
            "quantity",
            "must be a positive integer",
        )));
    }
    let idempotency_key = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Some(k.to_owned()),
            _ => {
                return Err(invalid(ApiError::invalid_field(
                    "Idempotency-Key",
                    "must be 1 to 128 visible ASCII characters",
                )));
            }
        },
    };
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    s.flow.check_keyed(&s.stats, b.user_id, ip)?;
    Ok(PurchaseRequest {
        product_id: b.product_id,
        user_id: b.user_id,
        quantity: u32::try_from(b.quantity).unwrap_or(u32::MAX),
        idempotency_key,
    })
}

/// Synchronous purchase.
pub(crate) async fn purchase(State(state): State<AppState>, req: Request) -> Response {
    let s = &*state.0;
    let started = std::time::Instant::now();
    let result = async {
        let request = admit(s, req).await?;
        let outcome = s.purchase(&request).await?;
        match outcome {
            PurchaseOutcome::Success {
                order_id,
                remaining_stock,
            } => Ok(ok(
                StatusCode::OK,
                &Sold {
                    order_id: order_id.to_string(),
                    product_id: request.product_id,
                    user_id: request.user_id,
                    quantity: request.quantity,
                    remaining_stock,
                },
            )),
            other => Err(rejection(&other).expect("not a success")),
        }
    };
    let response = result.await.unwrap_or_else(IntoResponse::into_response);
    s.purchase_latency.record(started.elapsed().as_secs_f64());
    response
}

#[derive(Serialize)]
struct Accepted<'a> {
    request_id: &'a str,
    status: &'static str,
}

/// Asynchronous purchase: published to the broker (confirmed) before the 202 with the request
/// id to poll.
pub(crate) async fn purchase_async(State(state): State<AppState>, req: Request) -> Response {
    let s = &*state.0;
    let result = async {
        let request = admit(s, req).await?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        // Pending is recorded before the request can run, so a fast worker's result is never
        // overwritten by it.
        s.results
            .put(&request_id, &AsyncStatus::Pending)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "recording an accepted purchase failed");
                s.stats.count(Outcome::BackendUnavailable);
                s.flow.busy(codes::BACKEND_UNAVAILABLE)
            })?;
        let (done, confirmed) = tokio::sync::oneshot::channel();
        let job = Job {
            envelope: purchase_requested(&request_id, &request),
            done,
        };
        if let Err(e) = s.jobs.try_send(job) {
            let _ = s.results.remove(&request_id).await;
            return Err(match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => {
                    s.stats.count(Outcome::QueueFull);
                    s.flow.busy(codes::QUEUE_FULL)
                }
                // The pipeline is stopping: nothing publishes any more.
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    s.stats.count(Outcome::BackendUnavailable);
                    s.flow.busy(codes::BACKEND_UNAVAILABLE)
                }
            });
        }
        let confirmed = tokio::time::timeout(PUBLISH_WAIT, confirmed).await;
        if !matches!(confirmed, Ok(Ok(Ok(())))) {
            // Not confirmed is not "not delivered" (a batch can be partly written, a confirm
            // lost): the pending record stays, and the answer carries the id to poll.
            tracing::warn!(%request_id, "an accepted purchase was not confirmed by the broker");
            s.stats.count(Outcome::BackendUnavailable);
            return Ok(envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::BACKEND_UNAVAILABLE,
                "the broker did not confirm the request; it may still run: poll its result",
                &Accepted {
                    request_id: &request_id,
                    status: "unconfirmed",
                },
            ));
        }
        s.stats.count(Outcome::Accepted);
        Ok(ok(
            StatusCode::ACCEPTED,
            &Accepted {
                request_id: &request_id,
                status: "pending",
            },
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct ResultView<'a> {
    request_id: &'a str,
    #[serde(flatten)]
    status: AsyncStatus,
}

/// The state of an asynchronous purchase.
pub(crate) async fn result(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let found = match state.0.results.get(&id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "reading a purchase result failed");
            return state
                .0
                .flow
                .busy(codes::BACKEND_UNAVAILABLE)
                .into_response();
        }
    };
    match found {
        Some(status) => ok(
            StatusCode::OK,
            &ResultView {
                request_id: &id,
                status,
            },
        ),
        None => ApiError::NotFound {
            code: codes::UNKNOWN_REQUEST,
            message: "unknown or expired request id",
        }
        .into_response(),
    }
}
