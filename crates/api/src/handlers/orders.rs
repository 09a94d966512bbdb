//! `GET /api/v1/seckill/orders/{orderId}`, `POST …/pay` and `POST …/cancel`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seckill_inventory::OrderId;
use seckill_orders::{Order, OrderStatus, Transition, now_ms};
use serde::Serialize;

use super::ok;
use crate::ApiError;
use crate::error::codes;
use crate::lifecycle::return_stock;
use crate::state::{AppState, Inner};

const UNKNOWN_ORDER: ApiError = ApiError::NotFound {
    code: codes::UNKNOWN_ORDER,
    message: "unknown order (a new sale's order may still be in transit)",
};

#[derive(Serialize)]
struct OrderView {
    #[serde(flatten)]
    order: Order,
    price: f64,
}

fn view(order: Order) -> Response {
    let price = order.price_cents as f64 / 100.0;
    ok(StatusCode::OK, &OrderView { order, price })
}

fn parse(raw: &str) -> Result<String, ApiError> {
    raw.parse::<OrderId>()
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid_field("orderId", "must look like 1001-42"))
}

fn store_failed(s: &Inner, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "order store failed");
    s.flow.busy(codes::BACKEND_UNAVAILABLE)
}

/// `GET /api/v1/seckill/orders/{orderId}`: a stored order.
pub(crate) async fn get(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let s = &*state.0;
    let result = async {
        let id = parse(&raw)?;
        let order = s
            .orders
            .get(&id)
            .await
            .map_err(|e| store_failed(s, &e))?
            .ok_or(UNKNOWN_ORDER)?;
        Ok::<_, ApiError>(view(order))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Pays an order awaiting payment. Paying a paid order again answers the order (idempotent).
pub(crate) async fn pay(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let s = &*state.0;
    let result = async {
        let id = parse(&raw)?;
        match s
            .orders
            .pay(&id, now_ms())
            .await
            .map_err(|e| store_failed(s, &e))?
        {
            Transition::Done(o) => {
                metrics::counter!("seckill_orders_paid_total").increment(1);
                Ok(view(o))
            }
            Transition::Final(o) if o.status == OrderStatus::Paid => Ok(view(o)),
            Transition::Final(_) => Err(ApiError::Conflict {
                code: codes::ORDER_CANCELLED,
                message: "order cancelled; it can no longer be paid",
            }),
            Transition::Expired(_) => Err(ApiError::Conflict {
                code: codes::ORDER_EXPIRED,
                message: "payment deadline passed; the order is being cancelled",
            }),
            Transition::NotFound => Err(UNKNOWN_ORDER),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Cancels an order awaiting payment and puts its items back on sale. Cancelling a cancelled
/// order again answers the order (idempotent).
pub(crate) async fn cancel(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let s = &*state.0;
    let result = async {
        let id = parse(&raw)?;
        match s
            .orders
            .cancel(&id, now_ms())
            .await
            .map_err(|e| store_failed(s, &e))?
        {
            Transition::Done(mut o) => {
                // The cancellation stands from here; if returning the stock fails, the
                // sweeper finishes it.
                match return_stock(&*s.inventory, &*s.orders, &*s.broker, &o).await {
                    Ok(()) => o.stock_returned = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cancel: the sweeper will return the stock")
                    }
                }
                Ok(view(o))
            }
            Transition::Final(o) if o.status == OrderStatus::Cancelled => Ok(view(o)),
            Transition::Final(_) => Err(ApiError::Conflict {
                code: codes::ORDER_PAID,
                message: "order paid; it can no longer be cancelled",
            }),
            Transition::Expired(_) => {
                Err(store_failed(s, &"the store answered a cancel with Expired"))
            }
            Transition::NotFound => Err(UNKNOWN_ORDER),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
