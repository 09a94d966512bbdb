//! Publishing: per-partition batching producers that linger, and the Java client's partitioner.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::{
    Aggregator, Error as AggregatorError, StatusDeaggregator, TryPush,
};
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder, Error as ProducerError};
use rskafka::record::Record;
use tokio::task::JoinSet;

use super::{Inner, KafkaError, timestamp};
use crate::{Envelope, MqError};

/// A partition's client and its batching producer, on the shared connection.
pub(super) struct PartitionHandle {
    pub(super) client: Arc<PartitionClient>,
    producer: BatchProducer<GroupAggregator>,
}

/// Publishes `envelopes`, each to the partition of its product, and waits until Kafka
/// acknowledged every record. The records of one partition go out in order, the partitions
/// concurrently.
pub(super) async fn publish(inner: &Arc<Inner>, envelopes: &[Envelope]) -> Result<(), MqError> {
    let mut batches: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
    for envelope in envelopes {
        let name = inner.topic_name(envelope.topic());
        let key = envelope.message.key().to_string().into_bytes();
        let partition = partition_for(&key, inner.partition_count(&name));
        let record = Record {
            key: Some(key),
            value: Some(envelope.to_json()?),
            headers: BTreeMap::new(),
            timestamp: timestamp(envelope.timestamp_ms),
        };
        batches.entry((name, partition)).or_default().push(record);
    }
    if batches.len() <= 1 {
        return match batches.pop_first() {
            Some(((name, partition), records)) => inner.produce(&name, partition, records).await,
            None => Ok(()),
        };
    }
    let mut set = JoinSet::new();
    for ((name, partition), records) in batches {
        let inner = Arc::clone(inner);
        set.spawn(async move { inner.produce(&name, partition, records).await });
    }
    let mut result = Ok(());
    while let Some(done) = set.join_next().await {
        let done = done
            .unwrap_or_else(|e| Err(MqError::Backend(Box::new(KafkaError::Task(e.to_string())))));
        if let (Ok(()), Err(e)) = (&result, done) {
            result = Err(e);
        }
    }
    result
}

impl Inner {
    /// The cached client and producer of one partition (boxed, as [`Inner::produce`]).
    pub(super) fn handle<'a>(
        &'a self,
        name: &'a str,
        partition: i32,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<PartitionHandle>, MqError>> + Send + 'a>> {
        Box::pin(self.handle_inner(name, partition))
    }

    async fn handle_inner(
        &self,
        name: &str,
        partition: i32,
    ) -> Result<Arc<PartitionHandle>, MqError> {
        let cell = Arc::clone(
            self.handles
                .lock()
                .entry((name.to_owned(), partition))
                .or_default(),
        );
        cell.get_or_try_init(|| async {
            let client = Arc::new(
                self.timed(self.client.partition_client(
                    name,
                    partition,
                    UnknownTopicHandling::Retry,
                ))
                .await?,
            );
            let producer = BatchProducerBuilder::new(Arc::clone(&client))
                .with_linger(self.settings.linger)
                .build(GroupAggregator::new(self.settings.max_batch_bytes));
            Ok(Arc::new(PartitionHandle { client, producer }))
        })
        .await
        .cloned()
    }

    /// Produces `records` to one partition, in order, and waits for every acknowledgement.
    ///
    /// Boxed: the nesting of rskafka's futures otherwise overflows the compiler's query depth
    /// when it lays the callers' futures out.
    pub(super) fn produce<'a>(
        &'a self,
        name: &'a str,
        partition: i32,
        records: Vec<Record>,
    ) -> Pin<Box<dyn Future<Output = Result<(), MqError>> + Send + 'a>> {
        Box::pin(async move {
            let handle = self.handle(name, partition).await?;
            for chunk in chunks(records, self.settings.max_batch_bytes) {
                self.timed_raw(handle.producer.produce(chunk))
                    .await?
                    .map_err(producer_error)?;
            }
            Ok(())
        })
    }
}

