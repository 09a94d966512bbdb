//! [`OffsetStore`]: durable consumer positions and partition leases for brokers without
//! consumer groups (Kafka through rskafka).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::MqError;

/// Identifies one partition of one topic as consumed by one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    /// The consumer group.
    pub group: String,
    /// The broker-side topic name.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// The answer of [`OffsetStore::lease`]: whether the caller holds the lease, and where its
/// consumption starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Another owner holds the lease (renewed within its time-to-live): leave the partition
    /// alone.
    HeldByAnother,
    /// The caller holds the lease; the group never committed on this partition.
    Fresh,
    /// The caller holds the lease; the group's committed next offset, to resume at.
    Resume(i64),
}

impl Lease {
    /// A lease the caller holds, resuming at `next_offset` (`None` before the first commit).
    pub fn held(next_offset: Option<i64>) -> Self {
        next_offset.map_or(Self::Fresh, Self::Resume)
    }

    /// Whether the caller holds the lease.
    pub fn is_held(self) -> bool {
        !matches!(self, Self::HeldByAnother)
    }
}

/// Where a group's consumers keep their position, and which consumer owns each partition.
///
/// Implementers guarantee: at most one owner holds a partition's lease at a time (a lease not
/// renewed within its time-to-live may be taken by another owner); [`OffsetStore::commit`]
/// succeeds only for the current owner, so a consumer that lost its lease cannot move the
/// position back or forward.
#[async_trait]
pub trait OffsetStore: Send + Sync + 'static {
    /// Takes or renews the lease on `key` for `owner`, for `ttl`. Returns whether `owner` holds
    /// it now, and if so the next offset to consume.
    ///
    /// # Errors
    /// The store failed; treat the lease as not held.
    async fn lease(&self, key: &PartitionKey, owner: &str, ttl: Duration)
    -> Result<Lease, MqError>;

    /// Records that every offset below `next_offset` was handled. Returns false when `owner`
    /// no longer holds the lease (nothing is written then).
    ///
    /// # Errors
    /// The store failed; the position is unchanged.
    async fn commit(
        &self,
        key: &PartitionKey,
        owner: &str,
        next_offset: i64,
    ) -> Result<bool, MqError>;

    /// The committed next offset of `key`, whoever owns it.
    ///
    /// # Errors
    /// The store failed.
    async fn position(&self, key: &PartitionKey) -> Result<Option<i64>, MqError>;

    /// Gives the lease up (on shutdown), so another owner takes over at once.
    ///
    /// # Errors
    /// The store failed; the lease then expires by itself.
    async fn release(&self, key: &PartitionKey, owner: &str) -> Result<(), MqError>;
}

/// Positions and leases held in this process: for one-instance deployments and embedded tests.
#[derive(Default)]
pub struct MemoryOffsetStore {
    rows: Mutex<HashMap<PartitionKey, Row>>,
}

#[derive(Default)]
struct Row {
    next: Option<i64>,
    owner: Option<(String, Instant)>,
}

impl MemoryOffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl OffsetStore for MemoryOffsetStore {
    async fn lease(
        &self,
        key: &PartitionKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, MqError> {
        let mut rows = self.rows.lock();
        let row = rows.entry(key.clone()).or_default();
        let now = Instant::now();
        let free = match &row.owner {
            None => true,
            Some((o, until)) => o == owner || *until <= now,
        };
        if !free {
            return Ok(Lease::HeldByAnother);
        }
        row.owner = Some((owner.to_owned(), now + ttl));
        Ok(Lease::held(row.next))
    }

    async fn commit(
        &self,
        key: &PartitionKey,
        owner: &str,
        next_offset: i64,
    ) -> Result<bool, MqError> {
        let mut rows = self.rows.lock();
        let row = rows.entry(key.clone()).or_default();
        match &row.owner {
            Some((o, _)) if o == owner => {
                row.next = Some(next_offset);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn position(&self, key: &PartitionKey) -> Result<Option<i64>, MqError> {
        Ok(self.rows.lock().get(key).and_then(|r| r.next))
    }

    async fn release(&self, key: &PartitionKey, owner: &str) -> Result<(), MqError> {
        if let Some(row) = self.rows.lock().get_mut(key) {
            if row.owner.as_ref().is_some_and(|(o, _)| o == owner) {
                row.owner = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_owner_at_a_time_and_only_the_owner_commits() {
        let store = MemoryOffsetStore::new();
        let key = PartitionKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        let ttl = Duration::from_secs(60);
        assert_eq!(store.lease(&key, "a", ttl).await.unwrap(), Lease::Fresh);
        assert_eq!(
            store.lease(&key, "b", ttl).await.unwrap(),
            Lease::HeldByAnother
        );
        assert!(store.commit(&key, "a", 7).await.unwrap());
        assert!(!store.commit(&key, "b", 9).await.unwrap());
        assert_eq!(store.position(&key).await.unwrap(), Some(7));
        store.release(&key, "a").await.unwrap();
        assert_eq!(store.lease(&key, "b", ttl).await.unwrap(), Lease::Resume(7));
        assert!(!store.commit(&key, "a", 1).await.unwrap());
    }
}
