//! [`MemoryBroker`]: the in-process broker of embedded mode.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{Acker, Broker, Delivery, Envelope, MqError, Subscription, Topic};

/// An in-process broker with the delivery semantics of the real ones: each group gets every
/// message of a topic, subscribers of one group compete, a delivery dropped or nacked with
/// `requeue` is delivered again (marked redelivered), and a nack without requeue moves it to the
/// group's dead letters.
///
/// A group's queue exists from its first subscription, or from the start for the groups given
/// to [`MemoryBroker::with_groups`], as RabbitMQ's queues exist from connect for
/// `RabbitSettings::groups`: a message published before its consumers start waits for a
/// declared group. Messages of a topic that no group has subscribed to and none is declared
/// for are not kept (follow-ups nobody listens to would otherwise grow forever).
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The groups of each topic.
    topics: Mutex<HashMap<Topic, HashMap<String, Arc<GroupQueue>>>>,
    closed: AtomicBool,
}

#[derive(Default)]
struct GroupQueue {
    items: Mutex<Blocks<(Envelope, bool)>>,
    notify: Notify,
    unacked: AtomicU64,
    dead: Mutex<Vec<Envelope>>,
}

impl GroupQueue {
    fn push(&self, envelope: Envelope, redelivered: bool, front: bool) {
        let mut items = self.items.lock();
        if front {
            items.push_front((envelope, redelivered));
        } else {
            items.push_back((envelope, redelivered));
        }
        drop(items);
        self.notify.notify_one();
    }
}

/// Messages per block of a [`Blocks`] queue.
const BLOCK: usize = 1024;

