//! `POST /api/v1/seckill/purchase` and `/purchase/async`, `GET /api/v1/seckill/result/{id}`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seckill_service::{
    Accepted, AsyncStatus, Caller, Purchase, PurchaseInput, Sale, ServiceError, codes,
};
use serde::{Deserialize, Serialize};

use super::{Auth, Kind, Params, caller, envelope, ok, parse_json, read_body};
use crate::{ApiError, AppState};

/// A purchase.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct PurchaseBody {
    /// The product.
    #[schema(minimum = 1)]
    product_id: u64,
    /// The buyer (with a bearer token: taken from it, and must match when given).
    #[serde(default)]
    #[schema(minimum = 1)]
    user_id: Option<u64>,
    /// Items, 1 to the activity's per-user limit (default 1).
    #[serde(default)]
    #[schema(minimum = 1)]
    quantity: Option<u64>,
    #[serde(default)]
    purchase_token: Option<String>,
}

const FIELDS: &[(&str, Kind, bool)] = &[
    ("product_id", Kind::PositiveInt, true),
    ("user_id", Kind::PositiveInt, false),
    ("quantity", Kind::PositiveInt, false),
    ("purchase_token", Kind::String, false),
];

/// Reads and validates a purchase; nothing is spent or changed before it is valid.
async fn read(s: &AppState, req: Request) -> Result<(Purchase, Caller), ApiError> {
    let (parts, body) = req.into_parts();
    let caller = caller(s, &parts)?;
    let parsed = async {
        let bytes = read_body(&parts.headers, body, s.max_body_bytes).await?;
        parse_json::<PurchaseBody>(&bytes, FIELDS)
    }
    .await
    .inspect_err(|_| s.service.record_invalid())?;
    let idempotency_key = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    s.service.record_invalid();
                    ApiError::invalid_field(
                        "Idempotency-Key",
                        "must be 1 to 128 visible ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    let request = s.service.purchase_request(
        &caller,
        PurchaseInput {
            product_id: parsed.product_id,
            user_id: parsed.user_id,
            quantity: parsed.quantity,
            idempotency_key,
            purchase_token: parsed.purchase_token,
        },
    )?;
    Ok((request, caller))
}

#[utoipa::path(post, path = "/api/v1/seckill/purchase", tag = "buyers", security((), ("bearer" = [])),
    request_body = PurchaseBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a retry with the same key is answered as the first time"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "Sold", body = crate::openapi::Envelope<seckill_service::Sale>), crate::openapi::Errors))]
/// Synchronous purchase.
pub(crate) async fn purchase(State(s): State<AppState>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let result = async {
        let (purchase, caller) = read(&s, req).await?;
        let outcome = s.service.purchase(&purchase, &caller).await?;
        match Sale::from_outcome(&purchase.request, &outcome) {
            Some(sale) => Ok(ok(StatusCode::OK, &sale)),
            None => Err(ApiError::from(
                ServiceError::from_outcome(&outcome).unwrap_or(ServiceError::Internal),
            )),
        }
    };
    let response = result.await.unwrap_or_else(IntoResponse::into_response);
    s.service.record_purchase_latency(started.elapsed());
    response
}

/// An accepted asynchronous purchase.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AcceptedView<'a> {
    request_id: &'a str,
    status: &'static str,
}

#[utoipa::path(post, path = "/api/v1/seckill/purchase/async", tag = "buyers", security((), ("bearer" = [])),
    request_body = PurchaseBody, params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a retry with the same key is answered as the first time"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 202, description = "Accepted: poll its result", body = crate::openapi::Envelope<AcceptedView<'static>>), crate::openapi::Errors))]
/// Asynchronous purchase: published to the broker (confirmed) before the 202 with the request
/// id to poll.
pub(crate) async fn purchase_async(State(s): State<AppState>, req: Request) -> Response {
    let result = async {
        let (purchase, caller) = read(&s, req).await?;
        Ok::<_, ApiError>(match s.service.purchase_async(&purchase, &caller).await? {
            Accepted::Confirmed(id) => ok(
                StatusCode::ACCEPTED,
                &AcceptedView {
                    request_id: &id,
                    status: "pending",
                },
            ),
            // It may still run: the answer says so, with the id to poll, never "failed".
            Accepted::Unconfirmed(id) => envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::OUTCOME_UNKNOWN,
                Accepted::UNCONFIRMED,
                &AcceptedView {
                    request_id: &id,
                    status: "unconfirmed",
                },
            ),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// An asynchronous purchase's state.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ResultView<'a> {
    request_id: &'a str,
    #[serde(flatten)]
    status: AsyncStatus,
}

#[utoipa::path(get, path = "/api/v1/seckill/result/{request_id}", tag = "buyers", security((), ("bearer" = [])),
    params(("request_id" = String, Path, description = "32 hexadecimal digits", pattern = "^[0-9a-fA-F]{32}$"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "Pending, success or failed", body = crate::openapi::Envelope<ResultView<'static>>), crate::openapi::Errors))]
/// The state of an asynchronous purchase.
pub(crate) async fn result(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params(id): Params<String>,
) -> Response {
    match s.service.result(&caller, &id).await {
        Ok(status) => ok(
            StatusCode::OK,
            &ResultView {
                request_id: &id,
                status,
            },
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}
