//! Purchases: validated requests, the synchronous path and asynchronous purchases.

use std::net::IpAddr;
use std::time::Duration;

use seckill_inventory::{PurchaseOutcome, PurchaseRequest};
use serde::Serialize;
use tokio::sync::mpsc::error::TrySendError;

use crate::antibot::{ChallengeAnswer, IssuedChallenge, IssuedToken, TokenRefusal};
use crate::error::{BusyReason, Denied, Missing, Refusal, ServiceError};
use crate::pipeline::{Job, purchase_requested};
use crate::results::{AsyncResult, AsyncStatus};
use crate::stats::Outcome;
use crate::{Caller, Inner, Service};

/// Longest wait for the broker to confirm an accepted asynchronous purchase.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A purchase as a front received it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurchaseInput {
    /// The product (> 0).
    pub product_id: u64,
    /// The buyer (> 0): left out in mode jwt, where the token names the buyer; one that
    /// differs from the token's is refused.
    pub user_id: Option<u64>,
    /// Items; `None` means 1.
    pub quantity: Option<u64>,
    /// A retry with the same key gets the first answer.
    pub idempotency_key: Option<String>,
    /// The purchase token (`antibot.purchase_token`).
    pub purchase_token: Option<String>,
}

/// A validated purchase: the inventory's request and the purchase token it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    /// What the inventory is asked.
    pub request: PurchaseRequest,
    /// The purchase token, redeemed on the way when `antibot.purchase_token` is on.
    pub token: Option<String>,
}

/// A product's epoch and sale start, as last read from the inventory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SaleWindow {
    epoch: u64,
    start_ms: i64,
    read_at: tokio::time::Instant,
}

/// How long a product's epoch is taken from memory before it is read again.
const SALE_WINDOW_TTL: Duration = Duration::from_secs(1);

/// Products whose epoch is remembered at most.
const SALE_WINDOWS: usize = 10_000;

/// A sale, as answered to the buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl Accepted {
    /// What every front answers for [`Accepted::Unconfirmed`] (with the id to poll).
    pub const UNCONFIRMED: &'static str =
        "the broker did not confirm the request; it may still run: poll its result";
}

impl Service {
    /// Validates a purchase for `caller`: the buyer (the token's in mode jwt), positive ids
    /// that fit in i64, a positive quantity, an idempotency key of 1 to 128 visible ASCII
    /// characters. An invalid request is counted and changes nothing.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field; [`ServiceError::Unauthenticated`] or
    /// [`Denied::NotThisBuyer`](crate::Denied::NotThisBuyer) for a caller who may not buy as
    /// this buyer.
    pub fn purchase_request(
        &self,
        caller: &Caller,
        input: PurchaseInput,
    ) -> Result<Purchase, ServiceError> {
        let user_id = caller.buyer_for(input.user_id).inspect_err(|e| {
            if matches!(e, ServiceError::Invalid(_)) {
                self.record_invalid();
            }
        })?;
        let token = input.purchase_token.clone();
        let request = validate(input, user_id).inspect_err(|_| self.record_invalid())?;
        Ok(Purchase { request, token })
    }

