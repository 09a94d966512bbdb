//! Group commit of purchases: the purchases of one product that arrive while a call for it is
//! in flight are gathered and sent as one call (`lua/purchase.lua`), which answers each of them
//! in order exactly as it would have been answered alone.
//!
//! A purchase joins its product's lane; the first one of an idle lane starts a driver task that
//! sends what is waiting (up to [`MAX_BATCH`]), hands each answer back, and goes on until the
//! lane is empty. A lone purchase therefore goes at once, with no timer; under load the next
//! batch forms while the previous call is in flight. The driver is a task of its own, so a
//! caller that gives up (a dropped request) never strands the others; a purchase whose caller
//! left before its batch was sent is not sent at all (nothing happened, nothing is answered).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fred::types::Value;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{Inner, functions};
use crate::{InventoryError, OrderId, PurchaseOutcome, PurchaseRequest};

/// Most purchases sent in one call.
pub(crate) const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<PurchaseOutcome, InventoryError>>;

struct Waiter {
    request: PurchaseRequest,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    running: bool,
    waiting: VecDeque<Waiter>,
}

#[derive(Default)]
struct Lane {
    queue: Mutex<Queue>,
}

/// Every product's lane.
#[derive(Default)]
pub(crate) struct Lanes {
    lanes: Mutex<HashMap<u64, Arc<Lane>>>,
}

impl Lanes {
    fn lane(&self, product_id: u64) -> Arc<Lane> {
        self.lanes.lock().entry(product_id).or_default().clone()
    }
}

/// Buys through the product's lane.
pub(crate) async fn purchase(
    inner: &Arc<Inner>,
    request: &PurchaseRequest,
) -> Result<PurchaseOutcome, InventoryError> {
    let lane = inner.lanes.lane(request.product_id);
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut q = lane.queue.lock();
        q.waiting.push_back(Waiter {
            request: request.clone(),
            reply,
        });
        !std::mem::replace(&mut q.running, true)
    };
    if start {
        tokio::spawn(drive(inner.clone(), request.product_id, lane));
    }
    answer.await.unwrap_or_else(|_| {
        Err(InventoryError::Protocol(
            "the purchase batch was abandoned".into(),
        ))
    })
}

/// Marks the lane idle if the driver panics (the waiters still queued then get an error
/// rather than waiting forever); a driver that ends normally does so itself, under the lock
/// that decided the lane was empty.
struct Running(Arc<Lane>);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.queue.lock();
            q.running = false;
            q.waiting.clear();
        }
    }
}

async fn drive(inner: Arc<Inner>, product_id: u64, lane: Arc<Lane>) {
    let running = Running(lane);
    loop {
        let batch: Vec<Waiter> = {
            let mut q = running.0.queue.lock();
            let take = q.waiting.len().min(MAX_BATCH);
            if take == 0 {
                q.running = false;
                return;
            }
            q.waiting.drain(..take).collect()
        };
        let batch: Vec<Waiter> = batch.into_iter().filter(|w| !w.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let requests: Vec<&PurchaseRequest> = batch.iter().map(|w| &w.request).collect();
        match call(&inner, product_id, &requests).await {
            Ok(outcomes) => {
                for (w, o) in batch.into_iter().zip(outcomes) {
                    let _ = w.reply.send(Ok(o));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(share(&e)));
                }
            }
        }
    }
}

/// One error for each member of a failed batch: the same kind, so every member counts as the
/// backend fault it is.
fn share(e: &InventoryError) -> InventoryError {
    match e {
        InventoryError::Timeout => InventoryError::Timeout,
        InventoryError::OutcomeUnknown => InventoryError::OutcomeUnknown,
        InventoryError::Protocol(s) => InventoryError::Protocol(s.clone()),
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            InventoryError::Backend(message.into())
        }
    }
}

