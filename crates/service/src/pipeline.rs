//! The background half of the service: the outbox relay, the order consumer, the
//! asynchronous purchase publisher and workers, and the sweeper of unpaid orders, with a drain
//! for graceful shutdown.
//!
//! Asynchronous purchases go through the broker: the request is published (confirmed) to
//! `seckill.purchase.requested` before the client is answered, so an instance that crashes
//! after answering loses nothing; workers of any instance (group [`PURCHASE_WORKERS_GROUP`])
//! run it with the request id as its idempotency key — a redelivered request replays the first
//! answer instead of buying twice — and write the result to the [`ResultStore`](crate::ResultStore) (Redis in
//! production, so any instance can answer the poll).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Instrument;

use seckill_inventory::{Inventory, OutboxEntry, PurchaseRequest};
use seckill_mq::{Broker, Envelope, Message, MqError, OrderCreated, PurchaseRequested, Topic};
use seckill_orders::{
    Backoff, ORDER_SERVICE_GROUP, OrderConsumer, OrdersConfig, next_delivery, now_ms,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Inner;
use crate::results::{AsyncResult, AsyncStatus};

/// The consumer group of the asynchronous purchase workers.
pub const PURCHASE_WORKERS_GROUP: &str = "purchase-workers";

/// The consumer groups the service subscribes, by topic: brokers that must declare a group's
/// queue before anything is published to it are given these.
pub fn consumer_groups() -> Vec<(Topic, String)> {
    vec![
        (Topic::OrderCreated, ORDER_SERVICE_GROUP.to_owned()),
        (Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP.to_owned()),
    ]
}

/// Concurrent order consumers per instance: the store's and the broker's round trips overlap.
const ORDER_CONSUMERS: usize = 4;

/// Accepted asynchronous purchases published per broker batch.
const PUBLISH_BATCH: usize = 256;

/// Outbox entries relayed per broker batch.
const RELAY_BATCH: usize = 1024;

/// An accepted asynchronous purchase waiting to be published, with where to report the
/// broker's confirm.
#[derive(Debug)]
pub(crate) struct Job {
    /// The message.
    pub(crate) envelope: Envelope,
    /// Receives the publish result.
    pub(crate) done: oneshot::Sender<Result<(), MqError>>,
}

/// Handles of the background tasks.
pub struct Pipeline {
    inventory: Arc<dyn Inventory>,
    broker: Arc<dyn Broker>,
    jobs_in_progress: Arc<AtomicUsize>,
    jobs: mpsc::Sender<Job>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Converts an outbox entry to the message the order service consumes.
pub fn order_created(entry: &OutboxEntry) -> Envelope {
    let r = &entry.record;
    Envelope::new(
        format!("oc-{}", r.order_id),
        Message::OrderCreated(OrderCreated {
            order_id: r.order_id.to_string(),
            product_id: r.product_id,
            user_id: r.user_id,
            quantity: r.quantity,
            price_cents: r.price_cents,
            sold_at_ms: r.sold_at_ms,
            epoch: r.epoch,
        }),
    )
}

/// Moves sales from the inventory's outbox to the broker until `stop`: a batch is acknowledged
/// in the outbox only after the broker confirmed all of it, so a crash at any point re-sends
/// rather than loses (the consumer de-duplicates).
async fn relay(inventory: Arc<dyn Inventory>, broker: Arc<dyn Broker>, stop: CancellationToken) {
    let relayed = metrics::counter!("seckill_relay_messages_total");
    let mut delay = Backoff::default();
    loop {
        let batch = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            b = inventory.outbox_read(RELAY_BATCH, Duration::from_millis(500)) => b,
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "relay: reading the outbox failed");
                if delay.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        let span = tracing::debug_span!("relay", sales = batch.len());
        let relayed_all = async {
            let envelopes: Vec<Envelope> = batch.iter().map(order_created).collect();
            while let Err(e) = broker.publish_batch(&envelopes).await {
                tracing::warn!(error = %e, n = envelopes.len(), "relay: publishing failed; the sales stay in the outbox");
                if delay.wait(&stop).await {
                    return false;
                }
            }
            let ids: Vec<String> = batch.into_iter().map(|e| e.id).collect();
            while let Err(e) = inventory.outbox_ack(&ids).await {
                tracing::warn!(error = %e, "relay: acknowledging the outbox failed");
                if delay.wait(&stop).await {
                    return false;
                }
            }
            relayed.increment(ids.len() as u64);
            true
        }
        .instrument(span)
        .await;
        if !relayed_all {
            return;
        }
        delay.reset();
    }
}

impl Pipeline {
    /// Starts the relay, the order consumers, the sweeper, the publisher of accepted
    /// asynchronous purchases (fed by the channel `(tx, rx)`) and the purchase workers.
    ///
    /// # Errors
    /// The broker refused a subscription.
    pub(crate) async fn start(
        service: Arc<Inner>,
        orders: &OrdersConfig,
        (tx, rx): (mpsc::Sender<Job>, mpsc::Receiver<Job>),
    ) -> Result<Self, MqError> {
        let broker = service.broker.clone();
        let workers = service.settings.async_workers.get();
        // Every subscription first: a refused one fails the start before anything runs.
        let mut order_subs = Vec::with_capacity(ORDER_CONSUMERS);
        for _ in 0..ORDER_CONSUMERS {
            order_subs.push(
                broker
                    .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
                    .await?,
            );
        }
        let mut worker_subs = Vec::with_capacity(workers);
        for _ in 0..workers {
            worker_subs.push(
                broker
                    .subscribe(Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP)
                    .await?,
            );
        }
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(relay(
            service.inventory.clone(),
            broker.clone(),
            stop.clone(),
        )));
        let consumer = OrderConsumer::new(service.orders.clone(), broker.clone())
            .with_payment_timeout(orders.payment_timeout);
        for sub in order_subs {
            tasks.push(tokio::spawn(consumer.clone().run(sub, stop.clone())));
        }
        tasks.push(tokio::spawn(crate::lifecycle::sweeper(
            service.inventory.clone(),
            service.orders.clone(),
            broker.clone(),
            orders.sweep_interval,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(publisher(rx, broker.clone(), stop.clone())));
        let in_progress = Arc::new(AtomicUsize::new(0));
        for sub in worker_subs {
            tasks.push(tokio::spawn(worker(
                sub,
                service.clone(),
                in_progress.clone(),
                stop.clone(),
            )));
        }
        Ok(Self {
            inventory: service.inventory.clone(),
            broker,
            jobs_in_progress: in_progress,
            jobs: tx,
            stop,
            tasks,
        })
    }

    /// True when no sale is in the outbox or in the broker for the order service, and no
    /// asynchronous purchase is waiting to be published, queued or running.
    pub async fn is_drained(&self) -> bool {
        let outbox = self.inventory.outbox_len().await.unwrap_or(1);
        // A broker that cannot be asked is not drained.
        let queued = |topic, group| async move {
            match self.broker.pending(topic, group).await {
                Ok(n) => n.unwrap_or(0),
                Err(_) => u64::MAX,
            }
        };
        outbox == 0
            && queued(Topic::OrderCreated, ORDER_SERVICE_GROUP).await == 0
            && queued(Topic::PurchaseRequested, PURCHASE_WORKERS_GROUP).await == 0
            && self.jobs.capacity() == self.jobs.max_capacity()
            && self.jobs_in_progress.load(Ordering::SeqCst) == 0
    }

    /// Waits (polling every 10 ms) until [`Pipeline::is_drained`] or `timeout`; true when drained.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_drained().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the tasks at once without draining: what a crash does to this instance's share
    /// of the pipeline (what it held comes back from the outbox and the broker).
    pub async fn abort(self) {
        self.stop.cancel();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Graceful stop: lets the pipeline deliver what is pending (up to `timeout`), then stops
    /// every task. Returns whether everything was delivered.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let drained = self.wait_drained(timeout).await;
        if !drained {
            tracing::warn!(
                "pipeline did not drain before the shutdown timeout; pending sales stay in the outbox and the broker"
            );
        }
        self.stop.cancel();
        // Tasks finish what they hold; one stuck on a backend that stopped answering is aborted
        // after a grace period (what it held is redelivered).
        let grace = Instant::now() + Duration::from_secs(10);
        for mut t in self.tasks {
            if tokio::time::timeout_at(grace, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
        drained
    }
}

/// The publisher of accepted asynchronous purchases: batches them so their confirms are
/// awaited together, and reports each confirm to the request waiting for it.
async fn publisher(mut rx: mpsc::Receiver<Job>, broker: Arc<dyn Broker>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            j = rx.recv() => j,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let envelopes: Vec<Envelope> = batch.iter().map(|j| j.envelope.clone()).collect();
        let r = broker.publish_batch(&envelopes).await;
        for job in batch.drain(..) {
            let _ = job.done.send(match &r {
                Ok(()) => Ok(()),
                Err(_) => Err(MqError::Nacked),
            });
        }
        if let Err(e) = r {
            tracing::warn!(error = %e, n = envelopes.len(), "publishing accepted purchases failed; they were not confirmed");
        }
    }
}

/// One asynchronous purchase worker: runs requests from the broker and records their results.
async fn worker(
    mut sub: Box<dyn seckill_mq::Subscription>,
    service: Arc<Inner>,
    in_progress: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let ttl_ms = i64::try_from(service.settings.result_ttl.as_millis()).unwrap_or(i64::MAX);
    let mut backoff = Backoff::default();
    while let Some(delivery) =
        next_delivery(&mut *sub, &stop, &mut backoff, "purchase worker").await
    {
        let Message::PurchaseRequested(req) = &delivery.envelope.message else {
            let _ = delivery.ack().await;
            continue;
        };
        // Older than its result's time-to-live: nobody polls for it any more, and running it
        // now (a re-read after a restart, a replay) could sell to a buyer who gave up.
        if now_ms().saturating_sub(delivery.envelope.timestamp_ms) > ttl_ms {
            tracing::warn!(request_id = %req.request_id, "purchase worker: request older than result_ttl skipped");
            let _ = delivery.ack().await;
            continue;
        }
        in_progress.fetch_add(1, Ordering::SeqCst);
        let request = PurchaseRequest {
            product_id: req.product_id,
            user_id: req.user_id,
            quantity: req.quantity,
            // The request id makes a redelivery replay the first answer: at most one sale.
            idempotency_key: Some(format!("async:{}", req.request_id)),
        };
        // Held and retried while the inventory or the result store is unavailable, so an
        // outage never uses up the broker's delivery attempts; on shutdown the delivery is
        // dropped unsettled and runs again elsewhere (replayed, never bought twice).
        let status = loop {
            match service.run_async(&request).await {
                Ok(s) => break Some(s),
                Err(e) if e.is_transient() => {
                    if backoff.wait(&stop).await {
                        break None;
                    }
                }
                Err(e) => break Some(AsyncStatus::failed(&e)),
            }
        };
        let stored = match status {
            None => false,
            Some(status) => loop {
                let result = AsyncResult {
                    owner: req.user_id,
                    status: status.clone(),
                };
                match service.results.put(&req.request_id, &result).await {
                    Ok(()) => break true,
                    Err(e) => {
                        tracing::warn!(error = %e, "purchase worker: storing the result failed; retrying");
                        if backoff.wait(&stop).await {
                            break false;
                        }
                    }
                }
            },
        };
        in_progress.fetch_sub(1, Ordering::SeqCst);
        if !stored {
            return; // shutting down
        }
        let _ = delivery.ack().await;
        backoff.reset();
    }
}

/// The message of an accepted asynchronous purchase.
pub fn purchase_requested(request_id: &str, request: &PurchaseRequest) -> Envelope {
    Envelope::new(
        format!("pq-{request_id}"),
        Message::PurchaseRequested(PurchaseRequested {
            request_id: request_id.to_owned(),
            product_id: request.product_id,
            user_id: request.user_id,
            quantity: request.quantity,
        }),
    )
}
