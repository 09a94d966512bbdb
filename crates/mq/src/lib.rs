//! A broker abstraction for the seckill order pipeline.
//!
//! Sales leave the inventory as [`Envelope`]s on four topics — order creation, stock
//! synchronisation, user notification and accepted asynchronous purchases — and are consumed
//! with explicit acknowledgement, so that a consumer that dies before it acknowledges gets the
//! message again. Backends sit behind the [`Broker`] trait: [`MemoryBroker`] is the in-process
//! one used in embedded mode and the behaviour reference; `RabbitBroker` (feature `rabbitmq`,
//! on lapin) and `KafkaBroker` (feature `kafka`, on rskafka) are the production ones. One
//! contract suite (`tests/contract.rs`) runs over all three.
//!
//! # Layout
//! Every public type is re-exported here, the one path to it; the modules are private.
//! - `message`: [`Envelope`], [`Message`] and the payload types, [`Topic`].
//! - `publisher`: the [`Broker`], [`Subscription`] and [`Acker`] traits, [`Delivery`].
//! - `memory`: the in-process [`MemoryBroker`].
//! - `offsets`: [`OffsetStore`] and [`Lease`], consumer positions and partition leases for
//!   brokers without consumer groups; the in-process [`MemoryOffsetStore`].
//! - `rabbitmq` (feature `rabbitmq`): the RabbitMQ backend `RabbitBroker` and its
//!   `RabbitSettings`: durable topology, publisher confirms, prefetch, manual ack, dead-letter
//!   queues, reconnect.
//! - `kafka` (feature `kafka`): the Kafka backend `KafkaBroker` and its `KafkaSettings`, on
//!   rskafka and an [`OffsetStore`]; in parts: publishing (per-partition batches), the
//!   partitions' lease bookkeeping, the fetch task of a partition, settling deliveries.
//! - `error`: the error type [`MqError`].
//!
//! Feature `serde` makes the settings structs deserializable from a configuration file, with
//! durations as humantime strings; each has a `validate` step.
//!
//! # Example
//! ```
//! use seckill_mq::{Broker, Envelope, MemoryBroker, Message, StockChangeReason, StockChanged, Topic};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seckill_mq::MqError> {
//! let broker = MemoryBroker::new();
//! let mut sub = broker.subscribe(Topic::StockChanged, "dashboard").await?;
//! let msg = Message::StockChanged(StockChanged {
//!     product_id: 1001,
//!     delta: -1,
//!     reason: StockChangeReason::Sold,
//!     order_id: "1001-1".into(),
//! });
//! broker.publish(&Envelope::new("sc-1001-1", msg.clone())).await?;
//! let delivery = sub.next().await?;
//! assert_eq!(delivery.envelope.message, msg);
//! delivery.ack().await?;
//! assert_eq!(broker.pending(Topic::StockChanged, "dashboard").await?, Some(0));
//! broker.close().await;
//! # Ok(())
//! # }
//! ```

mod error;
#[cfg(feature = "kafka")]
mod kafka;
mod memory;
mod message;
mod offsets;
mod publisher;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

pub use error::MqError;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBroker, KafkaSettings};
pub use memory::MemoryBroker;
pub use message::{
    Envelope, Message, OrderCreated, PurchaseRequested, PurchaseResult, StockChangeReason,
    StockChanged, Topic,
};
pub use offsets::{Lease, MemoryOffsetStore, OffsetStore, PartitionKey};
pub use publisher::{Acker, Broker, Delivery, Subscription};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitBroker, RabbitSettings};
