//! [`KafkaBroker`]: the Kafka backend, through [rskafka](https://docs.rs/rskafka).
//!
//! rskafka speaks the plain Kafka protocol without consumer groups, so this module builds the
//! group semantics of the [`Broker`] contract itself, on partitions and an [`OffsetStore`].
//!
//! # Delivery design
//!
//! - **Topics.** Each [`Topic`] is the Kafka topic `{topic_prefix}{Topic::name()}`, with a
//!   dead-letter topic `{that name}.dlq`; [`KafkaBroker::connect`] creates the missing ones.
//! - **Publishing.** A message goes to the partition `murmur2(product id) mod partitions` (the
//!   partitioner of the Java client), keyed by the product id and valued by
//!   [`Envelope::to_json`], so one product's messages stay in one partition, in publishing order.
//!   Concurrent publishers share one batch per partition for [`KafkaSettings::linger`];
//!   [`Broker::publish_batch`] returns `Ok` once Kafka acknowledged every record (acks = all).
//! - **At-least-once consumption.** For each (topic, group) a broker instance runs one fetch
//!   task per partition, shared by all its subscriptions of that group: they compete for the
//!   records on one queue. A task consumes its partition only while this instance holds the
//!   partition's lease in the [`OffsetStore`] (renewed every third of
//!   [`KafkaSettings::lease_ttl`]), so several instances can consume one group: a partition
//!   leased by another instance is tried again every [`KafkaSettings::lease_retry`], and taken
//!   over once the lease of a dead instance expired. Consumption starts at the committed offset,
//!   or at the earliest one for a group that never committed, so a new group also gets what was
//!   published before it subscribed.
//! - **Offsets are durable in the [`OffsetStore`]** (PostgreSQL in production, in the order
//!   service's database). Acknowledging a delivery commits the lowest offset not acknowledged
//!   yet, before the ack returns; a commit refused because the lease moved on ends the
//!   consumption of that partition and drops what it buffered. Whatever was not committed when
//!   an instance dies is delivered again by the next owner; nothing is lost.
//! - **Redelivery and dead letters.** A delivery nacked with `requeue`, or dropped unsettled,
//!   comes back (marked redelivered). After [`KafkaSettings::max_attempts`] such failed handlings,
//!   or at once on `nack(false)`, it is published to the dead-letter topic (same partition, with
//!   headers naming the group, source partition and offset, and the attempts) and counts as
//!   acknowledged.
//! - **Effect exactly once.** Delivery is at least once: after a crash, a lease takeover or a
//!   failed handling, a message may come again. The consumers' handlers are idempotent by message
//!   id / order id, which makes the effect exactly once.
//!
//! Memory stays bounded: a fetch returns at most [`KafkaSettings::fetch_max_bytes`], and a
//! partition stops fetching while [`KafkaSettings::max_buffered`] of its records wait for a
//! consumer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::{
    Aggregator, Error as AggregatorError, StatusDeaggregator, TryPush,
};
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder, Error as ProducerError};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use tokio::sync::{Notify, OnceCell, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::{
    Acker, Broker, Delivery, Envelope, MqError, OffsetStore, PartitionKey, Subscription, Topic,
};

/// Header of a dead letter: the group that gave the message up.
const HEADER_GROUP: &str = "seckill-dlq-group";
/// Header of a dead letter: the partition of the source topic it was read from.
const HEADER_PARTITION: &str = "seckill-dlq-partition";
/// Header of a dead letter: its offset in that partition.
const HEADER_OFFSET: &str = "seckill-dlq-offset";
/// Header of a dead letter: the failed handlings.
const HEADER_ATTEMPTS: &str = "seckill-dlq-attempts";
/// Header of a dead letter: why it was given up.
const HEADER_REASON: &str = "seckill-dlq-reason";

/// Settings of a [`KafkaBroker`].
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// Bootstrap brokers, as `host:port`.
    pub brokers: Vec<String>,
    /// Put before every topic name: separates deployments (and tests) sharing a cluster.
    pub topic_prefix: String,
    /// Partitions of the topics [`KafkaBroker::connect`] creates; topics that exist keep theirs.
    pub partitions: i32,
    /// How long a publish waits for others to share its partition's batch.
    pub linger: Duration,
    /// Payload bytes of one produce batch per partition (a larger single message goes alone).
    pub max_batch_bytes: usize,
    /// Failed handlings (nack with requeue, delivery dropped unsettled) after which a message is
    /// dead-lettered.
    pub max_attempts: u32,
    /// Time-to-live of a partition lease; the owner renews it every third of it.
    pub lease_ttl: Duration,
    /// How often a partition this instance does not own is tried again.
    pub lease_retry: Duration,
    /// Upper bound of the record bytes one fetch returns.
    pub fetch_max_bytes: i32,
    /// How long a fetch waits on the broker for new records.
    pub fetch_max_wait: Duration,
    /// Fetched records waiting for a consumer, per partition, above which fetching pauses.
    pub max_buffered: usize,
    /// Deadline of one request to Kafka, retries included.
    pub request_timeout: Duration,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            topic_prefix: String::new(),
            partitions: 4,
            linger: Duration::from_millis(5),
            max_batch_bytes: 512 * 1024,
            max_attempts: 5,
            lease_ttl: Duration::from_secs(10),
            lease_retry: Duration::from_secs(3),
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(200),
            max_buffered: 1000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The Kafka [`Broker`]; see the [module documentation](self) for the delivery design.
///
/// Call [`KafkaBroker::shutdown`] before dropping it: that hands the partition leases over at
/// once. Dropping it without stops consuming at once too, but leaves the leases to expire, as a
/// crash would.
pub struct KafkaBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("owner", &self.inner.owner)
            .field("topic_prefix", &self.inner.settings.topic_prefix)
            .finish_non_exhaustive()
    }
}

