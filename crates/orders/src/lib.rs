//! Orders of the seckill service.
//!
//! A sale becomes an order when the order consumer takes its `OrderCreated` message from the
//! broker and stores it. Delivery is at least once; the store's idempotent insert makes the
//! effect exactly once. An order then awaits payment until its deadline; pay and cancel are
//! atomic compare-and-set transitions, so an order paid and cancelled at the same instant ends
//! in one state only, and [`OrderStore::due`] lists what a sweeper must cancel or finish.
//!
//! # Layout
//! - `store`: [`Order`], the [`OrderStore`] trait and [`MemoryOrderStore`].
//! - `consumer`: [`OrderConsumer`], the order service's consumer loop.
//! - `config`: [`OrdersConfig`], the `orders` section (deserializable with feature `serde`).
//! - `postgres` (feature `postgres`): `PgOrderStore`, orders and consumer offsets in PostgreSQL.
//! - `error`: the error type [`OrderError`].
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use seckill_mq::{Broker, Envelope, MemoryBroker, Message, OrderCreated};
//! use seckill_orders::{MemoryOrderStore, OrderConsumer, OrderStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryOrderStore::new());
//! let consumer = OrderConsumer::new(store.clone(), Arc::new(MemoryBroker::new()));
//! let sale = Envelope::new("oc-1001-1", Message::OrderCreated(OrderCreated {
//!     order_id: "1001-1".into(), product_id: 1001, user_id: 2001, quantity: 1,
//!     price_cents: 899_900, sold_at_ms: 0, epoch: 1,
//! }));
//! consumer.handle(&sale).await?;
//! consumer.handle(&sale).await?; // a redelivery changes nothing
//! assert_eq!(store.counts(1001, 1).await?.orders, 1);
//! # Ok(())
//! # }
//! ```

mod config;
mod consumer;
mod error;
#[cfg(feature = "postgres")]
mod postgres;
mod store;

pub use config::{DEFAULT_PAYMENT_TIMEOUT, OrderStoreKind, OrdersConfig};
pub use consumer::{Backoff, MAX_BATCH, ORDER_SERVICE_GROUP, OrderConsumer, next_delivery, now_ms};
pub use error::OrderError;
#[cfg(feature = "postgres")]
pub use postgres::PgOrderStore;
pub use store::{MemoryOrderStore, Order, OrderCounts, OrderStatus, OrderStore, Transition};

/// Describes the metrics this crate records (help text and units) to the installed recorder;
/// call once after installing it.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "seckill_orders_stored_total",
        Unit::Count,
        "Orders stored by the order consumer (redeliveries not counted)."
    );
    describe_histogram!(
        "seckill_order_pipeline_lag_seconds",
        Unit::Seconds,
        "Time from a sale to its stored order."
    );
    describe_counter!(
        "seckill_order_dead_letters_total",
        Unit::Count,
        "Sales the order consumer dead-lettered because they can never be stored, by reason (invalid, rejected by the store, conflict with another sale's id)."
    );
    describe_counter!(
        "seckill_order_integrity_alarms_total",
        Unit::Count,
        "Sales that arrived under an order id stored for a different sale (dead-lettered, never acknowledged as duplicates)."
    );
    describe_counter!(
        "seckill_order_consumer_failures_total",
        Unit::Count,
        "Failed attempts of the order consumer (retried in place)."
    );
}
