//! The background half of the service: the outbox relay, the order consumer and the
//! asynchronous purchase workers, with a drain for graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seckill_inventory::{Inventory, OutboxEntry, PurchaseRequest};
use seckill_mq::{Broker, Envelope, Message, OrderCreated, Topic};
use seckill_orders::{Backoff, ORDER_SERVICE_GROUP, OrderConsumer, OrderStore};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ApiError;

/// Outbox entries relayed per broker batch.
const RELAY_BATCH: usize = 256;

/// The state of an asynchronous purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AsyncStatus {
    /// Accepted, not run yet.
    Pending,
    /// Sold.
    Success {
        /// The order.
        order_id: String,
        /// Stock left after the sale.
        remaining_stock: u64,
    },
    /// Not sold.
    Failed {
        /// The envelope code the synchronous purchase would have answered.
        code: i32,
        /// Why.
        reason: String,
    },
}

/// Results of asynchronous purchases, kept for a time-to-live.
pub struct AsyncResults {
    ttl: Duration,
    map: Mutex<HashMap<String, (AsyncStatus, Instant)>>,
}

impl AsyncResults {
    /// Keeps each result for `ttl` after its last update.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records a status.
    pub fn put(&self, id: &str, status: AsyncStatus) {
        let now = Instant::now();
        let mut map = self.map.lock();
        // Amortised expiry: sweep when the map doubles past a small floor.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
        }
        map.insert(id.to_owned(), (status, now));
    }

    /// Forgets a request.
    pub fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }

    /// The status of a request, `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<AsyncStatus> {
        let map = self.map.lock();
        map.get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(s, _)| s.clone())
    }

    /// Requests still pending.
    pub fn pending(&self) -> usize {
        self.map
            .lock()
            .values()
            .filter(|(s, _)| *s == AsyncStatus::Pending)
            .count()
    }
}

/// An accepted asynchronous purchase.
#[derive(Debug)]
pub struct Job {
    /// Its id.
    pub request_id: String,
    /// The purchase.
    pub request: PurchaseRequest,
}

/// Runs one purchase for a worker; implemented by the application state.
#[async_trait::async_trait]
pub trait JobRunner: Send + Sync + 'static {
    /// Runs the purchase through the breaker and the inventory.
    async fn run(&self, request: &PurchaseRequest) -> Result<AsyncStatus, ApiError>;
}

/// Handles of the background tasks.
pub struct Pipeline {
    inventory: Arc<dyn Inventory>,
    broker: Arc<dyn Broker>,
    results: Arc<AsyncResults>,
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
pub async fn relay(
    inventory: Arc<dyn Inventory>,
    broker: Arc<dyn Broker>,
    stop: CancellationToken,
) {
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
        let envelopes: Vec<Envelope> = batch.iter().map(order_created).collect();
        while let Err(e) = broker.publish_batch(&envelopes).await {
            tracing::warn!(error = %e, n = envelopes.len(), "relay: publishing failed; the sales stay in the outbox");
            if delay.wait(&stop).await {
                return;
            }
        }
        let ids: Vec<String> = batch.into_iter().map(|e| e.id).collect();
        while let Err(e) = inventory.outbox_ack(&ids).await {
            tracing::warn!(error = %e, "relay: acknowledging the outbox failed");
            if delay.wait(&stop).await {
                return;
            }
        }
        relayed.increment(ids.len() as u64);
        delay.reset();
    }
}

impl Pipeline {
    /// Starts the relay, the order consumer and `workers` asynchronous purchase workers taking
    /// jobs from the channel `(tx, rx)`.
    ///
    /// # Errors
    /// The broker refused the order consumer's subscription.
    pub async fn start(
        inventory: Arc<dyn Inventory>,
        broker: Arc<dyn Broker>,
        orders: Arc<dyn OrderStore>,
        runner: Arc<dyn JobRunner>,
        results: Arc<AsyncResults>,
        workers: usize,
        (tx, rx): (mpsc::Sender<Job>, mpsc::Receiver<Job>),
    ) -> Result<Self, seckill_mq::MqError> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(relay(
            inventory.clone(),
            broker.clone(),
            stop.clone(),
        )));
        let sub = broker
            .subscribe(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await?;
        tasks.push(tokio::spawn(
            OrderConsumer::new(orders, broker.clone()).run(sub, stop.clone()),
        ));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let in_progress = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers.max(1) {
            let (rx, runner, results, stop, in_progress) = (
                rx.clone(),
                runner.clone(),
                results.clone(),
                stop.clone(),
                in_progress.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let job = {
                        let mut rx = rx.lock().await;
                        tokio::select! {
                            () = stop.cancelled() => return,
                            j = rx.recv() => j,
                        }
                    };
                    let Some(job) = job else { return };
                    in_progress.fetch_add(1, Ordering::SeqCst);
                    let status = match runner.run(&job.request).await {
                        Ok(s) => s,
                        Err(e) => AsyncStatus::Failed {
                            code: e.code(),
                            reason: e.to_string(),
                        },
                    };
                    results.put(&job.request_id, status);
                    in_progress.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        Ok(Self {
            inventory,
            broker,
            results,
            jobs_in_progress: in_progress,
            jobs: tx,
            stop,
            tasks,
        })
    }

    /// True when no sale is in the outbox or in the broker for the order service, and no
    /// asynchronous purchase is waiting or running.
    pub async fn is_drained(&self) -> bool {
        let outbox = self.inventory.outbox_len().await.unwrap_or(1);
        let queued = self
            .broker
            .pending(Topic::OrderCreated, ORDER_SERVICE_GROUP)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        outbox == 0
            && queued == 0
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

    /// Graceful stop: lets the pipeline deliver what is pending (up to `timeout`), then stops
    /// every task. Returns whether everything was delivered.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let drained = self.wait_drained(timeout).await;
        if !drained {
            tracing::warn!(
                pending_results = self.results.pending(),
                "pipeline did not drain before the shutdown timeout; pending sales stay in the outbox"
            );
        }
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        drained
    }
}
