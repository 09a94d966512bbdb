//! Deliveries and their settlement: ack commits the lowest unacknowledged offset, nack
//! requeues or dead-letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use rskafka::record::Record;

use super::lease::Group;
use super::{Inner, KafkaError, timestamp};
use crate::{Acker, Delivery, Envelope, MqError, PartitionKey, Subscription};

/// Header of a dead letter: the group that gave the message up.
pub(super) const HEADER_GROUP: &str = "seckill-dlq-group";
/// Header of a dead letter: the partition of the source topic it was read from.
const HEADER_PARTITION: &str = "seckill-dlq-partition";
/// Header of a dead letter: its offset in that partition.
const HEADER_OFFSET: &str = "seckill-dlq-offset";
/// Header of a dead letter: the failed handlings.
const HEADER_ATTEMPTS: &str = "seckill-dlq-attempts";
/// Header of a dead letter: why it was given up.
const HEADER_REASON: &str = "seckill-dlq-reason";

/// What a failed handling led to.
enum Failed {
    /// Delivered again.
    Requeued,
    /// Out of attempts (or given up): dead-letter it, after this many failed handlings.
    Exhausted(u32),
    /// The delivery belongs to a consumption that ended.
    Stale,
}

impl Group {
    /// Counts a failed handling; queues the delivery again when `requeue` and attempts remain.
    fn fail(
        &self,
        index: usize,
        generation: u64,
        offset: i64,
        envelope: &Envelope,
        requeue: bool,
        max_attempts: u32,
    ) -> Failed {
        let attempts = {
            let mut st = self.parts[index].state.lock();
            if st.generation != generation {
                return Failed::Stale;
            }
            let Some(attempts) = st.outstanding.get_mut(&offset) else {
                return Failed::Stale;
            };
            *attempts += 1;
            *attempts
        };
        if !requeue || attempts >= max_attempts {
            return Failed::Exhausted(attempts);
        }
        if self.requeue(index, generation, offset, envelope.clone()) {
            Failed::Requeued
        } else {
            Failed::Stale
        }
    }

    /// Acknowledges an offset and commits the new position.
    async fn ack(
        &self,
        inner: &Inner,
        index: usize,
        generation: u64,
        offset: i64,
    ) -> Result<(), MqError> {
        {
            let mut st = self.parts[index].state.lock();
            if st.generation != generation {
                return Err(self.stale(inner, index));
            }
            st.outstanding.remove(&offset);
        }
        self.commit(inner, index, generation).await
    }

    /// Commits the lowest offset not acknowledged yet, when it moved.
    async fn commit(&self, inner: &Inner, index: usize, generation: u64) -> Result<(), MqError> {
        let part = &self.parts[index];
        let _serial = part.commit_lock.lock().await;
        let target = {
            let st = part.state.lock();
            if st.generation != generation {
                return Err(self.stale(inner, index));
            }
            let target = st.commit_target();
            if target <= st.committed {
                return Ok(());
            }
            target
        };
        if inner
            .offsets
            .commit(&part.key, &inner.owner, target)
            .await?
        {
            let mut st = part.state.lock();
            if st.generation == generation {
                st.committed = st.committed.max(target);
            }
            Ok(())
        } else {
            tracing::warn!(partition = ?part.key, "partition lease lost: consumption stops");
            self.end(index, Some(generation));
            Err(MqError::Backend(Box::new(KafkaError::LeaseLost(
                part.key.clone(),
            ))))
        }
    }

    /// The error for settling a delivery of an ended consumption.
    fn stale(&self, inner: &Inner, index: usize) -> MqError {
        if self.closed.load(Ordering::SeqCst) || inner.closed.load(Ordering::SeqCst) {
            MqError::Closed
        } else {
            MqError::Backend(Box::new(KafkaError::LeaseLost(
                self.parts[index].key.clone(),
            )))
        }
    }
}

/// The headers of a dead letter read at `offset` of `key`'s partition.
pub(super) fn dlq_headers(
    key: &PartitionKey,
    offset: i64,
    attempts: u32,
    reason: &str,
) -> [(String, Vec<u8>); 5] {
    [
        (HEADER_GROUP.to_owned(), key.group.clone().into_bytes()),
        (
            HEADER_PARTITION.to_owned(),
            key.partition.to_string().into_bytes(),
        ),
        (HEADER_OFFSET.to_owned(), offset.to_string().into_bytes()),
        (
            HEADER_ATTEMPTS.to_owned(),
            attempts.to_string().into_bytes(),
        ),
        (HEADER_REASON.to_owned(), reason.as_bytes().to_vec()),
    ]
}

