//! `POST /api/v1/seckill/activity/prewarm` and the operators' levers.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use seckill_service::{ActivityInput, DegradationMode, RateLimitChange};
use serde::{Deserialize, Serialize};

use super::{Auth, Kind, answer, json_body};
use crate::AppState;

const PREWARM_FIELDS: &[(&str, Kind, bool)] = &[
    ("product_id", Kind::PositiveInt, true),
    ("product_name", Kind::String, true),
    ("price", Kind::Number, true),
    ("stock", Kind::PositiveInt, true),
    ("start_time", Kind::Timestamp, true),
    ("end_time", Kind::Timestamp, true),
    ("status", Kind::String, false),
    ("per_user_limit", Kind::PositiveInt, false),
    ("force", Kind::Bool, false),
];

#[utoipa::path(post, path = "/api/v1/seckill/activity/prewarm", tag = "operators", security((), ("bearer" = [])),
    request_body = seckill_service::ActivityInput, params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "Created, unchanged, replaced or restored", body = crate::openapi::Envelope<seckill_service::Prewarmed>), crate::openapi::Errors))]
/// Loads an activity into the inventory before its sale.
pub(crate) async fn prewarm(State(s): State<AppState>, req: Request) -> Response {
    match json_body::<ActivityInput>(&s, req, PREWARM_FIELDS).await {
        Ok((caller, input)) => answer(s.service.prewarm(&caller, input).await),
        Err(e) => e.into_response(),
    }
}

/// The degradation lever.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DegradationBody {
    mode: String,
}

/// The degradation mode in force.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DegradationView {
    mode: DegradationMode,
    degraded: bool,
}

#[utoipa::path(post, path = "/api/v1/system/degradation", tag = "operators", security((), ("bearer" = [])),
    request_body = DegradationBody, params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The mode in force", body = crate::openapi::Envelope<DegradationView>), crate::openapi::Errors))]
/// The operators' lever: `{"mode": "on" | "off" | "auto"}`.
pub(crate) async fn degradation(State(s): State<AppState>, req: Request) -> Response {
    let body = json_body::<DegradationBody>(&s, req, &[("mode", Kind::String, true)]).await;
    match body {
        Ok((caller, b)) => answer(
            DegradationMode::parse(&b.mode)
                .and_then(|mode| s.service.set_degradation(&caller, mode))
                .map(|(mode, degraded)| DegradationView { mode, degraded }),
        ),
        Err(e) => e.into_response(),
    }
}

/// The global rate limit lever.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct RateLimitBody {
    enable: bool,
    requests_per_second: Option<u64>,
    burst_size: Option<u64>,
    algorithm: Option<String>,
}

const RATE_LIMIT_FIELDS: &[(&str, Kind, bool)] = &[
    ("enable", Kind::Bool, true),
    ("requests_per_second", Kind::PositiveInt, false),
    ("burst_size", Kind::PositiveInt, false),
    ("algorithm", Kind::String, false),
];

#[utoipa::path(get, path = "/api/v1/system/rate-limit", tag = "operators", security((), ("bearer" = [])), params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The global limit in force", body = crate::openapi::Envelope<seckill_service::RateLimitView>), crate::openapi::Errors))]
/// `GET /api/v1/system/rate-limit`: the global limit in force.
pub(crate) async fn rate_limit_get(State(s): State<AppState>, Auth(caller): Auth) -> Response {
    answer(s.service.rate_limit(&caller))
}

#[utoipa::path(post, path = "/api/v1/system/rate-limit", tag = "operators", security((), ("bearer" = [])),
    request_body = RateLimitBody, params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The global limit now in force", body = crate::openapi::Envelope<seckill_service::RateLimitView>), crate::openapi::Errors))]
/// `POST /api/v1/system/rate-limit`: the operators' lever to tighten or relax the global limit
/// at run time, `{"enable": true, "requests_per_second": 200, "burst_size": 400}` (omitted
/// fields keep their values) or `{"enable": false}`. Per instance.
pub(crate) async fn rate_limit_set(State(s): State<AppState>, req: Request) -> Response {
    match json_body::<RateLimitBody>(&s, req, RATE_LIMIT_FIELDS).await {
        Ok((caller, b)) => answer(s.service.set_rate_limit(
            &caller,
            RateLimitChange {
                enable: b.enable,
                requests_per_second: b.requests_per_second,
                burst_size: b.burst_size,
                algorithm: b.algorithm,
            },
        )),
        Err(e) => e.into_response(),
    }
}
