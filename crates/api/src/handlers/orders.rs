//! `GET /api/v1/seckill/orders/{orderId}`, `POST …/pay` and `POST …/cancel`.

use axum::extract::{Path, State};
use axum::response::Response;
use seckill_orders::Order;
use seckill_service::ServiceError;
use serde::Serialize;

use super::answer;
use crate::AppState;

#[derive(Serialize)]
struct OrderView {
    #[serde(flatten)]
    order: Order,
    price: f64,
}

fn view(result: Result<Order, ServiceError>) -> Response {
    answer(result.map(|order| OrderView {
        price: order.price_cents as f64 / 100.0,
        order,
    }))
}

/// `GET /api/v1/seckill/orders/{orderId}`: a stored order.
pub(crate) async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    view(s.service.order(&id).await)
}

/// Pays an order awaiting payment. Paying a paid order again answers the order (idempotent).
pub(crate) async fn pay(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    view(s.service.pay(&id).await)
}

/// Cancels an order awaiting payment and puts its items back on sale. Cancelling a cancelled
/// order again answers the order (idempotent).
pub(crate) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    view(s.service.cancel(&id).await)
}
