//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use seckill_inventory::{Inventory, PurchaseOutcome, PurchaseRequest};
use seckill_mq::Broker;
use seckill_orders::OrderStore;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::codes;
use crate::flow::FlowControl;
use crate::pipeline::{AsyncStatus, Job, JobRunner, ResultStore};
use crate::stats::{Outcome, Stats};
use crate::{ApiError, Settings};

/// Renders the metrics exposition text (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared application state; cloning is one reference count.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    /// The flow-control state (for operators and tests).
    pub fn flow(&self) -> &FlowControl {
        &self.0.flow
    }
}

pub(crate) struct Inner {
    pub(crate) inventory: Arc<dyn Inventory>,
    pub(crate) orders: Arc<dyn OrderStore>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) flow: FlowControl,
    pub(crate) stats: Stats,
    pub(crate) results: Arc<dyn ResultStore>,
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) settings: Settings,
    pub(crate) started: Instant,
    pub(crate) metrics_render: Option<MetricsRender>,
    /// `seckill_purchase_duration_seconds`, resolved once.
    pub(crate) purchase_latency: metrics::Histogram,
}

impl Inner {
    /// Runs an admitted purchase through the request queue, the circuit breaker and the inventory.
    pub(crate) async fn purchase(
        &self,
        req: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, ApiError> {
        let _slot = self.flow.queue().acquire().await.map_err(|_| {
            self.stats.count(Outcome::QueueFull);
            self.flow.busy(codes::QUEUE_FULL)
        })?;
        self.guarded_purchase(req).await
    }

    /// The circuit breaker and the inventory, without the queue (async workers are the queue).
    pub(crate) async fn guarded_purchase(
        &self,
        req: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, ApiError> {
        let call = self.flow.breaker().try_acquire().map_err(|open| {
            self.stats.count(Outcome::BackendUnavailable);
            ApiError::Busy {
                code: codes::BACKEND_UNAVAILABLE,
                message: self.settings.degradation.response_message.clone(),
                retry_after: Some(open.retry_after),
            }
        })?;
        match self.inventory.purchase(req).await {
            Ok(outcome) => {
                call.success();
                self.stats.count(match &outcome {
                    PurchaseOutcome::Success { .. } => Outcome::Success,
                    PurchaseOutcome::SoldOut { .. } => Outcome::SoldOut,
                    PurchaseOutcome::AlreadyBought => Outcome::AlreadyBought,
                    PurchaseOutcome::NotStarted
                    | PurchaseOutcome::Ended
                    | PurchaseOutcome::Inactive => Outcome::NotOnSale,
                    PurchaseOutcome::UnknownProduct => Outcome::UnknownProduct,
                    PurchaseOutcome::InvalidQuantity { .. } => Outcome::Invalid,
                });
                Ok(outcome)
            }
            Err(e) => {
                if e.is_backend_fault() {
                    call.failure();
                } else {
                    call.record(seckill_flowcontrol::CallOutcome::Ignored);
                }
                tracing::error!(error = %e, product_id = req.product_id, "purchase failed in the inventory backend");
                self.stats.count(Outcome::BackendUnavailable);
                Err(self.flow.busy(codes::BACKEND_UNAVAILABLE))
            }
        }
    }
}

/// Maps a business rejection to its API error; `Ok` passes a success through.
pub(crate) fn rejection(outcome: &PurchaseOutcome) -> Option<ApiError> {
    Some(match outcome {
        PurchaseOutcome::Success { .. } => return None,
        PurchaseOutcome::SoldOut { .. } => ApiError::Conflict {
            code: codes::SOLD_OUT,
            message: "sold out",
        },
        PurchaseOutcome::AlreadyBought => ApiError::Conflict {
            code: codes::ALREADY_BOUGHT,
            message: "already bought",
        },
        PurchaseOutcome::NotStarted => ApiError::Forbidden {
            code: codes::NOT_STARTED,
            message: "activity not started",
        },
        PurchaseOutcome::Ended => ApiError::Forbidden {
            code: codes::ENDED,
            message: "activity ended",
        },
        PurchaseOutcome::Inactive => ApiError::Forbidden {
            code: codes::INACTIVE,
            message: "activity not active",
        },
        PurchaseOutcome::UnknownProduct => ApiError::NotFound {
            code: codes::UNKNOWN_PRODUCT,
            message: "unknown product",
        },
        PurchaseOutcome::InvalidQuantity { max } => {
            ApiError::invalid_field("quantity", &format!("must be between 1 and {max}"))
        }
    })
}

#[async_trait::async_trait]
impl JobRunner for Inner {
    async fn run(&self, request: &PurchaseRequest) -> Result<AsyncStatus, ApiError> {
        let outcome = self.guarded_purchase(request).await?;
        Ok(match (&outcome, rejection(&outcome)) {
            (
                PurchaseOutcome::Success {
                    order_id,
                    remaining_stock,
                },
                _,
            ) => AsyncStatus::Success {
                order_id: order_id.to_string(),
                remaining_stock: *remaining_stock,
            },
            (_, Some(e)) => AsyncStatus::Failed {
                code: e.code(),
                reason: e.to_string(),
            },
            (_, None) => unreachable!("only success has no rejection"),
        })
    }
}
