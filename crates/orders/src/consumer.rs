//! [`OrderConsumer`]: turns `OrderCreated` messages into stored orders, exactly once in effect.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use seckill_mq::{
    Broker, Delivery, Envelope, Message, MqError, OrderCreated, PurchaseResult, StockChangeReason,
    StockChanged, Subscription,
};
use tokio_util::sync::CancellationToken;

use crate::{Order, OrderError, OrderStatus, OrderStore};

/// The consumer group of the order service.
pub const ORDER_SERVICE_GROUP: &str = "order-service";

/// Stores each sale as an order, then publishes the buyer's `PurchaseResult` and the
/// `StockChanged` event.
///
/// At-least-once delivery becomes exactly-once effect: the insert is idempotent by order id, and
/// the follow-up messages carry ids derived from the order id (`pr-…`, `sc-…`) so their consumers
/// can de-duplicate. A message is acknowledged only after all of that succeeded; on failure it
/// is handed back to the broker and retried with backoff.
#[derive(Clone)]
pub struct OrderConsumer {
    store: Arc<dyn OrderStore>,
    broker: Arc<dyn Broker>,
    payment_timeout: Duration,
}

/// Most deliveries handled together by [`OrderConsumer::run`].
pub const MAX_BATCH: usize = 128;

impl OrderConsumer {
    /// A consumer writing to `store` and publishing follow-ups to `broker`; orders get
    /// [`DEFAULT_PAYMENT_TIMEOUT`](crate::DEFAULT_PAYMENT_TIMEOUT) to be paid.
    pub fn new(store: Arc<dyn OrderStore>, broker: Arc<dyn Broker>) -> Self {
        Self {
            store,
            broker,
            payment_timeout: crate::DEFAULT_PAYMENT_TIMEOUT,
        }
    }

    /// Sets the time a buyer has to pay, counted from when the order is stored, on the order
    /// store's clock ([`OrderStore::now_ms`]): a sale that waited out a pipeline outage still
    /// gives its buyer the whole time. A redelivery keeps the first stored deadline.
    #[must_use]
    pub fn with_payment_timeout(mut self, timeout: Duration) -> Self {
        self.payment_timeout = timeout;
        self
    }

    /// Handles one envelope. Types other than `OrderCreated` are ignored.
    ///
    /// # Errors
    /// The store or the broker failed; the message must be retried.
    pub async fn handle(&self, envelope: &Envelope) -> Result<(), OrderError> {
        self.handle_batch(std::slice::from_ref(envelope)).await
    }