/// Failures this module reports through [`MqError::Backend`].
#[derive(Debug, thiserror::Error)]
enum KafkaError {
    #[error("this instance lost the lease of {0:?}; the message will be delivered again")]
    LeaseLost(PartitionKey),
    #[error("task failed: {0}")]
    Task(String),
}

type HandleCell = Arc<OnceCell<Arc<PartitionHandle>>>;

struct Inner {
    settings: KafkaSettings,
    /// This instance's name in the partition leases.
    owner: String,
    /// Shared connection for producing, metadata, administration and offset queries.
    client: Client,
    offsets: Arc<dyn OffsetStore>,
    /// Partitions per broker-side topic name (main and dead-letter topics).
    partitions: HashMap<String, i32>,
    handles: Mutex<HashMap<(String, i32), HandleCell>>,
    groups: Mutex<HashMap<(Topic, String), Arc<Group>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
}

/// A partition's client and its batching producer, on the shared connection.
struct PartitionHandle {
    client: Arc<PartitionClient>,
    producer: BatchProducer<GroupAggregator>,
}

impl KafkaBroker {
    /// Connects to `settings.brokers` and creates the missing topics (every [`Topic`] and its
    /// dead-letter topic, with `settings.partitions` partitions, replication 1). Consumer
    /// positions and partition leases live in `offsets`.
    ///
    /// # Errors
    /// The cluster could not be reached, or refused to create a topic.
    pub async fn connect(
        settings: KafkaSettings,
        offsets: Arc<dyn OffsetStore>,
    ) -> Result<Self, MqError> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let owner = format!(
            "seckill-{}-{nanos:x}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let client = build_client(&settings, &owner).await?;
        let controller = client.controller_client().map_err(client_error)?;
        let wanted = settings.partitions.max(1);
        let names = topic_names(&settings.topic_prefix);
        for name in &names {
            let created = with_timeout(
                settings.request_timeout,
                controller.create_topic(name.as_str(), wanted, 1, timeout_ms(&settings)),
            )
            .await?;
            match created {
                Ok(())
                | Err(ClientError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                }) => {}
                Err(e) => return Err(client_error(e)),
            }
        }
        let listed = with_timeout(settings.request_timeout, client.list_topics())
            .await?
            .map_err(client_error)?;
        let partitions = names
            .into_iter()
            .map(|name| {
                let n = listed
                    .iter()
                    .find(|t| t.name == name)
                    .map_or(0, |t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX));
                (name, if n > 0 { n } else { wanted })
            })
            .collect();
        let (stop, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                owner,
                client,
                offsets,
                partitions,
                handles: Mutex::default(),
                groups: Mutex::default(),
                tasks: Mutex::default(),
                stop,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The broker-side name of `topic`: `{topic_prefix}{topic.name()}`. Its dead letters go to
    /// that name followed by `.dlq`.
    pub fn topic_name(&self, topic: Topic) -> String {
        self.inner.topic_name(topic)
    }

    /// This instance's owner id in the partition leases: unique per [`KafkaBroker`].
    pub fn owner_id(&self) -> &str {
        &self.inner.owner
    }

    /// The partitions of `topic` this instance consumes for `group` now (holds the lease of).
    pub fn owned_partitions(&self, topic: Topic, group: &str) -> Vec<i32> {
        let Some(group) = self
            .inner
            .groups
            .lock()
            .get(&(topic, group.to_owned()))
            .cloned()
        else {
            return Vec::new();
        };
        group
            .parts
            .iter()
            .filter(|p| p.state.lock().owned)
            .map(|p| p.key.partition)
            .collect()
    }

    /// The messages of `topic` that `group` gave up on, read from the dead-letter topic, in
    /// partition and then offset order.
    ///
    /// # Errors
    /// Kafka could not be read.
    pub async fn dead_letters(&self, topic: Topic, group: &str) -> Result<Vec<Envelope>, MqError> {
        let inner = &self.inner;
        let name = inner.dlq_name(topic);
        let mut out = Vec::new();
        for partition in 0..inner.partition_count(&name) {
            let handle = inner.handle(&name, partition).await?;
            let mut offset = inner
                .timed(handle.client.get_offset(OffsetAt::Earliest))
                .await?;
            loop {
                let (records, high_watermark) = inner
                    .timed(handle.client.fetch_records(
                        offset,
                        1..inner.settings.fetch_max_bytes,
                        1,
                    ))
                    .await?;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                for r in records {
                    let mine = r
                        .record
                        .headers
                        .get(HEADER_GROUP)
                        .is_some_and(|g| g == group.as_bytes());
                    if let (true, Some(value)) = (mine, r.record.value.as_deref()) {
                        if let Ok(envelope) = Envelope::from_json(value) {
                            out.push(envelope);
                        }
                    }
                }
                if offset >= high_watermark {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Stops consuming: subscriptions answer [`MqError::Closed`], fetching ends, what was
    /// fetched and not acknowledged is dropped (the next owner delivers it again) and the
    /// partition leases are released. Publishing fails afterwards. Returns once every fetch task
    /// ended.
    pub async fn shutdown(&self) {
        self.inner.close();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "kafka fetch task failed");
            }
        }
    }

    /// Deletes the topics of this broker's prefix (main and dead-letter ones); topics that do not
    /// exist are fine. For test cleanup: call [`KafkaBroker::shutdown`] first.
    ///
    /// # Errors
    /// Kafka refused to delete a topic.
    pub async fn delete_topics(&self) -> Result<(), MqError> {
        let inner = &self.inner;
        let controller = inner.client.controller_client().map_err(client_error)?;
        for name in topic_names(&inner.settings.topic_prefix) {
            let deleted = inner
                .timed_raw(controller.delete_topic(name.as_str(), timeout_ms(&inner.settings)))
                .await?;
            match deleted {
                Ok(())
                | Err(ClientError::ServerError {
                    protocol_error: ProtocolError::UnknownTopicOrPartition,
                    ..
                }) => {}
                Err(e) => return Err(client_error(e)),
            }
        }
        inner.handles.lock().clear();
        Ok(())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.inner.close();
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), MqError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
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
                Some(((name, partition), records)) => {
                    inner.produce(&name, partition, records).await
                }
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
            let done = done.unwrap_or_else(|e| {
                Err(MqError::Backend(Box::new(KafkaError::Task(e.to_string()))))
            });
            if let (Ok(()), Err(e)) = (&result, done) {
                result = Err(e);
            }
        }
        result
    }

    async fn subscribe(&self, topic: Topic, group: &str) -> Result<Box<dyn Subscription>, MqError> {
        let inner = &self.inner;
        let group = {
            let mut groups = inner.groups.lock();
            if inner.closed.load(Ordering::SeqCst) {
                return Err(MqError::Closed);
            }
            match groups.get(&(topic, group.to_owned())) {
                Some(g) => Arc::clone(g),
                None => {
                    let name = inner.topic_name(topic);
                    let g = Arc::new(Group::new(
                        topic,
                        group,
                        &name,
                        inner.partition_count(&name),
                    ));
                    groups.insert((topic, group.to_owned()), Arc::clone(&g));
                    let mut tasks = inner.tasks.lock();
                    tasks.retain(|t| !t.is_finished());
                    for index in 0..g.parts.len() {
                        tasks.push(tokio::spawn(run_partition(
                            Arc::clone(inner),
                            Arc::clone(&g),
                            index,
                        )));
                    }
                    g
                }
            }
        };
        Ok(Box::new(KafkaSubscription {
            inner: Arc::clone(inner),
            group,
        }))
    }

    async fn pending(&self, topic: Topic, group: &str) -> Result<Option<u64>, MqError> {
        let inner = &self.inner;
        let name = inner.topic_name(topic);
        let mut total = 0u64;
        for partition in 0..inner.partition_count(&name) {
            let handle = inner.handle(&name, partition).await?;
            let key = PartitionKey {
                group: group.to_owned(),
                topic: name.clone(),
                partition,
            };
            let position = match inner.offsets.position(&key).await? {
                Some(position) => position,
                None => {
                    inner
                        .timed(handle.client.get_offset(OffsetAt::Earliest))
                        .await?
                }
            };
            // The high watermark comes with a fetch: ListOffsets(Latest) is wrong on some
            // brokers (tansu answers the last batch's base offset + 1). At most one batch comes
            // back with it, and tansu answers no partition at all to a fetch waiting 0 ms.
            let (_, high_watermark) = inner
                .timed(handle.client.fetch_records(position, 1..2, 1))
                .await?;
            total += u64::try_from(high_watermark - position).unwrap_or(0);
        }
        Ok(Some(total))
    }
}