/// A FIFO in fixed blocks: growing allocates one block and never moves what is queued (a
/// `VecDeque` doubles by copying every message, under the lock the publisher and the
/// consumers of the group take).
struct Blocks<T> {
    blocks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Self {
            blocks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Blocks<T> {
    fn push_back(&mut self, item: T) {
        if self.blocks.back().is_none_or(|b| b.len() == BLOCK) {
            self.blocks.push_back(VecDeque::with_capacity(BLOCK));
        }
        self.blocks
            .back_mut()
            .expect("just ensured")
            .push_back(item);
        self.len += 1;
    }

    fn push_front(&mut self, item: T) {
        if self.blocks.front().is_none_or(|b| b.len() == BLOCK) {
            self.blocks.push_front(VecDeque::with_capacity(BLOCK));
        }
        self.blocks
            .front_mut()
            .expect("just ensured")
            .push_front(item);
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<T> {
        let front = self.blocks.front_mut()?;
        let item = front.pop_front()?;
        self.len -= 1;
        // An emptied block goes, unless it is the last one: a queue that keeps up reuses it.
        if front.is_empty() && self.blocks.len() > 1 {
            self.blocks.pop_front();
        }
        Some(item)
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl MemoryBroker {
    /// A broker with no group declared: a topic keeps nothing until a group subscribes to it.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker whose `(topic, group)` queues exist from the start: messages published before
    /// such a group first subscribes wait for it.
    pub fn with_groups(groups: impl IntoIterator<Item = (Topic, String)>) -> Self {
        let broker = Self::new();
        {
            let mut topics = broker.inner.topics.lock();
            for (topic, group) in groups {
                topics.entry(topic).or_default().entry(group).or_default();
            }
        }
        broker
    }

    /// Messages a group gave up on (nacked without requeue).
    pub fn dead_letters(&self, topic: Topic, group: &str) -> Vec<Envelope> {
        self.group(topic, group)
            .map(|g| g.dead.lock().clone())
            .unwrap_or_default()
    }

    /// Messages held for delivery over every topic and group: queued, or delivered and not
    /// settled yet (dead letters aside).
    pub fn held(&self) -> u64 {
        self.inner
            .topics
            .lock()
            .values()
            .flat_map(HashMap::values)
            .map(|g| g.items.lock().len() as u64 + g.unacked.load(Ordering::SeqCst))
            .sum()
    }

    fn group(&self, topic: Topic, group: &str) -> Option<Arc<GroupQueue>> {
        self.inner
            .topics
            .lock()
            .get(&topic)
            .and_then(|t| t.get(group).cloned())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), MqError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        let topics = self.inner.topics.lock();
        for env in envelopes {
            // No group: nobody would ever read it.
            for g in topics
                .get(&env.topic())
                .into_iter()
                .flat_map(HashMap::values)
            {
                g.push(env.clone(), false, false);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: Topic, group: &str) -> Result<Box<dyn Subscription>, MqError> {
        let mut topics = self.inner.topics.lock();
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        let groups = topics.entry(topic).or_default();
        let queue = match groups.get(group) {
            Some(q) => q.clone(),
            None => {
                let q = Arc::new(GroupQueue::default());
                groups.insert(group.to_owned(), q.clone());
                q
            }
        };
        Ok(Box::new(MemorySubscription {
            queue,
            broker: self.inner.clone(),
        }))
    }

    async fn pending(&self, topic: Topic, group: &str) -> Result<Option<u64>, MqError> {
        // A group that neither subscribed nor was declared has no queue: nothing waits for it.
        Ok(Some(self.group(topic, group).map_or(0, |g| {
            g.items.lock().len() as u64 + g.unacked.load(Ordering::SeqCst)
        })))
    }

    /// Stops accepting: publishing and subscribing fail with [`MqError::Closed`], and
    /// subscriptions answer it once they handed out what their group's queue holds. Nothing
    /// is dropped: the messages stay in this process.
    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for groups in self.inner.topics.lock().values() {
            for g in groups.values() {
                g.notify.notify_waiters();
                g.notify.notify_one();
            }
        }
    }
}

struct MemorySubscription {
    queue: Arc<GroupQueue>,
    broker: Arc<Inner>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery, MqError> {
        loop {
            let notified = self.queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let item = self.queue.items.lock().pop_front();
            if let Some((envelope, redelivered)) = item {
                self.queue.unacked.fetch_add(1, Ordering::SeqCst);
                let acker = MemoryAcker {
                    queue: self.queue.clone(),
                    envelope: envelope.clone(),
                    settled: AtomicBool::new(false),
                };
                return Ok(Delivery::new(envelope, redelivered, Box::new(acker)));
            }
            if self.broker.closed.load(Ordering::SeqCst) {
                return Err(MqError::Closed);
            }
            notified.await;
        }
    }
}

struct MemoryAcker {
    queue: Arc<GroupQueue>,
    envelope: Envelope,
    settled: AtomicBool,
}

impl MemoryAcker {
    /// Settles once; returns false when already settled.
    fn settle(&self) -> bool {
        if self.settled.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.queue.unacked.fetch_sub(1, Ordering::SeqCst);
        true
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), MqError> {
        self.settle();
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<(), MqError> {
        if self.settle() {
            if requeue {
                self.queue.push(self.envelope.clone(), true, true);
            } else {
                self.queue.dead.lock().push(self.envelope.clone());
            }
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if self.settle() {
            self.queue.push(self.envelope.clone(), true, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_fifo_order_across_blocks_and_requeues_go_first() {
        let mut q = Blocks::default();
        let n = 3 * BLOCK + 7;
        for i in 0..n {
            q.push_back(i);
        }
        assert_eq!((q.len(), q.blocks.len()), (n, 4));
        for i in 0..BLOCK + 1 {
            assert_eq!(q.pop_front(), Some(i));
        }
        // Requeued at the front: one into the room the pops left, the rest into a new block.
        for i in (0..BLOCK + 1).rev() {
            q.push_front(i);
        }
        let mut out = Vec::new();
        while let Some(i) = q.pop_front() {
            out.push(i);
        }
        assert_eq!(out, (0..n).collect::<Vec<_>>());
        assert_eq!((q.len(), q.blocks.len()), (0, 1), "the last block is kept");
        assert!(q.blocks.iter().all(|b| b.capacity() >= BLOCK));
    }
}