/// Publishes a delivery to the dead-letter topic, then acknowledges it. When the dead-letter
/// topic refuses it, it is delivered again instead.
async fn dead_letter(settle: Settle, attempts: u32, reason: &str) -> Result<(), MqError> {
    let Settle {
        inner,
        group,
        part,
        generation,
        offset,
        envelope,
    } = settle;
    let key = &group.parts[part].key;
    let dlq = inner.dlq_name(group.topic);
    let record = Record {
        key: Some(envelope.message.key().to_string().into_bytes()),
        value: Some(envelope.to_json()?),
        headers: dlq_headers(key, offset, attempts, reason)
            .into_iter()
            .collect(),
        timestamp: timestamp(envelope.timestamp_ms),
    };
    let partition = key.partition.min(inner.partition_count(&dlq) - 1);
    match inner.produce(&dlq, partition, vec![record]).await {
        Ok(()) => {
            tracing::warn!(partition = ?key, offset, attempts, reason, "message dead-lettered");
            group.ack(&inner, part, generation, offset).await
        }
        Err(e) => {
            group.requeue(part, generation, offset, envelope);
            Err(e)
        }
    }
}

/// A subscription of a group: takes deliveries off the group's shared queue.
pub(super) struct KafkaSubscription {
    inner: Arc<Inner>,
    group: Arc<Group>,
}

impl KafkaSubscription {
    pub(super) fn new(inner: Arc<Inner>, group: Arc<Group>) -> Self {
        Self { inner, group }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Delivery, MqError> {
        loop {
            let notified = self.group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.group.closed.load(Ordering::SeqCst) {
                return Err(MqError::Closed);
            }
            let item = self.group.queue.lock().pop_front();
            if let Some(ready) = item {
                if !self.group.take(&ready) {
                    continue;
                }
                let acker = KafkaAcker {
                    settle: Some(Settle {
                        inner: Arc::clone(&self.inner),
                        group: Arc::clone(&self.group),
                        part: ready.part,
                        generation: ready.generation,
                        offset: ready.offset,
                        envelope: ready.envelope.clone(),
                    }),
                    settled: AtomicBool::new(false),
                };
                return Ok(Delivery::new(
                    ready.envelope,
                    ready.redelivered,
                    Box::new(acker),
                ));
            }
            notified.await;
        }
    }
}

/// Everything needed to settle one delivery.
struct Settle {
    inner: Arc<Inner>,
    group: Arc<Group>,
    part: usize,
    generation: u64,
    offset: i64,
    envelope: Envelope,
}

impl Settle {
    fn fail(&self, requeue: bool) -> Failed {
        self.group.fail(
            self.part,
            self.generation,
            self.offset,
            &self.envelope,
            requeue,
            self.inner.settings.max_attempts.max(1),
        )
    }

    fn clone_parts(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            group: Arc::clone(&self.group),
            part: self.part,
            generation: self.generation,
            offset: self.offset,
            envelope: self.envelope.clone(),
        }
    }
}

struct KafkaAcker {
    /// Always `Some` until dropped.
    settle: Option<Settle>,
    settled: AtomicBool,
}

impl KafkaAcker {
    /// The settle data, the first time only.
    fn first(&self) -> Option<&Settle> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.settle.as_ref()
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(&self) -> Result<(), MqError> {
        let Some(s) = self.first() else { return Ok(()) };
        s.group.ack(&s.inner, s.part, s.generation, s.offset).await
    }

    async fn nack(&self, requeue: bool) -> Result<(), MqError> {
        let Some(s) = self.first() else { return Ok(()) };
        match s.fail(requeue) {
            Failed::Requeued => Ok(()),
            Failed::Stale => Err(s.group.stale(&s.inner, s.part)),
            Failed::Exhausted(attempts) => {
                let reason = if requeue { "max_attempts" } else { "rejected" };
                dead_letter(s.clone_parts(), attempts, reason).await
            }
        }
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if self.settled.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(s) = self.settle.take() else { return };
        if let Failed::Exhausted(attempts) = s.fail(true) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        if let Err(e) = dead_letter(s, attempts, "max_attempts").await {
                            tracing::warn!(error = %e, "dead-lettering a dropped delivery failed");
                        }
                    });
                }
                Err(_) => {
                    s.group.requeue(s.part, s.generation, s.offset, s.envelope);
                }
            }
        }
    }
}
