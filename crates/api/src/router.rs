//! The route table.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::handlers::{activity, orders, purchase, query};
use crate::{ApiError, AppState};

/// Every route of the API over `state`.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/seckill/purchase", post(purchase::purchase))
        .route(
            "/api/v1/seckill/purchase/async",
            post(purchase::purchase_async),
        )
        .route("/api/v1/seckill/result/{request_id}", get(purchase::result))
        .route("/api/v1/seckill/activity/prewarm", post(activity::prewarm))
        .route(
            "/api/v1/seckill/stats/{product_id}",
            get(query::product_stats),
        )
        .route(
            "/api/v1/seckill/purchased/{product_id}/{user_id}",
            get(query::purchased),
        )
        .route("/api/v1/seckill/orders/{order_id}", get(orders::get))
        .route("/api/v1/seckill/orders/{order_id}/pay", post(orders::pay))
        .route(
            "/api/v1/seckill/orders/{order_id}/cancel",
            post(orders::cancel),
        )
        .route("/api/v1/system/stats", get(query::system_stats))
        .route("/api/v1/system/degradation", post(activity::degradation))
        .route(
            "/api/v1/system/rate-limit",
            get(activity::rate_limit_get).post(activity::rate_limit_set),
        )
        .route("/health", get(query::health))
        .route("/metrics", get(query::metrics))
        .fallback(|| async { ApiError::RouteNotFound("no such route").into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .with_state(state)
}
