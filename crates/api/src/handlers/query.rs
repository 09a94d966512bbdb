//! Read-only routes: product stats, has-purchased, system stats, health, metrics.

use super::{Auth, Params, answer, ok, path_id};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[utoipa::path(get, path = "/api/v1/seckill/stats/{product_id}", tag = "buyers",
    params(("product_id" = u64, Path, minimum = 1), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The product's sale", body = crate::openapi::Envelope<seckill_service::ProductStats>), crate::openapi::Errors))]
/// `GET /api/v1/seckill/stats/{productId}`.
pub(crate) async fn product_stats(
    State(s): State<AppState>,
    Params(raw): Params<String>,
) -> Response {
    match path_id("productId", &raw) {
        Ok(product_id) => answer(s.service.product_stats(product_id).await),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/seckill/purchased/{product_id}/{user_id}", tag = "buyers", security((), ("bearer" = [])),
    params(("product_id" = u64, Path, minimum = 1), ("user_id" = u64, Path, minimum = 1), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "Whether the buyer holds a purchase", body = crate::openapi::Envelope<seckill_service::Purchased>), crate::openapi::Errors))]
/// `GET /api/v1/seckill/purchased/{productId}/{userId}`.
pub(crate) async fn purchased(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params((p, u)): Params<(String, String)>,
) -> Response {
    let result = async {
        let product_id = path_id("productId", &p)?;
        let user_id = path_id("userId", &u)?;
        let purchased = s.service.purchased(&caller, product_id, user_id).await?;
        Ok::<_, ApiError>(ok(StatusCode::OK, &purchased))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[utoipa::path(get, path = "/api/v1/system/stats", tag = "operators", security((), ("bearer" = [])), params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The system's counters", body = crate::openapi::Envelope<seckill_service::SystemStats>), crate::openapi::Errors))]
/// `GET /api/v1/system/stats`.
pub(crate) async fn system_stats(State(s): State<AppState>, Auth(caller): Auth) -> Response {
    answer(s.service.system_stats(&caller).await)
}

#[utoipa::path(get, path = "/health", tag = "buyers", params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "Serving", body = crate::openapi::Health), (status = 503, description = "The inventory does not answer", body = crate::openapi::Health)))]
/// `GET /health`: 200 `{"status":"ok"}` while the inventory backend answers, 503 otherwise.
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let (status, body) = match s.service.health().await {
        Ok(()) => (StatusCode::OK, r#"{"status":"ok"}"#),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable","inventory":"unreachable"}"#,
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operators", security((), ("bearer" = [])), params(("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The Prometheus exposition", content_type = "text/plain", body = String), crate::openapi::Errors))]
/// `GET /metrics`: the Prometheus exposition, when the binary installed an exporter.
pub(crate) async fn metrics(State(s): State<AppState>, Auth(caller): Auth) -> Response {
    if let Err(e) = caller.require_admin() {
        return ApiError::from(e).into_response();
    }
    match &s.metrics_render {
        Some(render) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => ApiError::RouteNotFound("metrics are not enabled").into_response(),
    }
}
