//! The [`Broker`] and [`Subscription`] traits.

use async_trait::async_trait;

use crate::{Envelope, MqError, Topic};

/// Publishes envelopes and hands out subscriptions.
///
/// Implementers guarantee: `publish` returns `Ok` only once the broker has taken responsibility
/// for the message (a publisher confirm, a replicated write); `publish_batch` is `Ok` only when
/// every message of the batch is; a message is delivered to every subscribed group at least once.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes one envelope to its message's topic.
    ///
    /// # Errors
    /// The broker did not confirm the message.
    async fn publish(&self, envelope: &Envelope) -> Result<(), MqError> {
        self.publish_batch(std::slice::from_ref(envelope)).await
    }

    /// Publishes several envelopes, confirmed together.
    ///
    /// # Errors
    /// The broker did not confirm every message; any of them may have been delivered.
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), MqError>;

    /// Subscribes `group` to `topic`. Subscriptions of one group share the messages (competing
    /// consumers); each group gets every message.
    ///
    /// # Errors
    /// The broker could not set up the subscription.
    async fn subscribe(&self, topic: Topic, group: &str) -> Result<Box<dyn Subscription>, MqError>;

    /// Messages of `topic` waiting for or held by `group` and not acknowledged yet, where the
    /// backend can tell.
    ///
    /// # Errors
    /// The broker could not be asked.
    async fn pending(&self, topic: Topic, group: &str) -> Result<Option<u64>, MqError>;

    /// Closes the broker at shutdown: stops consuming and lets the connections (and the
    /// partition leases, on Kafka) go, so that what this process did not acknowledge is
    /// delivered again, to another instance. Call it on the `Arc<dyn Broker>` the components
    /// share.
    ///
    /// Implementers guarantee: `close` is idempotent (a later call changes nothing); once it
    /// returned, `publish`, `publish_batch` and `subscribe` fail with [`MqError::Closed`], and
    /// [`Subscription::next`] answers [`MqError::Closed`] (an in-process backend may first hand
    /// out what it still holds). Settling a delivery after `close` may fail with
    /// [`MqError::Closed`]; the message is delivered again then.
    async fn close(&self);
}

/// A stream of deliveries for one group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next delivery.
    ///
    /// # Errors
    /// [`MqError::Closed`] when the broker shut down; other failures of the backend.
    async fn next(&mut self) -> Result<Delivery, MqError>;
}

/// Settles one delivery with the broker.
#[async_trait]
pub trait Acker: Send + Sync {
    /// The message was handled: never deliver it again.
    async fn ack(&self) -> Result<(), MqError>;
    /// The message was not handled: deliver it again (`requeue`) or give it up (dead letter).
    async fn nack(&self, requeue: bool) -> Result<(), MqError>;
}

/// One message handed to a consumer. Dropping it unsettled makes the broker deliver it again.
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// True when the broker delivered it before.
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery settled through `acker`; for backend implementations.
    pub fn new(envelope: Envelope, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Self {
            envelope,
            redelivered,
            acker,
        }
    }

    /// Acknowledges the delivery.
    ///
    /// # Errors
    /// The broker could not be told; the message may be delivered again (handle it idempotently).
    pub async fn ack(self) -> Result<(), MqError> {
        self.acker.ack().await
    }

    /// Rejects the delivery, to be delivered again (`requeue`) or dead-lettered.
    ///
    /// # Errors
    /// The broker could not be told; the message may be delivered again (handle it idempotently).
    pub async fn nack(self, requeue: bool) -> Result<(), MqError> {
        self.acker.nack(requeue).await
    }
}
