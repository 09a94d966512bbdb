//! [`RabbitBroker`]: the RabbitMQ backend, on `lapin`.

mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;

use crate::{Acker, Broker, Delivery, Envelope, MqError, Subscription, Topic};

pub use self::settings::RabbitSettings;

/// The header counting failed handlings of a message.
const ATTEMPTS_HEADER: &str = "x-seckill-attempts";

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> MqError {
    MqError::Backend(Box::new(e))
}

fn short(s: &str) -> ShortString {
    s.into()
}

/// The RabbitMQ [`Broker`] (`mq.backend = rabbitmq`), on `lapin`. Cheap to clone; clones share
/// the connection.
///
/// # Topology
/// One durable direct exchange `{prefix}`; each message type is routed by its topic name
/// (`seckill.order.created`, …). Each consumer group has a durable queue
/// `{prefix}.{topic}.{group}` bound to it, so every group gets every message and the members
/// of a group compete. Each queue dead-letters to the durable exchange `{prefix}.dlx`, into
/// `{queue}.dlq`.
///
/// Queues are created when a group subscribes, and at [`RabbitBroker::connect`] for the
/// groups named in [`RabbitSettings::groups`], so a message published before its consumers
/// first start (the relay can run before the order service) waits in its queue. Messages of a
/// topic that no group has ever subscribed to are not kept (notifications nobody listens to).
///
/// # Guarantees
/// - Messages are persistent and published with publisher confirms: `publish_batch` publishes
///   the whole batch, then waits for every confirm, and fails if any is missing or negative.
/// - Consumers take at most [`RabbitSettings::prefetch`] unacknowledged messages, and
///   acknowledge manually after handling. A delivery dropped unsettled (a crashed handler) is
///   requeued; `nack(requeue = true)` re-publishes it with an attempt counter, and after
///   [`RabbitSettings::max_attempts`] attempts it is rejected into the dead-letter queue.
/// - A broken connection is replaced on the next call; subscriptions reconnect by themselves
///   with exponential backoff (100 ms doubling to 5 s). Unacknowledged messages of a lost
///   connection are redelivered by RabbitMQ.
#[derive(Clone)]
pub struct RabbitBroker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RabbitSettings,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Queues this broker declared (for `pending` and `delete_topology`).
    queues: Mutex<HashSet<String>>,
    /// Deliveries handed out and not settled yet, per queue.
    unacked: Mutex<HashMap<String, Arc<AtomicU64>>>,
    closed: AtomicBool,
    /// When the last connection attempt failed.
    last_failure: Mutex<Option<std::time::Instant>>,
}

struct Conn {
    connection: Connection,
    publish: Channel,
}

impl Conn {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publish.status().connected()
    }
}

