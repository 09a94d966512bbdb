//! Purchases: validated requests, the synchronous path and asynchronous purchases.

use std::net::IpAddr;
use std::time::Duration;

use seckill_inventory::{PurchaseOutcome, PurchaseRequest};
use serde::Serialize;
use tokio::sync::mpsc::error::TrySendError;

use crate::error::{BusyReason, Missing, ServiceError};
use crate::pipeline::{Job, purchase_requested};
use crate::results::AsyncStatus;
use crate::stats::Outcome;
use crate::{Inner, Service};

/// Longest wait for the broker to confirm an accepted asynchronous purchase.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A purchase as a front received it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurchaseInput {
    /// The product (> 0).
    pub product_id: u64,
    /// The buyer (> 0).
    pub user_id: u64,
    /// Items; `None` means 1.
    pub quantity: Option<u64>,
    /// A retry with the same key gets the first answer.
    pub idempotency_key: Option<String>,
}

/// A sale, as answered to the buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sale {
    /// The order.
    pub order_id: String,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items bought.
    pub quantity: u32,
    /// Stock left after the sale.
    pub remaining_stock: u64,
}

impl Sale {
    /// The sale of a successful outcome; `None` for any other outcome.
    pub fn from_outcome(request: &PurchaseRequest, outcome: &PurchaseOutcome) -> Option<Self> {
        match outcome {
            PurchaseOutcome::Success {
                order_id,
                remaining_stock,
            } => Some(Self {
                order_id: order_id.to_string(),
                product_id: request.product_id,
                user_id: request.user_id,
                quantity: request.quantity,
                remaining_stock: *remaining_stock,
            }),
            _ => None,
        }
    }
}

/// An accepted asynchronous purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Confirmed by the broker: it will run; poll its result with this id.
    Confirmed(String),
    /// The broker did not confirm it in time. Not confirmed is not "not delivered" (a batch can
    /// be partly written, a confirm lost): it may still run, so the answer carries the id to
    /// poll and must not say it failed.
    Unconfirmed(String),
}

impl Service {
    /// Validates a purchase: positive ids and quantity, an idempotency key of 1 to 128 visible
    /// ASCII characters. An invalid request is counted and changes nothing.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field.
    pub fn purchase_request(&self, input: PurchaseInput) -> Result<PurchaseRequest, ServiceError> {
        validate(input).inspect_err(|_| self.record_invalid())
    }

    /// Buys: degradation → rate limits (global, buyer, client address) → request queue →
    /// circuit breaker → inventory. The outcome of a request that reached the inventory is a
    /// value (sold, sold out, already bought, …; see [`ServiceError::from_outcome`] and
    /// [`Sale::from_outcome`]); everything refused before is an error.
    ///
    /// # Errors
    /// [`ServiceError::Busy`] (degraded, queue full, backend unavailable) or
    /// [`ServiceError::RateLimited`].
    pub async fn purchase(
        &self,
        request: &PurchaseRequest,
        client: Option<IpAddr>,
    ) -> Result<PurchaseOutcome, ServiceError> {
        let s = &*self.0;
        s.admit(request, client)?;
        let _slot = s.flow.queue().acquire().await.map_err(|_| {
            s.stats.count(Outcome::QueueFull);
            s.flow.busy(BusyReason::QueueFull)
        })?;
        s.guarded_purchase(request).await
    }

    /// Records how long a synchronous purchase took to answer, from the request's arrival at the
    /// front to its answer, whatever the answer (`seckill_purchase_duration_seconds`).
    pub fn record_purchase_latency(&self, elapsed: Duration) {
        self.0.purchase_latency.record(elapsed.as_secs_f64());
    }

    /// Queues a purchase: admitted like [`Service::purchase`], then published to the broker and
    /// confirmed before it is answered, so a crash after the answer loses nothing. Workers of
    /// any instance run it; poll [`Service::result`] with the id.
    ///
    /// # Errors
    /// As [`Service::purchase`]'s admission; [`BusyReason::QueueFull`] when the publisher is
    /// saturated, [`BusyReason::BackendUnavailable`] when the result store fails or the
    /// pipeline is stopping.
    pub async fn purchase_async(
        &self,
        request: &PurchaseRequest,
        client: Option<IpAddr>,
    ) -> Result<Accepted, ServiceError> {
        let s = &*self.0;
        s.admit(request, client)?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        // Pending is recorded before the request can run, so a fast worker's result is never
        // overwritten by it.
        s.results
            .put(&request_id, &AsyncStatus::Pending)
            .await
            .map_err(|e| {
                s.stats.count(Outcome::BackendUnavailable);
                s.backend("recording an accepted purchase", &e)
            })?;
        let (done, confirmed) = tokio::sync::oneshot::channel();
        let job = Job {
            envelope: purchase_requested(&request_id, request),
            done,
        };
        if let Err(e) = s.jobs.try_send(job) {
            let _ = s.results.remove(&request_id).await;
            return Err(match e {
                TrySendError::Full(_) => {
                    s.stats.count(Outcome::QueueFull);
                    s.flow.busy(BusyReason::QueueFull)
                }
                // The pipeline is stopping: nothing publishes any more.
                TrySendError::Closed(_) => {
                    s.stats.count(Outcome::BackendUnavailable);
                    s.flow.busy(BusyReason::BackendUnavailable)
                }
            });
        }
        let confirmed = tokio::time::timeout(PUBLISH_WAIT, confirmed).await;
        if !matches!(confirmed, Ok(Ok(Ok(())))) {
            tracing::warn!(%request_id, "an accepted purchase was not confirmed by the broker");
            s.stats.count(Outcome::BackendUnavailable);
            return Ok(Accepted::Unconfirmed(request_id));
        }
        s.stats.count(Outcome::Accepted);
        Ok(Accepted::Confirmed(request_id))
    }