/// A failed purchase call: when the call may have run — it timed out, or its connection was
/// lost or reset after it was sent — the outcome is unknown; an error the server answered
/// means the function did not run its writes.
fn ambiguous(e: fred::error::Error) -> InventoryError {
    use fred::error::ErrorKind;
    match e.kind() {
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled => InventoryError::OutcomeUnknown,
        _ => super::client::backend(e),
    }
}

/// Waits for `wait_replicas` replicas to confirm the call just made on `conn`; when fewer do
/// within the command timeout, its sales may be lost in a failover: their outcome is unknown.
async fn confirm(inner: &Inner, conn: &fred::clients::Client) -> Result<(), InventoryError> {
    use fred::interfaces::ServerInterface;
    let want = i64::from(inner.config.wait_replicas);
    // Half the command timeout, so the server answers before the client gives up on it.
    let timeout = i64::try_from(inner.config.command_timeout.as_millis() / 2)
        .unwrap_or(i64::MAX)
        .max(1);
    let acked: i64 = conn.wait(want, timeout).await.map_err(ambiguous)?;
    if acked < want {
        return Err(InventoryError::OutcomeUnknown);
    }
    Ok(())
}

/// Sends one batch and reads one outcome per request, in order.
pub(crate) async fn call(
    inner: &Inner,
    product_id: u64,
    requests: &[&PurchaseRequest],
) -> Result<Vec<PurchaseOutcome>, InventoryError> {
    let k = inner.keys(product_id);
    let mut args = Vec::with_capacity(1 + 3 * requests.len());
    args.push(Value::Integer(product_id as i64));
    for r in requests {
        args.push(Value::Integer(r.user_id as i64));
        args.push(Value::Integer(i64::from(r.quantity)));
        args.push(r.idempotency_key.clone().unwrap_or_default().into());
    }
    let conn = inner.client.next();
    let reply: Vec<i64> = inner
        .client
        .fcall_on(
            conn,
            functions::op::purchase,
            vec![
                k.activity.clone(),
                k.buyers.clone(),
                k.orders.clone(),
                k.seq.clone(),
                k.outbox.clone(),
                k.idem.clone(),
                k.outbox_count.clone(),
            ],
            args,
        )
        .await
        .map_err(ambiguous)?;
    if reply.len() != 3 * requests.len() {
        return Err(InventoryError::Protocol(format!(
            "purchase of {} requests replied {} values",
            requests.len(),
            reply.len()
        )));
    }
    let mut sold_out = false;
    let outcomes = reply
        .chunks(3)
        .map(|r| {
            let arg = |i: usize| u64::try_from(r[i]).unwrap_or(0);
            Ok(match r[0] {
                1 | 2 => {
                    sold_out |= arg(2) == 0;
                    PurchaseOutcome::Success {
                        order_id: OrderId {
                            product_id,
                            seq: arg(1),
                        },
                        remaining_stock: arg(2),
                    }
                }
                -1 => PurchaseOutcome::UnknownProduct,
                -2 => {
                    sold_out |= arg(1) == 0;
                    PurchaseOutcome::SoldOut {
                        remaining_stock: arg(1),
                    }
                }
                -3 => PurchaseOutcome::AlreadyBought,
                -4 => PurchaseOutcome::Inactive,
                -5 => PurchaseOutcome::NotStarted,
                -6 => PurchaseOutcome::Ended,
                -7 => PurchaseOutcome::InvalidQuantity {
                    max: u32::try_from(r[1]).unwrap_or(0),
                },
                -8 => PurchaseOutcome::KeyReused,
                _ => {
                    return Err(InventoryError::Protocol(format!("purchase replied {r:?}")));
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sold = reply.chunks(3).any(|r| r[0] == 1);
    if sold && inner.config.wait_replicas > 0 {
        confirm(inner, conn).await?;
    }
    if sold_out && !inner.config.sold_out_cache.is_zero() {
        // The cache is an optimisation: failing to fill it changes no answer.
        let _ = inner.remember_sold_out(product_id).await;
    }
    Ok(outcomes)
}
