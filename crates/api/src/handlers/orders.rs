//! `GET /api/v1/seckill/orders/{orderId}`, `POST …/pay` and `POST …/cancel`.

use axum::extract::State;
use axum::response::Response;
use seckill_orders::Order;
use seckill_service::ServiceError;
use serde::Serialize;

use super::{Auth, JsonOnly, Params, answer};
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

/// `GET /api/v1/seckill/orders/{orderId}`: a stored order, for its buyer or an operator.
pub(crate) async fn get(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params(id): Params<String>,
) -> Response {
    view(s.service.order(&caller, &id).await)
}

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
