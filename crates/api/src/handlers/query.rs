//! Read-only routes: product stats, has-purchased, system stats, health, metrics.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{answer, ok, path_id};
use crate::{ApiError, AppState};

/// `GET /api/v1/seckill/stats/{productId}`.
pub(crate) async fn product_stats(State(s): State<AppState>, Path(raw): Path<String>) -> Response {
    match path_id("productId", &raw) {
        Ok(product_id) => answer(s.service.product_stats(product_id).await),
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct Purchased {
    product_id: u64,
    user_id: u64,
    purchased: bool,
}

/// `GET /api/v1/seckill/purchased/{productId}/{userId}`.
pub(crate) async fn purchased(
    State(s): State<AppState>,
    Path((p, u)): Path<(String, String)>,
) -> Response {
    let result = async {
        let product_id = path_id("productId", &p)?;
        let user_id = path_id("userId", &u)?;
        let purchased = s.service.has_purchased(product_id, user_id).await?;
        Ok::<_, ApiError>(ok(
            StatusCode::OK,
            &Purchased {
                product_id,
                user_id,
                purchased,
            },
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/system/stats`.
pub(crate) async fn system_stats(State(s): State<AppState>) -> Response {
    ok(StatusCode::OK, &s.service.system_stats().await)
}

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

/// `GET /metrics`: the Prometheus exposition, when the binary installed an exporter.
pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
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