impl std::fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBroker")
            .field("prefix", &self.inner.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl RabbitBroker {
    /// Connects, declares the exchanges and the queues of [`RabbitSettings::groups`].
    ///
    /// # Errors
    /// [`MqError::InvalidConfig`] when [`RabbitSettings::validate`] refuses `settings`;
    /// RabbitMQ is unreachable or refused the topology.
    pub async fn connect(settings: RabbitSettings) -> Result<Self, MqError> {
        settings.validate()?;
        let broker = Self {
            inner: Arc::new(Inner {
                settings,
                conn: tokio::sync::Mutex::new(None),
                queues: Mutex::new(HashSet::new()),
                unacked: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                last_failure: Mutex::new(None),
            }),
        };
        // Connecting declares the whole topology (and so does every reconnect).
        broker.conn().await?;
        Ok(broker)
    }

    /// The queue name of `group` on `topic`.
    pub fn queue_name(&self, topic: Topic, group: &str) -> String {
        format!("{}.{}.{group}", self.inner.settings.prefix, topic.name())
    }

    fn dlx(&self) -> String {
        format!("{}.dlx", self.inner.settings.prefix)
    }

    /// The current connection, connecting (once) when there is none or it broke.
    async fn conn(&self) -> Result<Arc<Conn>, MqError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(MqError::Closed);
        }
        let mut slot =
            tokio::time::timeout(self.inner.settings.confirm_timeout, self.inner.conn.lock())
                .await
                .map_err(|_| MqError::Timeout)?;
        if let Some(c) = slot.as_ref().filter(|c| c.usable()) {
            return Ok(c.clone());
        }
        // Callers queued behind a failed attempt fail at once instead of each trying again:
        // one attempt per second at most while RabbitMQ is away.
        if let Some(at) = *self.inner.last_failure.lock() {
            if at.elapsed() < Duration::from_secs(1) {
                return Err(MqError::Backend(
                    "RabbitMQ unreachable; reconnecting".into(),
                ));
            }
        }
        if let Some(old) = slot.take() {
            // Closing a broken connection can wait on a peer that is gone: never under the lock.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    old.connection.close(0, short("reconnecting")),
                )
                .await;
            });
        }
        let s = &self.inner.settings;
        let (connection, publish) = self
            .bounded(async {
                let connection = Connection::connect(&s.url, ConnectionProperties::default())
                    .await
                    .map_err(backend)?;
                let publish = connection.create_channel().await.map_err(backend)?;
                publish
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(backend)?;
                for name in [s.prefix.clone(), self.dlx()] {
                    publish
                        .exchange_declare(
                            short(&name),
                            ExchangeKind::Direct,
                            ExchangeDeclareOptions {
                                durable: true,
                                ..ExchangeDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .map_err(backend)?;
                }
                Ok((connection, publish))
            })
            .await
            .inspect_err(|_| *self.inner.last_failure.lock() = Some(std::time::Instant::now()))?;
        *self.inner.last_failure.lock() = None;
        let conn = Arc::new(Conn {
            connection,
            publish,
        });
        // A new connection re-declares the whole topology: RabbitMQ may have lost it (a node
        // replaced, a queue deleted) while this broker was away.
        self.bounded(self.declare_groups(&conn))
            .await
            .inspect_err(|_| *self.inner.last_failure.lock() = Some(std::time::Instant::now()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Declares the queues of [`RabbitSettings::groups`]; idempotent.
    async fn declare_groups(&self, conn: &Conn) -> Result<(), MqError> {
        for (topic, group) in &self.inner.settings.groups {
            self.declare_queue(conn, *topic, group).await?;
        }
        Ok(())
    }

    /// Whether messages routed with `key` must reach a queue: the topics of the declared
    /// groups (the sales and what their consumers need), and direct publishes to a queue.
    fn mandatory(&self, exchange: &str, key: &str) -> bool {
        exchange.is_empty()
            || self
                .inner
                .settings
                .groups
                .iter()
                .any(|(t, _)| t.name() == key)
    }

    /// Runs a broker operation with the settings' timeout: a peer that stops answering fails
    /// the call instead of hanging it.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, MqError>>,
    ) -> Result<T, MqError> {
        tokio::time::timeout(self.inner.settings.confirm_timeout, op)
            .await
            .map_err(|_| MqError::Timeout)?
    }

    async fn invalidate(&self, broken: &Arc<Conn>) {
        let Ok(mut slot) =
            tokio::time::timeout(self.inner.settings.confirm_timeout, self.inner.conn.lock()).await
        else {
            return; // someone else holds it, replacing the connection anyway
        };
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            *slot = None;
        }
    }

    /// Declares `group`'s queue on `topic` with its dead-letter queue; idempotent.
    async fn declare_queue(
        &self,
        conn: &Conn,
        topic: Topic,
        group: &str,
    ) -> Result<String, MqError> {
        let queue = self.queue_name(topic, group);
        let dlq = format!("{queue}.dlq");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let ch = &conn.publish;
        ch.queue_declare(short(&dlq), durable, FieldTable::default())
            .await
            .map_err(backend)?;
        ch.queue_bind(
            short(&dlq),
            short(&self.dlx()),
            short(&queue),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
        let mut args = FieldTable::default();
        args.insert(
            short("x-dead-letter-exchange"),
            AMQPValue::LongString(self.dlx().into()),
        );
        args.insert(
            short("x-dead-letter-routing-key"),
            AMQPValue::LongString(queue.as_str().into()),
        );
        ch.queue_declare(short(&queue), durable, args)
            .await
            .map_err(backend)?;
        ch.queue_bind(
            short(&queue),
            short(&self.inner.settings.prefix),
            short(topic.name()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
        self.inner.queues.lock().insert(queue.clone());
        Ok(queue)
    }

    fn unacked(&self, queue: &str) -> Arc<AtomicU64> {
        self.inner
            .unacked
            .lock()
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Publishes `payloads` to `exchange` with `routing_key`s and waits for every confirm.
    async fn publish_raw(
        &self,
        messages: &[(String, String, Vec<u8>, BasicProperties)],
    ) -> Result<(), MqError> {
        let conn = self.conn().await?;
        let result = self
            .bounded(async {
                let mut confirms = Vec::with_capacity(messages.len());
                for (exchange, key, payload, props) in messages {
                    let options = BasicPublishOptions {
                        mandatory: self.mandatory(exchange, key),
                        ..BasicPublishOptions::default()
                    };
                    confirms.push((
                        key,
                        conn.publish
                            .basic_publish(
                                short(exchange),
                                short(key),
                                options,
                                payload,
                                props.clone(),
                            )
                            .await
                            .map_err(backend)?,
                    ));
                }
                let mut unroutable = None;
                for (key, c) in confirms {
                    let confirmation = c.await.map_err(backend)?;
                    if confirmation.is_nack() {
                        return Err(MqError::Nacked);
                    }
                    // Acknowledged but returned: no queue took it.
                    if confirmation.take_message().is_some() {
                        unroutable = Some(key.clone());
                    }
                }
                match unroutable {
                    Some(key) => Err(MqError::Unroutable(key)),
                    None => Ok(()),
                }
            })
            .await;
        match &result {
            Err(MqError::Backend(_) | MqError::Timeout) => self.invalidate(&conn).await,
            Err(MqError::Unroutable(key)) => {
                // Put the topology back so the caller's retry is delivered.
                tracing::warn!(routing_key = %key, "rabbitmq: a message was returned unroutable; re-declaring the queues");
                if let Err(e) = self.bounded(self.declare_groups(&conn)).await {
                    tracing::warn!(error = %e, "rabbitmq: re-declaring the queues failed");
                    self.invalidate(&conn).await;
                }
            }
            _ => {}
        }
        result
    }

    /// Messages in `group`'s dead-letter queue on `topic`.
    ///
    /// # Errors
    /// RabbitMQ could not be asked.
    pub async fn dead_letter_count(&self, topic: Topic, group: &str) -> Result<u64, MqError> {
        let dlq = format!("{}.dlq", self.queue_name(topic, group));
        self.message_count(&dlq).await
    }

    async fn message_count(&self, queue: &str) -> Result<u64, MqError> {
        let conn = self.conn().await?;
        let r = self
            .bounded(async {
                // A passive declare of a missing queue closes its channel: use a throwaway one.
                let ch = conn.connection.create_channel().await.map_err(backend)?;
                let r = ch
                    .queue_declare(
                        short(queue),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                tokio::spawn(async move {
                    let _ = ch.close(200, short("done")).await;
                });
                Ok(r)
            })
            .await;
        match r {
            Ok(Ok(q)) => Ok(u64::from(q.message_count())),
            Ok(Err(_)) if conn.usable() => Ok(0),
            Ok(Err(_)) => {
                self.invalidate(&conn).await;
                Err(MqError::Closed)
            }
            Err(e) => {
                self.invalidate(&conn).await;
                Err(e)
            }
        }
    }

    /// Deletes every queue and exchange this broker declared (tests use a prefix of their own).
    ///
    /// # Errors
    /// RabbitMQ could not be reached.
    pub async fn delete_topology(&self) -> Result<(), MqError> {
        let conn = self.conn().await?;
        let queues: Vec<String> = self.inner.queues.lock().iter().cloned().collect();
        for q in queues {
            for name in [format!("{q}.dlq"), q] {
                conn.publish
                    .queue_delete(short(&name), QueueDeleteOptions::default())
                    .await
                    .map_err(backend)?;
            }
        }
        for name in [self.inner.settings.prefix.clone(), self.dlx()] {
            conn.publish
                .exchange_delete(short(&name), ExchangeDeleteOptions::default())
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

fn properties(envelope_id: &str, attempts: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    if attempts > 0 {
        headers.insert(short(ATTEMPTS_HEADER), AMQPValue::LongUInt(attempts));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(short("application/json"))
        .with_message_id(short(envelope_id))
        .with_headers(headers)
}

fn attempts_of(props: &BasicProperties) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), MqError> {
        let exchange = &self.inner.settings.prefix;
        let messages = envelopes
            .iter()
            .map(|e| {
                Ok((
                    exchange.clone(),
                    e.topic().name().to_owned(),
                    e.to_json()?,
                    properties(&e.id, 0),
                ))
            })
            .collect::<Result<Vec<_>, MqError>>()?;
        self.publish_raw(&messages).await
    }

    async fn subscribe(&self, topic: Topic, group: &str) -> Result<Box<dyn Subscription>, MqError> {
        let mut sub = RabbitSubscription {
            broker: self.clone(),
            topic,
            group: group.to_owned(),
            queue: self.queue_name(topic, group),
            consumer: None,
            unacked: self.unacked(&self.queue_name(topic, group)),
            delay: Duration::ZERO,
        };
        sub.open().await?;
        Ok(Box::new(sub))
    }

    async fn pending(&self, topic: Topic, group: &str) -> Result<Option<u64>, MqError> {
        let queue = self.queue_name(topic, group);
        let ready = self.message_count(&queue).await?;
        Ok(Some(ready + self.unacked(&queue).load(Ordering::SeqCst)))
    }

    /// Closes the connection: subscriptions end with [`MqError::Closed`], and RabbitMQ
    /// redelivers what they had not acknowledged; publishing and subscribing fail afterwards.
    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let conn = self.inner.conn.lock().await.take();
        if let Some(c) = conn {
            let _ = tokio::time::timeout(
                self.inner.settings.confirm_timeout,
                c.connection.close(200, short("closing")),
            )
            .await;
        }
    }
}

struct RabbitSubscription {
    broker: RabbitBroker,
    topic: Topic,
    group: String,
    queue: String,
    consumer: Option<(lapin::Consumer, Channel)>,
    unacked: Arc<AtomicU64>,
    delay: Duration,
}

impl RabbitSubscription {
    async fn open(&mut self) -> Result<(), MqError> {
        let conn = self.broker.conn().await?;
        let broker = self.broker.clone();
        let r = broker
            .bounded(async {
                self.broker
                    .declare_queue(&conn, self.topic, &self.group)
                    .await?;
                let ch = conn.connection.create_channel().await.map_err(backend)?;
                ch.basic_qos(
                    self.broker.inner.settings.prefetch,
                    BasicQosOptions::default(),
                )
                .await
                .map_err(backend)?;
                let consumer = ch
                    .basic_consume(
                        short(&self.queue),
                        short(""),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(backend)?;
                Ok((consumer, ch))
            })
            .await;
        match r {
            Ok(c) => {
                self.consumer = Some(c);
                Ok(())
            }
            Err(e) => {
                self.broker.invalidate(&conn).await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Result<Delivery, MqError> {
        loop {
            if self.broker.inner.closed.load(Ordering::SeqCst) {
                return Err(MqError::Closed);
            }
            let Some((consumer, channel)) = self.consumer.as_mut() else {
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                if let Err(e) = self.open().await {
                    if matches!(e, MqError::Closed) {
                        return Err(e);
                    }
                    self.delay =
                        (self.delay * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    tracing::warn!(error = %e, queue = %self.queue, retry_in = ?self.delay, "rabbitmq: subscribing failed");
                }
                continue;
            };
            match consumer.next().await {
                Some(Ok(d)) => {
                    self.delay = Duration::ZERO;
                    let attempts = attempts_of(&d.properties);
                    let envelope = match Envelope::from_json(&d.data) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!(error = %e, queue = %self.queue, "rabbitmq: undecodable message dead-lettered");
                            let _ = self
                                .broker
                                .bounded(async {
                                    d.acker
                                        .reject(BasicRejectOptions { requeue: false })
                                        .await
                                        .map_err(backend)
                                })
                                .await;
                            continue;
                        }
                    };
                    self.unacked.fetch_add(1, Ordering::SeqCst);
                    let acker = RabbitAcker {
                        acker: Some(d.acker),
                        channel: channel.clone(),
                        queue: self.queue.clone(),
                        payload: d.data,
                        id: envelope.id.clone(),
                        attempts,
                        max_attempts: self.broker.inner.settings.max_attempts,
                        broker: self.broker.clone(),
                        unacked: self.unacked.clone(),
                        settled: AtomicBool::new(false),
                    };
                    return Ok(Delivery::new(
                        envelope,
                        d.redelivered || attempts > 0,
                        Box::new(acker),
                    ));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, queue = %self.queue, "rabbitmq: consumer failed; reconnecting");
                    self.consumer = None;
                }
                None => {
                    self.consumer = None;
                }
            }
        }
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Closing the channel hands its prefetched, unacknowledged messages back to the queue
        // now, instead of when the connection closes.
        if let (Some((_, channel)), Ok(rt)) =
            (self.consumer.take(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                let _ = channel.close(200, short("subscription dropped")).await;
            });
        }
    }
}

struct RabbitAcker {
    acker: Option<lapin::Acker>,
    channel: Channel,
    queue: String,
    payload: Vec<u8>,
    id: String,
    attempts: u32,
    max_attempts: u32,
    broker: RabbitBroker,
    unacked: Arc<AtomicU64>,
    settled: AtomicBool,
}

impl RabbitAcker {
    fn settle(&self) -> bool {
        if self.settled.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.unacked.fetch_sub(1, Ordering::SeqCst);
        true
    }

    fn acker(&self) -> &lapin::Acker {
        self.acker.as_ref().expect("present until drop")
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<(), MqError> {
        if self.settle() {
            self.broker
                .bounded(async {
                    sent(
                        self.acker()
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(backend)?,
                    )
                })
                .await?;
        }
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<(), MqError> {
        if !self.settle() {
            return Ok(());
        }
        let attempts = self.attempts + 1;
        if requeue && attempts < self.max_attempts {
            // Back to the queue's tail with the attempt counted, confirmed before the original
            // is acknowledged: a crash in between duplicates, never loses.
            let republished = self
                .broker
                .publish_raw(&[(
                    String::new(),
                    self.queue.clone(),
                    self.payload.clone(),
                    properties(&self.id, attempts),
                )])
                .await;
            let settle = async {
                if republished.is_ok() {
                    self.acker().ack(BasicAckOptions::default()).await
                } else {
                    self.acker()
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
                .map_err(backend)
                .and_then(sent)
            };
            return self.broker.bounded(settle).await;
        }
        if requeue {
            tracing::error!(id = %self.id, queue = %self.queue, attempts, "rabbitmq: message failed too often; dead-lettered");
        }
        self.broker
            .bounded(async {
                self.acker()
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(backend)
                    .and_then(sent)
            })
            .await
    }
}

/// lapin answers `false` when the delivery's channel is gone (it will be redelivered) or the
/// delivery was settled already: either way this settlement did not happen.
fn sent(done: bool) -> Result<(), MqError> {
    if done { Ok(()) } else { Err(MqError::Closed) }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        if !self.settle() {
            return;
        }
        // Dropped unsettled: hand it back now rather than when the channel closes.
        let (Some(acker), Ok(rt)) = (self.acker.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let _channel = self.channel.clone();
        rt.spawn(async move {
            let _ = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            drop(_channel);
        });
    }
}