impl Inner {
    fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.settings.topic_prefix, topic.name())
    }

    fn dlq_name(&self, topic: Topic) -> String {
        format!("{}.dlq", self.topic_name(topic))
    }

    fn partition_count(&self, name: &str) -> i32 {
        self.partitions
            .get(name)
            .copied()
            .unwrap_or(self.settings.partitions.max(1))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        let groups: Vec<Arc<Group>> = self.groups.lock().values().cloned().collect();
        for group in groups {
            group.close();
        }
    }

    /// Runs a request against the request timeout.
    async fn timed_raw<T>(&self, fut: impl Future<Output = T>) -> Result<T, MqError> {
        with_timeout(self.settings.request_timeout, fut).await
    }

    /// Runs a client request against the request timeout, mapping its error.
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, MqError> {
        self.timed_raw(fut).await?.map_err(client_error)
    }

    /// The cached client and producer of one partition (boxed, as [`Inner::produce`]).
    fn handle<'a>(
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
    fn produce<'a>(
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

    /// A partition client on a connection of its own, for one fetch task: on a Kafka connection
    /// a long-polling fetch holds up the requests queued behind it.
    async fn fetch_client(&self, key: &PartitionKey) -> Result<PartitionClient, MqError> {
        let client = build_client(&self.settings, &self.owner).await?;
        self.timed(client.partition_client(
            key.topic.as_str(),
            key.partition,
            UnknownTopicHandling::Retry,
        ))
        .await
    }

    fn lease_renewal(&self) -> Duration {
        (self.settings.lease_ttl / 3).max(Duration::from_millis(1))
    }
}