    /// Handles several envelopes together: one insert of all their orders, one publish of all
    /// their follow-ups. Types other than `OrderCreated` are ignored.
    ///
    /// # Errors
    /// The store or the broker failed; every message of the batch must be retried.
    #[tracing::instrument(name = "store_orders", level = "debug", skip_all, fields(orders = envelopes.len()))]
    pub async fn handle_batch(&self, envelopes: &[Envelope]) -> Result<(), OrderError> {
        let sales: Vec<&OrderCreated> = envelopes
            .iter()
            .filter_map(|e| match &e.message {
                Message::OrderCreated(oc) => Some(oc),
                _ => {
                    tracing::warn!(id = %e.id, "order consumer ignores a message of another type");
                    None
                }
            })
            .collect();
        if sales.is_empty() {
            return Ok(());
        }
        let stored_at = self.store.now_ms().await?;
        let orders: Vec<Order> = sales
            .iter()
            .map(|oc| order_from(oc, self.payment_timeout, stored_at))
            .collect();
        let new = self.store.insert_many(&orders).await?;
        self.check_existing(&orders, &new).await?;
        let now = now_ms();
        for (oc, _) in sales.iter().zip(&new).filter(|(_, new)| **new) {
            metrics::counter!("seckill_orders_stored_total").increment(1);
            let lag = (now - oc.sold_at_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("seckill_order_pipeline_lag_seconds").record(lag);
        }
        // Published even when the order existed: a consumer that died between the insert and
        // these publishes must not lose the notification.
        let mut follow_ups = Vec::with_capacity(sales.len() * 2);
        for oc in &sales {
            follow_ups.push(Envelope::new(
                format!("pr-{}", oc.order_id),
                Message::PurchaseResult(PurchaseResult {
                    product_id: oc.product_id,
                    user_id: oc.user_id,
                    order_id: Some(oc.order_id.clone()),
                    status: "success".into(),
                }),
            ));
            follow_ups.push(Envelope::new(
                format!("sc-{}", oc.order_id),
                Message::StockChanged(StockChanged {
                    product_id: oc.product_id,
                    delta: -i64::from(oc.quantity),
                    reason: StockChangeReason::Sold,
                    order_id: oc.order_id.clone(),
                }),
            ));
        }
        self.broker.publish_batch(&follow_ups).await?;
        Ok(())
    }

    /// Compares each order that was stored already with the sale in hand: the same sale is a
    /// redelivery; a different sale under the id is an integrity alarm ([`OrderError::Conflict`],
    /// permanent, so the message is dead-lettered rather than acknowledged as a duplicate).
    async fn check_existing(&self, orders: &[Order], new: &[bool]) -> Result<(), OrderError> {
        let old: Vec<&str> = orders
            .iter()
            .zip(new)
            .filter(|(_, new)| !**new)
            .map(|(o, _)| o.order_id.as_str())
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let stored: std::collections::HashMap<String, Order> = self
            .store
            .get_many(&old)
            .await?
            .into_iter()
            .map(|o| (o.order_id.clone(), o))
            .collect();
        for o in orders
            .iter()
            .zip(new)
            .filter(|(_, new)| !**new)
            .map(|(o, _)| o)
        {
            if let Some(reason) = stored.get(&o.order_id).and_then(|s| differs(s, o)) {
                return Err(OrderError::Conflict {
                    order_id: o.order_id.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Consumes `subscription` until `shutdown` is cancelled or the broker closes. Deliveries
    /// already waiting are handled together (up to [`MAX_BATCH`]), so the store and the broker
    /// see one round trip per batch instead of per sale; a batch that fails is retried one
    /// message at a time, so one bad message cannot hold back its neighbours.
    pub async fn run(self, mut subscription: Box<dyn Subscription>, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while let Some(first) = next_delivery(
            &mut *subscription,
            &shutdown,
            &mut backoff,
            "order consumer",
        )
        .await
        {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                // Only what is already here: polled once, never waited for.
                match subscription.next().now_or_never() {
                    Some(Ok(d)) => batch.push(d),
                    _ => break,
                }
            }
            let envelopes: Vec<Envelope> = batch.iter().map(|d| d.envelope.clone()).collect();
            match self.handle_batch(&envelopes).await {
                Ok(()) => {
                    for d in batch {
                        if let Err(e) = d.ack().await {
                            tracing::warn!(error = %e, "order consumer: ack failed; the message will be redelivered");
                        }
                    }
                    backoff.reset();
                }
                Err(e) => {
                    if envelopes.len() > 1 {
                        tracing::warn!(error = %e, n = envelopes.len(), "order consumer: batch failed; retrying one by one");
                    }
                    for d in batch {
                        if !self.settle(d, &mut backoff, &shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Handles one delivery until it is stored (acknowledged) or refused for good
    /// (dead-lettered). A transient failure — the store or the broker unavailable — is retried
    /// here with backoff while the delivery is held, so an outage of any length never uses up
    /// the broker's delivery attempts. Returns false when `shutdown` fired first (the delivery
    /// is then dropped unsettled, and the broker delivers it again).
    async fn settle(
        &self,
        delivery: Delivery,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            match self.handle(&delivery.envelope).await {
                Ok(()) => {
                    if let Err(e) = delivery.ack().await {
                        tracing::warn!(error = %e, "order consumer: ack failed; the message will be redelivered");
                    }
                    backoff.reset();
                    return true;
                }
                Err(e) if e.is_permanent() => {
                    if matches!(e, OrderError::Conflict { .. }) {
                        metrics::counter!("seckill_order_integrity_alarms_total").increment(1);
                    }
                    tracing::error!(error = %e, id = %delivery.envelope.id, "order consumer: message can never be stored; dead-lettered");
                    metrics::counter!("seckill_order_dead_letters_total", "reason" => dead_letter_reason(&e)).increment(1);
                    let _ = delivery.nack(false).await;
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, id = %delivery.envelope.id, "order consumer: handling failed; retrying");
                    metrics::counter!("seckill_order_consumer_failures_total").increment(1);
                    if backoff.wait(shutdown).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// Why a message was dead-lettered, as a metric label.
fn dead_letter_reason(e: &OrderError) -> &'static str {
    match e {
        OrderError::Conflict { .. } => "conflict",
        OrderError::Rejected { .. } => "rejected",
        _ => "invalid",
    }
}

/// What differs between a stored order and another sale under its id, if anything. The sale
/// time is not compared: a sale the reconciler sends again carries the time it was sent.
fn differs(stored: &Order, sale: &Order) -> Option<String> {
    let fields = [
        ("product_id", stored.product_id == sale.product_id),
        ("user_id", stored.user_id == sale.user_id),
        ("quantity", stored.quantity == sale.quantity),
        ("epoch", stored.epoch == sale.epoch),
    ];
    fields
        .iter()
        .find(|(_, same)| !same)
        .map(|(field, _)| format!("{field} differs from the stored order"))
}

fn order_from(oc: &OrderCreated, payment_timeout: Duration, now: i64) -> Order {
    Order {
        order_id: oc.order_id.clone(),
        product_id: oc.product_id,
        user_id: oc.user_id,
        quantity: oc.quantity,
        price_cents: oc.price_cents,
        status: OrderStatus::AwaitingPayment,
        sold_at_ms: oc.sold_at_ms,
        created_at_ms: now,
        expires_at_ms: now
            .saturating_add(i64::try_from(payment_timeout.as_millis()).unwrap_or(i64::MAX)),
        updated_at_ms: now,
        stock_returned: false,
        epoch: oc.epoch,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Waits for the next delivery of `subscription`, retrying its failures with `backoff`.
/// `None` when `stop` fired or the broker closed: the consumer loop `who` should end.
pub async fn next_delivery(
    subscription: &mut dyn Subscription,
    stop: &CancellationToken,
    backoff: &mut Backoff,
    who: &str,
) -> Option<Delivery> {
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            d = subscription.next() => d,
        };
        match next {
            Ok(d) => return Some(d),
            Err(MqError::Closed) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "{who}: subscription failed");
                if backoff.wait(stop).await {
                    return None;
                }
            }
        }
    }
}

/// Exponential backoff for retries of the pipeline: 50 ms, doubling, capped at 5 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay; each call doubles it up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = Duration::from_millis(50u64 << self.attempt.min(7)).min(Duration::from_secs(5));
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Sleeps for the next delay; returns true when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }
}
