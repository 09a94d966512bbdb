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
/// Messages published to a topic before any group subscribed wait for the first group.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<Topic, TopicState>>,
    closed: AtomicBool,
}

#[derive(Default)]
struct TopicState {
    groups: HashMap<String, Arc<GroupQueue>>,
    backlog: VecDeque<Envelope>,
}

#[derive(Default)]
struct GroupQueue {
    items: Mutex<VecDeque<(Envelope, bool)>>,
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

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages a group gave up on (nacked without requeue).
    pub fn dead_letters(&self, topic: Topic, group: &str) -> Vec<Envelope> {
        self.group(topic, group)
            .map(|g| g.dead.lock().clone())
            .unwrap_or_default()
    }

    fn group(&self, topic: Topic, group: &str) -> Option<Arc<GroupQueue>> {
        self.inner
            .topics
            .lock()
            .get(&topic)
            .and_then(|t| t.groups.get(group).cloned())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), MqError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        let mut topics = self.inner.topics.lock();
        for env in envelopes {
            let t = topics.entry(env.topic()).or_default();
            if t.groups.is_empty() {
                t.backlog.push_back(env.clone());
            }
            for g in t.groups.values() {
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
        let t = topics.entry(topic).or_default();
        let queue = match t.groups.get(group) {
            Some(q) => q.clone(),
            None => {
                let q = Arc::new(GroupQueue::default());
                for env in t.backlog.drain(..) {
                    q.push(env, false, false);
                }
                t.groups.insert(group.to_owned(), q.clone());
                q
            }
        };
        Ok(Box::new(MemorySubscription {
            queue,
            broker: self.inner.clone(),
        }))
    }

    async fn pending(&self, topic: Topic, group: &str) -> Result<Option<u64>, MqError> {
        let topics = self.inner.topics.lock();
        let Some(t) = topics.get(&topic) else {
            return Ok(Some(0));
        };
        Ok(Some(match t.groups.get(group) {
            Some(g) => g.items.lock().len() as u64 + g.unacked.load(Ordering::SeqCst),
            None => t.backlog.len() as u64,
        }))
    }

    /// Stops accepting: publishing and subscribing fail with [`MqError::Closed`], and
    /// subscriptions answer it once they handed out what their group's queue holds. Nothing
    /// is dropped: the messages stay in this process.
    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in self.inner.topics.lock().values() {
            for g in t.groups.values() {
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