fn topic_names(prefix: &str) -> Vec<String> {
    Topic::ALL
        .iter()
        .flat_map(|t| {
            let name = format!("{prefix}{}", t.name());
            let dlq = format!("{name}.dlq");
            [name, dlq]
        })
        .collect()
}

async fn build_client(settings: &KafkaSettings, owner: &str) -> Result<Client, MqError> {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: Some(settings.request_timeout),
    };
    let build = ClientBuilder::new(settings.brokers.clone())
        .client_id(owner)
        .backoff_config(backoff)
        .build();
    with_timeout(settings.request_timeout, build)
        .await?
        .map_err(client_error)
}

fn timeout_ms(settings: &KafkaSettings) -> i32 {
    i32::try_from(settings.request_timeout.as_millis()).unwrap_or(i32::MAX)
}

async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, MqError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| MqError::Timeout)
}

fn client_error(e: ClientError) -> MqError {
    match e {
        ClientError::Timeout | ClientError::RetryFailed(_) => MqError::Timeout,
        e => MqError::Backend(Box::new(e)),
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

fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
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

/// One (topic, group) consumed by this instance: its partitions and the queue its
/// subscriptions share.
struct Group {
    topic: Topic,
    queue: Mutex<VecDeque<Ready>>,
    /// Records were queued, or the group closed.
    notify: Notify,
    closed: AtomicBool,
    parts: Vec<Part>,
}

/// A fetched record waiting for a consumer.
struct Ready {
    part: usize,
    generation: u64,
    offset: i64,
    envelope: Envelope,
    redelivered: bool,
}

/// One partition of a [`Group`].
struct Part {
    key: PartitionKey,
    state: Mutex<PartState>,
    /// Buffer space was freed, or consumption of the partition ended.
    wake: Notify,
    /// Serialises commits, so they go out in order and coalesce.
    commit_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct PartState {
    /// Bumped whenever consumption starts or ends: deliveries of another generation are stale.
    generation: u64,
    /// This instance holds the lease and consumes.
    owned: bool,
    /// The next offset to fetch.
    next_fetch: i64,
    /// The committed next offset, as far as this instance knows.
    committed: i64,
    /// Fetched offsets not acknowledged yet, with their failed handlings.
    outstanding: BTreeMap<i64, u32>,
    /// Records of this partition in the group's queue.
    buffered: usize,
}

impl PartState {
    /// The lowest offset not acknowledged yet.
    fn commit_target(&self) -> i64 {
        self.outstanding
            .first_key_value()
            .map_or(self.next_fetch, |(offset, _)| *offset)
    }
}

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
    fn new(topic: Topic, group: &str, name: &str, partitions: i32) -> Self {
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

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for index in 0..self.parts.len() {
            self.end(index, None);
        }
        self.queue.lock().clear();
        self.notify.notify_waiters();
    }

    fn is_current(&self, index: usize, generation: u64) -> bool {
        self.parts[index].state.lock().generation == generation
    }

    /// Starts consuming a partition at `offset`; returns the new generation.
    fn start(&self, index: usize, offset: i64) -> u64 {
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
    fn end(&self, index: usize, generation: Option<u64>) {
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
    fn push_fetched(
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
    fn take(&self, ready: &Ready) -> bool {
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
    fn requeue(&self, index: usize, generation: u64, offset: i64, envelope: Envelope) -> bool {
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

/// Resolves to `None` once the broker stops, else to the output of `fut`.
async fn unless_stopped<F: Future>(stop: &mut watch::Receiver<bool>, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => None,
        out = fut => Some(out),
    }
}

/// The fetch task of one partition of a group: leases, fetches, renews, hands over.
async fn run_partition(inner: Arc<Inner>, group: Arc<Group>, index: usize) {
    let mut stop = inner.stop.subscribe();
    let settings = &inner.settings;
    let key = group.parts[index].key.clone();
    let client = loop {
        match unless_stopped(&mut stop, inner.fetch_client(&key)).await {
            None => return,
            Some(Ok(client)) => break client,
            Some(Err(e)) => {
                tracing::warn!(partition = ?key, error = %e, "kafka fetch connection failed");
                if unless_stopped(&mut stop, tokio::time::sleep(settings.lease_retry))
                    .await
                    .is_none()
                {
                    return;
                }
            }
        }
    };
    let mut leased = false;
    'lease: loop {
        let lease = inner.offsets.lease(&key, &inner.owner, settings.lease_ttl);
        let position = match unless_stopped(&mut stop, lease).await {
            None => break 'lease,
            Some(Ok(Some(position))) => position,
            outcome => {
                if let Some(Err(e)) = outcome {
                    tracing::warn!(partition = ?key, error = %e, "taking the partition lease failed");
                }
                let retry = tokio::time::sleep(settings.lease_retry);
                if unless_stopped(&mut stop, retry).await.is_none() {
                    break 'lease;
                }
                continue 'lease;
            }
        };
        leased = true;
        let mut renewed = Instant::now();
        let start = match position {
            Some(position) => position,
            None => {
                let earliest = inner.timed(client.get_offset(OffsetAt::Earliest));
                match unless_stopped(&mut stop, earliest).await {
                    None => break 'lease,
                    Some(Ok(offset)) => offset,
                    Some(Err(e)) => {
                        tracing::warn!(partition = ?key, error = %e, "reading the earliest offset failed");
                        let retry = tokio::time::sleep(settings.lease_retry);
                        if unless_stopped(&mut stop, retry).await.is_none() {
                            break 'lease;
                        }
                        continue 'lease;
                    }
                }
            }
        };
        let generation = group.start(index, start);
        tracing::debug!(partition = ?key, start, "consuming partition");
        let mut renew_at = renewed + inner.lease_renewal();
        let mut backoff = Duration::from_millis(100);
        loop {
            if !group.is_current(index, generation) {
                // A commit found the lease taken.
                continue 'lease;
            }
            if Instant::now() >= renew_at {
                let lease = inner.offsets.lease(&key, &inner.owner, settings.lease_ttl);
                match unless_stopped(&mut stop, lease).await {
                    None => break 'lease,
                    Some(Ok(Some(_))) => {
                        renewed = Instant::now();
                        renew_at = renewed + inner.lease_renewal();
                    }
                    Some(Ok(None)) => {
                        tracing::warn!(partition = ?key, "partition lease lost: consumption stops");
                        group.end(index, Some(generation));
                        continue 'lease;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(partition = ?key, error = %e, "renewing the partition lease failed");
                        if renewed.elapsed() >= settings.lease_ttl {
                            group.end(index, Some(generation));
                            continue 'lease;
                        }
                        renew_at = Instant::now() + inner.lease_renewal() / 4;
                    }
                }
            }
            let (buffered, next_fetch) = {
                let st = group.parts[index].state.lock();
                (st.buffered, st.next_fetch)
            };
            if buffered >= settings.max_buffered {
                // Backpressure: wait for the consumers (or the lease renewal).
                let space = tokio::time::timeout_at(renew_at, group.parts[index].wake.notified());
                if unless_stopped(&mut stop, space).await.is_none() {
                    break 'lease;
                }
                continue;
            }
            // Long polls stay short of the lease renewal; tansu answers a fetch waiting 0 ms
            // without the partition, so wait at least 1 ms.
            let wait = settings.fetch_max_wait.min(inner.lease_renewal() / 2);
            let max_wait = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
            // Bounded by the renewal interval too, not only the request timeout: a fetch stuck
            // on an unreachable broker must not outlive the lease while this task still
            // believes it holds the partition.
            let fetch_limit = settings
                .request_timeout
                .min(inner.lease_renewal().max(wait * 2));
            let fetch = async {
                with_timeout(
                    fetch_limit,
                    client.fetch_records(next_fetch, 1..settings.fetch_max_bytes.max(2), max_wait),
                )
                .await?
                .map_err(client_error)
            };
            let fetched = match unless_stopped(&mut stop, fetch).await {
                None => break 'lease,
                Some(fetched) => fetched,
            };
            let failure = match fetched {
                Ok((records, _high_watermark)) => {
                    accept(&inner, &group, index, generation, next_fetch, records)
                        .await
                        .err()
                }
                Err(MqError::Backend(e))
                    if matches!(
                        e.downcast_ref::<ClientError>(),
                        Some(ClientError::ServerError {
                            protocol_error: ProtocolError::OffsetOutOfRange,
                            ..
                        })
                    ) =>
                {
                    // Retention removed records before anyone consumed them.
                    let earliest = inner.timed(client.get_offset(OffsetAt::Earliest));
                    match unless_stopped(&mut stop, earliest).await {
                        None => break 'lease,
                        Some(Ok(earliest)) if next_fetch < earliest => {
                            tracing::warn!(partition = ?key, next_fetch, earliest, "offset out of range: skipping to the earliest");
                            let mut st = group.parts[index].state.lock();
                            if st.generation == generation && st.next_fetch < earliest {
                                st.next_fetch = earliest;
                                st.outstanding.retain(|o, _| *o >= earliest);
                            }
                            None
                        }
                        // Beyond the end of the log (the topic was recreated?): keep failing
                        // loudly rather than skip or repeat messages.
                        Some(Ok(_)) => Some(MqError::Backend(e)),
                        Some(Err(e)) => Some(e),
                    }
                }
                Err(e) => Some(e),
            };
            match failure {
                None => backoff = Duration::from_millis(100),
                Some(e) => {
                    tracing::warn!(partition = ?key, error = %e, "kafka fetch failed");
                    let wait = tokio::time::sleep(backoff.min(inner.lease_renewal()));
                    if unless_stopped(&mut stop, wait).await.is_none() {
                        break 'lease;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    // Stopped: drop what is buffered and hand the lease over.
    group.end(index, None);
    if leased {
        let release = inner.offsets.release(&key, &inner.owner);
        match with_timeout(settings.request_timeout, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(partition = ?key, error = %e, "releasing the lease failed")
            }
            Err(e) => tracing::warn!(partition = ?key, error = %e, "releasing the lease failed"),
        }
    }
}

/// Queues fetched records; records that are no envelope go to the dead-letter topic.
async fn accept(
    inner: &Inner,
    group: &Group,
    index: usize,
    generation: u64,
    from: i64,
    records: Vec<RecordAndOffset>,
) -> Result<(), MqError> {
    let mut next_fetch = from;
    let mut ready = Vec::with_capacity(records.len());
    for r in records {
        if r.offset < from {
            continue;
        }
        next_fetch = next_fetch.max(r.offset + 1);
        match r.record.value.as_deref().map(Envelope::from_json) {
            Some(Ok(envelope)) => ready.push((r.offset, envelope)),
            _ => {
                tracing::error!(partition = ?group.parts[index].key, offset = r.offset, "not an envelope: dead-lettered");
                let key = &group.parts[index].key;
                let mut record = r.record;
                record
                    .headers
                    .extend(dlq_headers(key, r.offset, 0, "undecodable"));
                let dlq = inner.dlq_name(group.topic);
                let partition = key.partition.min(inner.partition_count(&dlq) - 1);
                inner.produce(&dlq, partition, vec![record]).await?;
            }
        }
    }
    group.push_fetched(index, generation, ready, next_fetch);
    Ok(())
}

fn dlq_headers(
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

struct KafkaSubscription {
    inner: Arc<Inner>,
    group: Arc<Group>,
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

#[cfg(test)]
mod tests {
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
