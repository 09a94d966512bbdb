//! `GET /api/v1/seckill/orders/{orderId}`, `POST …/pay` and `POST …/cancel`.

use axum::extract::State;
use axum::response::Response;
use seckill_orders::Order;
use seckill_service::ServiceError;
use serde::Serialize;

use super::{Auth, JsonOnly, Params, answer};
use crate::AppState;

/// An order, with its unit price.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OrderView {
    #[serde(flatten)]
    order: Order,
    /// Unit price.
    price: f64,
}

fn view(result: Result<Order, ServiceError>) -> Response {
    answer(result.map(|order| OrderView {
        price: order.price_cents as f64 / 100.0,
        order,
    }))
}

#[utoipa::path(get, path = "/api/v1/seckill/orders/{order_id}", tag = "buyers", security((), ("bearer" = [])), params(("order_id" = String, Path, description = "{product_id}-{sequence}", pattern = "^[0-9]+-[0-9]+$"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "The order", body = crate::openapi::Envelope<OrderView>), crate::openapi::Errors))]
/// `GET /api/v1/seckill/orders/{orderId}`: a stored order, for its buyer or an operator.
pub(crate) async fn get(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params(id): Params<String>,
) -> Response {
    view(s.service.order(&caller, &id).await)
}

#[utoipa::path(post, path = "/api/v1/seckill/orders/{order_id}/pay", tag = "buyers", security((), ("bearer" = [])), params(("order_id" = String, Path, description = "{product_id}-{sequence}", pattern = "^[0-9]+-[0-9]+$"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    request_body(content = Option<serde_json::Value>, description = "empty, or any JSON object", content_type = "application/json"),
    responses((status = 200, description = "Paid", body = crate::openapi::Envelope<OrderView>), crate::openapi::Errors))]
/// Pays an order awaiting payment (the payment service). Paying a paid order again answers the
/// order (idempotent).
pub(crate) async fn pay(
    State(s): State<AppState>,
    _: JsonOnly,
    Auth(caller): Auth,
    Params(id): Params<String>,
) -> Response {
    view(s.service.pay(&caller, &id).await)
}

#[utoipa::path(post, path = "/api/v1/seckill/orders/{order_id}/cancel", tag = "buyers", security((), ("bearer" = [])), params(("order_id" = String, Path, description = "{product_id}-{sequence}", pattern = "^[0-9]+-[0-9]+$"), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    request_body(content = Option<serde_json::Value>, description = "empty, or any JSON object", content_type = "application/json"),
    responses((status = 200, description = "Cancelled: its items are back on sale", body = crate::openapi::Envelope<OrderView>), crate::openapi::Errors))]
/// Cancels an order awaiting payment (its buyer or an operator) and puts its items back on
/// sale. Cancelling a cancelled order again answers the order (idempotent).
pub(crate) async fn cancel(
    State(s): State<AppState>,
    _: JsonOnly,
    Auth(caller): Auth,
    Params(id): Params<String>,
) -> Response {
    view(s.service.cancel(&caller, &id).await)
}
