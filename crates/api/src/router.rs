//! The route table: the public routes (buyers, health) and the admin plane (prewarm, the
//! levers, `/api/v1/system/*`, `/metrics`), served together or, with `server.admin_port`, on
//! two listeners.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::handlers::{activity, antibot, orders, purchase, query};
use crate::{ApiError, AppState};

/// Buyers' routes and the health check.
fn public() -> Router<AppState> {
    Router::new()
        .route("/api/v1/seckill/purchase", post(purchase::purchase))
        .route(
            "/api/v1/seckill/purchase/async",
            post(purchase::purchase_async),
        )
        .route("/api/v1/seckill/result/{request_id}", get(purchase::result))
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
        .route(
            "/api/v1/seckill/challenge/{product_id}",
            get(antibot::challenge),
        )
        .route("/api/v1/seckill/token/{product_id}", get(antibot::token))
        .route("/health", get(query::health))
        .route("/api/v1/openapi.json", get(crate::openapi::openapi_json))
}

/// The admin plane; every handler checks the caller through the service.
fn admin() -> Router<AppState> {
    Router::new()
        .route("/api/v1/seckill/activity/prewarm", post(activity::prewarm))
        .route("/api/v1/system/stats", get(query::system_stats))
        .route("/api/v1/system/degradation", post(activity::degradation))
        .route(
            "/api/v1/system/rate-limit",
            get(activity::rate_limit_get).post(activity::rate_limit_set),
        )
        .route("/metrics", get(query::metrics))
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::RouteNotFound("no such route").into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(axum::middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}

/// Every route on one router.
pub(crate) fn router(state: AppState) -> Router {
    finish(public().merge(admin()), state)
}

/// The public routes and the admin plane (with its own health check) on separate routers.
pub(crate) fn split(state: AppState) -> (Router, Router) {
    let admin = admin().route("/health", get(query::health));
    (finish(public(), state.clone()), finish(admin, state))
}
