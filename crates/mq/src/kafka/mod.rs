//! [`KafkaBroker`]: the Kafka backend, through [rskafka](https://docs.rs/rskafka).

mod fetch;
mod lease;
mod produce;
mod settings;
mod settle;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

use crate::{Broker, Envelope, MqError, OffsetStore, PartitionKey, Subscription, Topic};

use self::fetch::PartitionTask;
use self::lease::Group;
use self::produce::PartitionHandle;
pub use self::settings::KafkaSettings;
use self::settle::{HEADER_GROUP, KafkaSubscription};

/// The Kafka [`Broker`], through [rskafka](https://docs.rs/rskafka).
///
/// rskafka speaks the plain Kafka protocol without consumer groups, so this broker builds the
/// group semantics of the [`Broker`] contract itself, on partitions and an [`OffsetStore`].
///
/// # Delivery design
///
/// - **Topics.** Each [`Topic`] is the Kafka topic `{topic_prefix}{Topic::name()}`, with a
///   dead-letter topic `{that name}.dlq`; [`KafkaBroker::connect`] creates the missing ones.
/// - **Publishing.** A message goes to the partition `murmur2(product id) mod partitions` (the
///   partitioner of the Java client), keyed by the product id and valued by
///   [`Envelope::to_json`], so one product's messages stay in one partition, in publishing order.
///   Concurrent publishers share one batch per partition for [`KafkaSettings::linger`];
///   [`Broker::publish_batch`] returns `Ok` once Kafka acknowledged every record (acks = all).
/// - **At-least-once consumption.** For each (topic, group) a broker instance runs one fetch
///   task per partition, shared by all its subscriptions of that group: they compete for the
///   records on one queue. A task consumes its partition only while this instance holds the
///   partition's lease in the [`OffsetStore`] (renewed every third of
///   [`KafkaSettings::lease_ttl`]), so several instances can consume one group: a partition
///   leased by another instance is tried again every [`KafkaSettings::lease_retry`], and taken
///   over once the lease of a dead instance expired. Consumption starts at the committed offset,
///   or at the earliest one for a group that never committed, so a new group also gets what was
///   published before it subscribed.
/// - **Offsets are durable in the [`OffsetStore`]** (PostgreSQL in production, in the order
///   service's database). Acknowledging a delivery commits the lowest offset not acknowledged
///   yet, before the ack returns; a commit refused because the lease moved on ends the
///   consumption of that partition and drops what it buffered. Whatever was not committed when
///   an instance dies is delivered again by the next owner; nothing is lost.
/// - **Redelivery and dead letters.** A delivery nacked with `requeue`, or dropped unsettled,
///   comes back (marked redelivered). After [`KafkaSettings::max_attempts`] such failed handlings,
///   or at once on `nack(false)`, it is published to the dead-letter topic (same partition, with
///   headers naming the group, source partition and offset, and the attempts) and counts as
///   acknowledged.
/// - **Effect exactly once.** Delivery is at least once: after a crash, a lease takeover or a
///   failed handling, a message may come again. The consumers' handlers are idempotent by message
///   id / order id, which makes the effect exactly once.
///
/// Memory stays bounded: a fetch returns at most [`KafkaSettings::fetch_max_bytes`], and a
/// partition stops fetching while [`KafkaSettings::max_buffered`] of its records wait for a
/// consumer.
///
/// # Closing
///
/// Call [`Broker::close`] before dropping it: that hands the partition leases over at once.
/// Dropping it without stops consuming at once too, but leaves the leases to expire, as a crash
/// would.
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

/// Failures this backend reports through [`MqError::Backend`].
#[derive(Debug, thiserror::Error)]
enum KafkaError {
    #[error("this instance lost the lease of {0:?}; the message will be delivered again")]
    LeaseLost(PartitionKey),
    #[error("task failed: {0}")]
    Task(String),
}

type HandleCell = Arc<OnceCell<Arc<PartitionHandle>>>;

/// The state shared by a [`KafkaBroker`], its fetch tasks, subscriptions and ackers.
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

impl KafkaBroker {
    /// Connects to `settings.brokers` and creates the missing topics (every [`Topic`] and its
    /// dead-letter topic, with `settings.partitions` partitions, replication 1). Consumer
    /// positions and partition leases live in `offsets`.
    ///
    /// # Errors
    /// [`MqError::InvalidConfig`] when [`KafkaSettings::validate`] refuses `settings`; the
    /// cluster could not be reached, or refused to create a topic.
    pub async fn connect(
        settings: KafkaSettings,
        offsets: Arc<dyn OffsetStore>,
    ) -> Result<Self, MqError> {
        settings.validate()?;
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

    /// Deletes the topics of this broker's prefix (main and dead-letter ones); topics that do not
    /// exist are fine. For test cleanup: call [`Broker::close`] first. Works on a closed broker.
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
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        produce::publish(&self.inner, envelopes).await
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
                        let task = PartitionTask::new(Arc::clone(inner), Arc::clone(&g), index);
                        tasks.push(tokio::spawn(task.run()));
                    }
                    g
                }
            }
        };
        Ok(Box::new(KafkaSubscription::new(Arc::clone(inner), group)))
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

    /// Stops consuming: subscriptions answer [`MqError::Closed`], fetching ends, what was
    /// fetched and not acknowledged is dropped (the next owner delivers it again) and the
    /// partition leases are released, so another instance takes over at once. Publishing and
    /// subscribing fail afterwards. Returns once every fetch task ended.
    async fn close(&self) {
        self.inner.close();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "kafka fetch task failed");
            }
        }
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

fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}
