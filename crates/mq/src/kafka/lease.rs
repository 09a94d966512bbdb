//! The bookkeeping of one consumed group: per partition, the consumption under the current
//! lease (its generation, fetch position, unacknowledged offsets), and the shared queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{Envelope, PartitionKey, Topic};

/// One (topic, group) consumed by this instance: its partitions and the queue its
/// subscriptions share.
pub(super) struct Group {
    pub(super) topic: Topic,
    pub(super) queue: Mutex<VecDeque<Ready>>,
    /// Records were queued, or the group closed.
    pub(super) notify: Notify,
    pub(super) closed: AtomicBool,
    pub(super) parts: Vec<Part>,
}

/// A fetched record waiting for a consumer.
pub(super) struct Ready {
    pub(super) part: usize,
    pub(super) generation: u64,
    pub(super) offset: i64,
    pub(super) envelope: Envelope,
    pub(super) redelivered: bool,
}

/// One partition of a [`Group`].
pub(super) struct Part {
    pub(super) key: PartitionKey,
    pub(super) state: Mutex<PartState>,
    /// Buffer space was freed, or consumption of the partition ended.
    pub(super) wake: Notify,
    /// Serialises commits, so they go out in order and coalesce.
    pub(super) commit_lock: tokio::sync::Mutex<()>,
}

/// The consumption of one partition, as far as this instance knows.
#[derive(Default)]
pub(super) struct PartState {
    /// Bumped whenever consumption starts or ends: deliveries of another generation are stale.
    pub(super) generation: u64,
    /// This instance holds the lease and consumes.
    pub(super) owned: bool,
    /// The next offset to fetch.
    pub(super) next_fetch: i64,
    /// The committed next offset, as far as this instance knows.
    pub(super) committed: i64,
    /// Fetched offsets not acknowledged yet, with their failed handlings.
    pub(super) outstanding: BTreeMap<i64, u32>,
    /// Records of this partition in the group's queue.
    pub(super) buffered: usize,
}

impl PartState {
    /// The lowest offset not acknowledged yet.
    pub(super) fn commit_target(&self) -> i64 {
        self.outstanding
            .first_key_value()
            .map_or(self.next_fetch, |(offset, _)| *offset)
    }
}

impl Group {
    pub(super) fn new(topic: Topic, group: &str, name: &str, partitions: i32) -> Self {
        Self {
            topic,
            queue: Mutex::default(),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            parts: (0..partitions)
                .map(|partition| Part {
                    key: PartitionKey {
                        group: group.to_owned(),
                        topic: name.to_owned(),
                        partition,
                    },
                    state: Mutex::default(),
                    wake: Notify::new(),
                    commit_lock: tokio::sync::Mutex::new(()),
                })
                .collect(),
        }
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for index in 0..self.parts.len() {
            self.end(index, None);
        }
        self.queue.lock().clear();
        self.notify.notify_waiters();
    }

    pub(super) fn is_current(&self, index: usize, generation: u64) -> bool {
        self.parts[index].state.lock().generation == generation
    }

    /// Starts consuming a partition at `offset`; returns the new generation.
    pub(super) fn start(&self, index: usize, offset: i64) -> u64 {
        let part = &self.parts[index];
        let generation = {
            let mut st = part.state.lock();
            st.generation += 1;
            st.owned = true;
            st.next_fetch = offset;
            st.committed = offset;
            st.outstanding.clear();
            st.buffered = 0;
            st.generation
        };
        self.queue
            .lock()
            .retain(|r| r.part != index || r.generation >= generation);
        generation
    }

    /// Ends the consumption of a partition (of `generation`, or whichever runs): drops its
    /// buffered records; its deliveries become stale.
    pub(super) fn end(&self, index: usize, generation: Option<u64>) {
        let part = &self.parts[index];
        let ended = {
            let mut st = part.state.lock();
            if generation.is_some_and(|g| g != st.generation) {
                return;
            }
            st.generation += 1;
            st.owned = false;
            st.outstanding.clear();
            st.buffered = 0;
            st.generation
        };
        self.queue
            .lock()
            .retain(|r| r.part != index || r.generation >= ended);
        part.wake.notify_one();
    }

    /// Queues fetched records; false when the consumption of `generation` ended meanwhile.
    pub(super) fn push_fetched(
        &self,
        index: usize,
        generation: u64,
        records: Vec<(i64, Envelope)>,
        next_fetch: i64,
    ) -> bool {
        let n = records.len();
        {
            let mut st = self.parts[index].state.lock();
            if st.generation != generation {
                return false;
            }
            for (offset, _) in &records {
                st.outstanding.insert(*offset, 0);
            }
            st.buffered += n;
            st.next_fetch = st.next_fetch.max(next_fetch);
        }
        if n == 0 {
            return true;
        }
        self.queue
            .lock()
            .extend(records.into_iter().map(|(offset, envelope)| Ready {
                part: index,
                generation,
                offset,
                envelope,
                redelivered: false,
            }));
        if n == 1 {
            self.notify.notify_one();
        } else {
            self.notify.notify_waiters();
        }
        true
    }

    /// Takes a queued record for delivery; false when it is stale.
    pub(super) fn take(&self, ready: &Ready) -> bool {
        let part = &self.parts[ready.part];
        {
            let mut st = part.state.lock();
            if st.generation != ready.generation {
                return false;
            }
            st.buffered = st.buffered.saturating_sub(1);
        }
        part.wake.notify_one();
        true
    }

    /// Queues a delivery again, first in line; false when it is stale.
    pub(super) fn requeue(
        &self,
        index: usize,
        generation: u64,
        offset: i64,
        envelope: Envelope,
    ) -> bool {
        {
            let mut st = self.parts[index].state.lock();
            if st.generation != generation || !st.outstanding.contains_key(&offset) {
                return false;
            }
            st.buffered += 1;
        }
        self.queue.lock().push_front(Ready {
            part: index,
            generation,
            offset,
            envelope,
            redelivered: true,
        });
        self.notify.notify_one();
        true
    }
}
