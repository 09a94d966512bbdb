//! Read-only routes: product stats, has-purchased, system stats, health, metrics.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use seckill_mq::Topic;
use seckill_orders::ORDER_SERVICE_GROUP;
use serde::Serialize;

use super::{ok, path_id};
use crate::ApiError;
use crate::error::codes;
use crate::state::{AppState, Inner};
use crate::stats::OutcomeCount;

const UNKNOWN_PRODUCT: ApiError = ApiError::NotFound {
    code: codes::UNKNOWN_PRODUCT,
    message: "unknown product",
};

fn backend(s: &Inner, what: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    s.flow.busy(codes::BACKEND_UNAVAILABLE)
}

#[derive(Serialize)]
struct ProductStats {
    product_id: u64,
    product_name: String,
    status: &'static str,
    price: f64,
    start_time: String,
    end_time: String,
    per_user_limit: u32,
    epoch: u64,
    initial_stock: u64,
    remaining_stock: u64,
    sold: u64,
    buyers: u64,
    cancelled: u64,
    orders_created: u64,
    outbox_pending: u64,
    in_transit: u64,
}

/// `GET /api/v1/seckill/stats/{productId}`.
pub(crate) async fn product_stats(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Response {
    let s = &*state.0;
    let result = async {
        let product_id = path_id("productId", &raw)?;
        let (activity, stats) = tokio::try_join!(
            s.inventory.activity(product_id),
            s.inventory.stats(product_id)
        )
        .map_err(|e| backend(s, "reading stats", &e))?;
        let (Some(a), Some(st)) = (activity, stats) else {
            return Err(UNKNOWN_PRODUCT);
        };
        let counts = s
            .orders
            .counts(product_id, st.epoch)
            .await
            .map_err(|e| backend(s, "counting orders", &e))?;
        let orders_created = counts.orders;
        // Ledger, in items: initial = remaining + live orders + in transit, where live orders
        // are the stored ones not cancelled and in transit the sales not stored yet.
        let in_transit = st.sold.saturating_sub(counts.live_items);
        Ok(ok(
            StatusCode::OK,
            &ProductStats {
                product_id,
                product_name: a.product_name,
                status: a.status.as_str(),
                price: a.price_cents as f64 / 100.0,
                start_time: a.start_time.to_rfc3339(),
                end_time: a.end_time.to_rfc3339(),
                per_user_limit: a.per_user_limit,
                epoch: st.epoch,
                initial_stock: st.initial_stock,
                remaining_stock: st.remaining_stock,
                sold: st.sold,
                buyers: st.buyers,
                cancelled: st.cancelled,
                orders_created,
                outbox_pending: st.outbox_pending,
                in_transit,
            },
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct Purchased {
    product_id: u64,
    user_id: u64,
    purchased: bool,
}

/// `GET /api/v1/seckill/purchased/{productId}/{userId}`.
pub(crate) async fn purchased(
    State(state): State<AppState>,
    Path((p, u)): Path<(String, String)>,
) -> Response {
    let s = &*state.0;
    let result = async {
        let product_id = path_id("productId", &p)?;
        let user_id = path_id("userId", &u)?;
        let purchased = s
            .inventory
            .has_purchased(product_id, user_id)
            .await
            .map_err(|e| backend(s, "reading buyers", &e))?;
        if !purchased
            && s.inventory
                .activity(product_id)
                .await
                .map_err(|e| backend(s, "reading the activity", &e))?
                .is_none()
        {
            return Err(UNKNOWN_PRODUCT);
        }
        Ok(ok(
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

#[derive(Serialize)]
struct SystemStats {
    uptime_seconds: u64,
    requests: Vec<OutcomeCount>,
    in_flight: usize,
    queue_waiting: usize,
    max_concurrent_requests: usize,
    queue_size: usize,
    load: f64,
    degraded: bool,
    degradation_mode: &'static str,
    circuit_breaker: &'static str,
    outbox_pending: Option<u64>,
    orders_queued: Option<u64>,
    async_pending: Option<usize>,
}

/// `GET /api/v1/system/stats`.
pub(crate) async fn system_stats(State(state): State<AppState>) -> Response {
    let s = &*state.0;
    let q = s.flow.queue();
    let outbox_pending = s.inventory.outbox_len().await.ok();
    let orders_queued = s
        .broker
        .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
        .await
        .ok()
        .flatten();
    ok(
        StatusCode::OK,
        &SystemStats {
            uptime_seconds: s.started.elapsed().as_secs(),
            requests: s.stats.snapshot(),
            in_flight: q.in_flight(),
            queue_waiting: q.waiting(),
            max_concurrent_requests: q.max_concurrent(),
            queue_size: q.queue_size(),
            load: s.flow.load(),
            degraded: s.flow.degradation().is_degraded()
                || s.flow.degradation().forced() == Some(true),
            degradation_mode: match s.flow.degradation().forced() {
                Some(true) => "on",
                Some(false) => "off",
                None => "auto",
            },
            circuit_breaker: match s.flow.breaker().state() {
                seckill_flowcontrol::BreakerState::Closed => "closed",
                seckill_flowcontrol::BreakerState::Open => "open",
                seckill_flowcontrol::BreakerState::HalfOpen => "half_open",
            },
            outbox_pending,
            orders_queued,
            async_pending: s.results.pending(),
        },
    )
}

/// `GET /health`: 200 `{"status":"ok"}` while the inventory backend answers, 503 otherwise.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.0.inventory.ping().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ok"}"#,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: inventory backend unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"status":"unavailable","inventory":"unreachable"}"#,
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus exposition, when the binary installed an exporter.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match &state.0.metrics_render {
        Some(render) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => ApiError::NotFound {
            code: codes::NOT_FOUND,
            message: "metrics are not enabled",
        }
        .into_response(),
    }
}
