//! Atomic flash-sale stock.
//!
//! A flash sale puts a few hundred items in front of hundreds of thousands of buyers. This crate
//! sells exactly the stock — never one item more, never one buyer twice — and hands every sale to
//! an outbox in the same atomic step, so that no crash between the stock deduction and the order
//! can lose a sale. It knows nothing of HTTP or of message brokers.
//!
//! # Layout
//! One public path per type: everything is re-exported here. The source files:
//! - `store`: the [`Inventory`] trait and its contract.
//! - `memory`: [`MemoryInventory`], the in-process backend and behaviour reference.
//! - `model`: activities, purchase requests and outcomes, order ids, sale records, stats.
//! - `error`: [`InventoryError`], failures only (business rejections are values).
//! - `redis/` (feature `redis`): `RedisInventory`, one Lua script per operation, over `fred`;
//!   `RedisClient`, the connection pool; `RedisConfig`, the `redis:` configuration section.
//! - `lock` (feature `redis`): `RedisLock`, a distributed lock with fencing tokens.
//!
//! # Features
//! - `redis`: the Redis backend (`RedisInventory`, `RedisClient`, `RedisConfig`, `RedisLock`).
//! - `serde`: `Deserialize`/`Serialize` for `RedisConfig` (with `redis`), humantime durations.
//!
//! # Example
//! ```
//! use chrono::{Duration, Utc};
//! use seckill_inventory::{Activity, ActivityStatus, Inventory, MemoryInventory, PurchaseOutcome, PurchaseRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seckill_inventory::InventoryError> {
//! let inventory = MemoryInventory::new();
//! let now = Utc::now();
//! inventory
//!     .prewarm(
//!         &Activity {
//!             product_id: 1001,
//!             product_name: "iPhone 15 Pro".into(),
//!             price_cents: 899_900,
//!             stock: 1,
//!             start_time: now - Duration::minutes(1),
//!             end_time: now + Duration::hours(1),
//!             status: ActivityStatus::Active,
//!             per_user_limit: 1,
//!         },
//!         false,
//!     )
//!     .await?;
//! let buy = |user_id| PurchaseRequest { product_id: 1001, user_id, quantity: 1, idempotency_key: None };
//! let PurchaseOutcome::Success { order_id, .. } = inventory.purchase(&buy(2001)).await? else {
//!     panic!("sold")
//! };
//! // The buyer's purchase again (a resend, a retry) answers their order: never a second sale.
//! assert!(matches!(
//!     inventory.purchase(&buy(2001)).await?,
//!     PurchaseOutcome::Success { order_id: again, .. } if again == order_id
//! ));
//! assert_eq!(inventory.purchase(&buy(2002)).await?, PurchaseOutcome::SoldOut { remaining_stock: 0 });
//! // The sale waits in the outbox until the order pipeline acknowledges it.
//! assert_eq!(inventory.outbox_len().await?, 1);
//! # Ok(())
//! # }
//! ```

mod error;
#[cfg(feature = "redis")]
mod lock;
mod memory;
mod model;
#[cfg(feature = "redis")]
mod redis;
mod store;

pub use error::InventoryError;
#[cfg(feature = "redis")]
pub use lock::{LockGuard, RedisLock};
pub use memory::{DEFAULT_RECLAIM_AFTER, MemoryInventory};
pub use model::{
    Activity, ActivityStatus, CancelOutcome, InventoryStats, MAX_NAME_CHARS, MAX_PER_USER_LIMIT,
    MAX_STOCK, OrderId, OutboxEntry, PrewarmOutcome, PurchaseOutcome, PurchaseRequest,
    RecordedOrder, RecordedSale, SEQUENCE_NONCE_STEP, SaleRecord, sequence_base,
};
#[cfg(feature = "redis")]
pub use redis::{RELAY_GROUP, RedisClient, RedisConfig, RedisInventory};
pub use store::Inventory;