    /// Buys: degradation → rate limits (global, buyer, client address) → request queue →
    /// circuit breaker → inventory. The outcome of a request that reached the inventory is a
    /// value (sold, sold out, already bought, …; see [`ServiceError::from_outcome`] and
    /// [`Sale::from_outcome`]); everything refused before is an error.
    ///
    /// # Errors
    /// [`ServiceError::Busy`] (degraded, queue full, backend unavailable) or
    /// [`ServiceError::RateLimited`].
    #[tracing::instrument(name = "purchase", level = "debug", skip_all, fields(product_id = purchase.request.product_id, user_id = purchase.request.user_id))]
    pub async fn purchase(
        &self,
        purchase: &Purchase,
        caller: &Caller,
    ) -> Result<PurchaseOutcome, ServiceError> {
        let s = &*self.0;
        let request = &purchase.request;
        s.admit(purchase, caller.peer()).await?;
        let _slot = s.flow.queue().acquire().await.map_err(|_| {
            s.stats.count(Outcome::QueueFull);
            s.stats.reject(crate::stats::Rejection::Queue);
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
    #[tracing::instrument(name = "purchase_async", level = "debug", skip_all, fields(product_id = purchase.request.product_id, user_id = purchase.request.user_id))]
    pub async fn purchase_async(
        &self,
        purchase: &Purchase,
        caller: &Caller,
    ) -> Result<Accepted, ServiceError> {
        let s = &*self.0;
        let request = &purchase.request;
        s.admit(purchase, caller.peer()).await?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        // Pending is recorded before the request can run, so a fast worker's result is never
        // overwritten by it.
        s.results
            .put(
                &request_id,
                &AsyncResult {
                    owner: request.user_id,
                    status: AsyncStatus::Pending,
                },
            )
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
                    s.stats.reject(crate::stats::Rejection::Queue);
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

    /// A challenge to solve before asking for a purchase token, when `antibot.challenge` is on
    /// (`None` when it is off).
    ///
    /// # Errors
    /// As [`Service::purchase_request`] for who the buyer is; [`Missing::Product`].
    pub async fn challenge(
        &self,
        caller: &Caller,
        product_id: u64,
        user_id: Option<u64>,
    ) -> Result<Option<IssuedChallenge>, ServiceError> {
        let buyer = caller.buyer_for(user_id)?;
        if self.0.antibot.challenge().is_none() {
            return Ok(None);
        }
        self.0.sale_window(product_id).await?;
        Ok(self.0.antibot.issue_challenge(buyer, product_id, now_ms()))
    }

    /// A purchase token for the caller's buyer and `product_id`, from the sale's start (less
    /// `antibot.lead_time`); with a challenge on, `answer` must solve one issued to this buyer
    /// for this product. `None` when purchase tokens are off.
    ///
    /// # Errors
    /// As [`Service::purchase_request`] for who the buyer is; [`Missing::Product`];
    /// [`Refusal::NotStarted`] before the tokens open; [`Denied::PurchaseToken`] for a
    /// challenge not passed.
    pub async fn purchase_token(
        &self,
        caller: &Caller,
        product_id: u64,
        user_id: Option<u64>,
        answer: Option<ChallengeAnswer<'_>>,
    ) -> Result<Option<IssuedToken>, ServiceError> {
        let s = &*self.0;
        let buyer = caller.buyer_for(user_id)?;
        if !s.antibot.requires_token() {
            return Ok(None);
        }
        let sale = s.sale_window(product_id).await?;
        s.antibot
            .issue(
                buyer,
                product_id,
                sale.epoch,
                sale.start_ms,
                answer,
                now_ms(),
            )
            .await
            .map_err(|e| s.token_refused(&e))
    }

    /// The state of an asynchronous purchase, for the buyer who made it (or an operator).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for an id that is not 32 hexadecimal digits;
    /// [`Missing::Request`] for an unknown or expired id, or one of another buyer; "backend
    /// unavailable" when the result store fails.
    pub async fn result(
        &self,
        caller: &Caller,
        request_id: &str,
    ) -> Result<AsyncStatus, ServiceError> {
        if request_id.len() != 32 || !request_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::invalid_field(
                "requestId",
                "must be 32 hexadecimal digits",
            ));
        }
        self.0
            .results
            .get(request_id)
            .await
            .map_err(|e| self.0.backend("reading a purchase result", &e))?
            .filter(|r| caller.may_see(r.owner))
            .map(|r| r.status)
            .ok_or(ServiceError::NotFound(Missing::Request))
    }
}

/// The answer to a purchase whose outcome is unknown.
const OUTCOME_UNKNOWN: &str = "outcome unknown: the purchase may have happened; retry with the same Idempotency-Key or look it up";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Largest id: ids are stored as signed 64-bit integers.
const MAX_ID: u64 = i64::MAX as u64;

fn validate(input: PurchaseInput, user_id: u64) -> Result<PurchaseRequest, ServiceError> {
    let id = |field, v: u64| {
        if v == 0 || v > MAX_ID {
            Err(ServiceError::invalid_field(
                field,
                "must be a positive integer below 2^63",
            ))
        } else {
            Ok(v)
        }
    };
    let product_id = id("product_id", input.product_id)?;
    let user_id = id("user_id", user_id)?;
    let quantity = match input.quantity.unwrap_or(1) {
        0 => {
            return Err(ServiceError::invalid_field(
                "quantity",
                "must be a positive integer",
            ));
        }
        q => q,
    };
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
    /// Degradation, every rate-limit level as one chain, then the purchase token.
    async fn admit(&self, purchase: &Purchase, client: Option<IpAddr>) -> Result<(), ServiceError> {
        let request = &purchase.request;
        self.flow.check_degradation(&self.stats)?;
        self.flow
            .check_limits(&self.stats, request.user_id, client)?;
        if self.antibot.requires_token() {
            let sale = self.sale_window(request.product_id).await?;
            self.antibot
                .redeem(
                    purchase.token.as_deref(),
                    request.user_id,
                    request.product_id,
                    sale.epoch,
                    now_ms(),
                )
                .await
                .map_err(|e| self.token_refused(&e))?;
        }
        Ok(())
    }

    fn token_refused(&self, e: &TokenRefusal) -> ServiceError {
        if e.is_transient() {
            return self.backend("the purchase token ledger", e);
        }
        match e {
            TokenRefusal::NotYetOpen { .. } => ServiceError::Refused(Refusal::NotStarted),
            _ => {
                tracing::debug!(refusal = %e, "purchase token refused");
                ServiceError::Denied(Denied::PurchaseToken)
            }
        }
    }

    /// The product's epoch and sale start, from memory when read in the last second.
    async fn sale_window(&self, product_id: u64) -> Result<SaleWindow, ServiceError> {
        let now = tokio::time::Instant::now();
        if let Some(w) = self.sales.lock().get(&product_id) {
            if now.duration_since(w.read_at) < SALE_WINDOW_TTL {
                return Ok(*w);
            }
        }
        let (activity, stats) = tokio::try_join!(
            self.inventory.activity(product_id),
            self.inventory.stats(product_id)
        )
        .map_err(|e| self.backend("reading the activity", &e))?;
        let (Some(a), Some(st)) = (activity, stats) else {
            return Err(ServiceError::NotFound(Missing::Product));
        };
        let w = SaleWindow {
            epoch: st.epoch,
            start_ms: a.start_ms(),
            read_at: now,
        };
        let mut sales = self.sales.lock();
        if sales.len() >= SALE_WINDOWS {
            sales.clear();
        }
        sales.insert(product_id, w);
        Ok(w)
    }

    /// The circuit breaker and the inventory, without the queue (asynchronous workers are the
    /// queue).
    pub(crate) async fn guarded_purchase(
        &self,
        req: &PurchaseRequest,
    ) -> Result<PurchaseOutcome, ServiceError> {
        let call = self.flow.breaker().try_acquire_owned().map_err(|open| {
            self.stats.count(Outcome::BackendUnavailable);
            self.stats.reject(crate::stats::Rejection::Breaker);
            ServiceError::Busy {
                reason: BusyReason::BackendUnavailable,
                message: self.flow.busy_message(),
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
                    PurchaseOutcome::InvalidQuantity { .. } | PurchaseOutcome::KeyReused => {
                        Outcome::Invalid
                    }
                });
                Ok(outcome)
            }
            Err(e) => {
                if e.is_backend_fault() {
                    call.failure();
                } else {
                    call.record(seckill_flowcontrol::CallOutcome::Ignored);
                }
                if matches!(e, seckill_inventory::InventoryError::OutcomeUnknown) {
                    tracing::warn!(
                        product_id = req.product_id,
                        user_id = req.user_id,
                        "purchase outcome unknown: the inventory may have run it"
                    );
                    self.stats.count(Outcome::OutcomeUnknown);
                    return Err(ServiceError::Busy {
                        reason: BusyReason::OutcomeUnknown,
                        message: OUTCOME_UNKNOWN.into(),
                        retry_after: Some(std::time::Duration::from_secs(1)),
                    });
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

    fn input(product_id: u64, user_id: u64, quantity: Option<u64>) -> (PurchaseInput, u64) {
        let i = PurchaseInput {
            product_id,
            user_id: Some(user_id),
            quantity,
            ..PurchaseInput::default()
        };
        (i, user_id)
    }

    #[test]
    fn validation_names_the_field() {
        let field = |(i, u)| match validate(i, u) {
            Err(ServiceError::Invalid(m)) => m.into_owned(),
            other => panic!("{other:?}"),
        };
        assert!(field(input(0, 1, None)).contains("product_id"));
        assert!(field(input(1, 0, None)).contains("user_id"));
        assert!(field(input(1, 1, Some(0))).contains("quantity"));
        assert!(field(input(1 << 63, 1, None)).contains("product_id"));
        assert!(field(input(1, u64::MAX, None)).contains("user_id"));
        let mut long = input(1, 1, None);
        long.0.idempotency_key = Some("k".repeat(200));
        assert!(field(long).contains("Idempotency-Key"));
        let (i, u) = input(1, 2, None);
        let r = validate(i, u).unwrap();
        assert_eq!((r.product_id, r.user_id, r.quantity), (1, 2, 1));
    }
}