fn producer_error(e: ProducerError) -> MqError {
    match &e {
        ProducerError::Client(c)
            if matches!(**c, ClientError::Timeout | ClientError::RetryFailed(_)) =>
        {
            MqError::Timeout
        }
        _ => MqError::Backend(Box::new(e)),
    }
}

/// Splits records into batches of at most `max_bytes` of payload (a larger record alone).
fn chunks(records: Vec<Record>, max_bytes: usize) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        let len = record.approximate_size();
        if !current.is_empty() && size + len > max_bytes {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(record);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The partition of a record key: Kafka's default partitioner (murmur2, positive, modulo).
fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let n = partitions.max(1).unsigned_abs();
    let p = (murmur2(key) & 0x7fff_ffff) % n;
    i32::try_from(p).unwrap_or(0)
}

/// MurmurHash2 as the Java Kafka client computes it (seed `0x9747b28c`).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // The Java client mixes in the length as an `int`; keys are far below 2^31 bytes.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut h: u32 = 0x9747_b28c ^ len;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = blocks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Aggregates whole groups of records (one publish's records for one partition), so a group
/// stays contiguous and in order in one produce request. An empty batch takes any group.
#[derive(Debug)]
struct GroupAggregator {
    max_bytes: usize,
    bytes: usize,
    records: Vec<Record>,
}

impl GroupAggregator {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            records: Vec::new(),
        }
    }
}

impl Aggregator for GroupAggregator {
    type Input = Vec<Record>;
    type Tag = Range<usize>;
    type StatusDeaggregator = GroupStatus;

    fn try_push(
        &mut self,
        group: Vec<Record>,
    ) -> Result<TryPush<Vec<Record>, Range<usize>>, AggregatorError> {
        let size: usize = group.iter().map(Record::approximate_size).sum();
        if !self.records.is_empty() && self.bytes + size > self.max_bytes {
            return Ok(TryPush::NoCapacity(group));
        }
        let start = self.records.len();
        self.bytes += size;
        self.records.extend(group);
        Ok(TryPush::Aggregated(start..self.records.len()))
    }

    fn flush(&mut self) -> Result<(Vec<Record>, GroupStatus), AggregatorError> {
        self.bytes = 0;
        Ok((std::mem::take(&mut self.records), GroupStatus))
    }
}

/// Checks that Kafka returned an offset for every record of a group.
#[derive(Debug)]
struct GroupStatus;

impl StatusDeaggregator for GroupStatus {
    type Status = ();
    type Tag = Range<usize>;

    fn deaggregate(&self, offsets: &[i64], tag: Range<usize>) -> Result<(), AggregatorError> {
        if tag.end <= offsets.len() {
            Ok(())
        } else {
            Err(format!(
                "kafka acknowledged {} records, expected at least {}",
                offsets.len(),
                tag.end
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's `UtilsTest.testMurmur2`.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn a_product_always_maps_to_one_partition_and_products_spread() {
        let partitions: std::collections::HashSet<i32> = (1000..1100u64)
            .map(|p| partition_for(p.to_string().as_bytes(), 4))
            .collect();
        assert_eq!(partitions.len(), 4);
        assert_eq!(partition_for(b"1001", 4), partition_for(b"1001", 4));
        assert!((0..4).contains(&partition_for(b"1001", 4)));
    }

    #[test]
    fn chunks_respect_the_byte_budget_and_keep_order() {
        let record = |n: usize| Record {
            key: None,
            value: Some(vec![0; n]),
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        };
        let out = chunks(
            vec![record(4), record(4), record(4), record(20), record(1)],
            8,
        );
        let sizes: Vec<Vec<usize>> = out
            .iter()
            .map(|c| c.iter().map(Record::approximate_size).collect())
            .collect();
        assert_eq!(sizes, vec![vec![4, 4], vec![4], vec![20], vec![1]]);
    }
}