    /// The state of an asynchronous purchase.
    ///
    /// # Errors
    /// [`Missing::Request`] for an unknown or expired id; "backend unavailable" when the result
    /// store fails.
    pub async fn result(&self, request_id: &str) -> Result<AsyncStatus, ServiceError> {
        self.0
            .results
            .get(request_id)
            .await
            .map_err(|e| self.0.backend("reading a purchase result", &e))?
            .ok_or(ServiceError::NotFound(Missing::Request))
    }
}

fn validate(input: PurchaseInput) -> Result<PurchaseRequest, ServiceError> {
    let positive = |field, v: u64| {
        if v == 0 {
            Err(ServiceError::invalid_field(
                field,
                "must be a positive integer",
            ))
        } else {
            Ok(v)
        }
    };
    let product_id = positive("product_id", input.product_id)?;
    let user_id = positive("user_id", input.user_id)?;
    let quantity = positive("quantity", input.quantity.unwrap_or(1))?;
    if let Some(k) = &input.idempotency_key {
        if k.is_empty()
            || k.len() > MAX_IDEMPOTENCY_KEY
            || !k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(ServiceError::invalid_field(
                "Idempotency-Key",
                "must be 1 to 128 visible ASCII characters",
            ));
        }
    }
    Ok(PurchaseRequest {
        product_id,
        user_id,
        // Anything above the per-user limit is refused by the inventory with the limit named.
        quantity: u32::try_from(quantity).unwrap_or(u32::MAX),
        idempotency_key: input.idempotency_key,
    })
}

impl Inner {
    /// Degradation, then every rate-limit level as one chain.
    fn admit(&self, request: &PurchaseRequest, client: Option<IpAddr>) -> Result<(), ServiceError> {
        self.flow.check_degradation(&self.stats)?;
        self.flow.check_limits(&self.stats, request.user_id, client)
    }

    /// The circuit breaker and the inventory, without the queue (asynchronous workers are the
    /// queue).
    pub(crate) async fn guarded_purchase(
        &self,
        req: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, ServiceError> {
        let call = self.flow.breaker().try_acquire().map_err(|open| {
            self.stats.count(Outcome::BackendUnavailable);
            ServiceError::Busy {
                reason: BusyReason::BackendUnavailable,
                message: self.flow.busy_message().clone(),
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
                Err(self.flow.busy(BusyReason::BackendUnavailable))
            }
        }
    }

    /// Runs an asynchronous purchase for a worker: the result to record, or a transient error
    /// to retry.
    pub(crate) async fn run_async(
        &self,
        request: &PurchaseRequest,
    ) -> Result<AsyncStatus, ServiceError> {
        let outcome = self.guarded_purchase(request).await?;
        Ok(match Sale::from_outcome(request, &outcome) {
            Some(sale) => AsyncStatus::Success {
                order_id: sale.order_id,
                remaining_stock: sale.remaining_stock,
            },
            None => AsyncStatus::failed(
                &ServiceError::from_outcome(&outcome).unwrap_or(ServiceError::Internal),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(product_id: u64, user_id: u64, quantity: Option<u64>) -> PurchaseInput {
        PurchaseInput {
            product_id,
            user_id,
            quantity,
            idempotency_key: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let field = |i| match validate(i) {
            Err(ServiceError::Invalid(m)) => m.into_owned(),
            other => panic!("{other:?}"),
        };
        assert!(field(input(0, 1, None)).contains("product_id"));
        assert!(field(input(1, 0, None)).contains("user_id"));
        assert!(field(input(1, 1, Some(0))).contains("quantity"));
        let mut long = input(1, 1, None);
        long.idempotency_key = Some("k".repeat(200));
        assert!(field(long).contains("Idempotency-Key"));
        let r = validate(input(1, 2, None)).unwrap();
        assert_eq!((r.product_id, r.user_id, r.quantity), (1, 2, 1));
    }
}
