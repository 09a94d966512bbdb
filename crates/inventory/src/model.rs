//! The values that cross the [`Inventory`](crate::Inventory) boundary.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::InventoryError;

/// Largest stock one activity may hold; keeps every count exact in Lua's doubles.
pub const MAX_STOCK: u64 = 1_000_000_000;
/// Largest per-user limit.
pub const MAX_PER_USER_LIMIT: u32 = 10_000;
/// Largest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Whether an activity is open for sale (inside its time window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityStatus {
    /// Sells between `start_time` and `end_time`.
    Active,
    /// Switched off by an operator: nothing sells.
    Inactive,
}

impl ActivityStatus {
    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// A flash-sale activity: one product, its stock and its selling window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Product id (> 0).
    pub product_id: u64,
    /// Display name.
    pub product_name: String,
    /// Unit price in cents.
    pub price_cents: u64,
    /// Items on sale.
    pub stock: u64,
    /// First instant at which purchases succeed.
    pub start_time: DateTime<Utc>,
    /// First instant at which purchases are refused as ended.
    pub end_time: DateTime<Utc>,
    /// Active or switched off.
    pub status: ActivityStatus,
    /// Most items one user may buy (in their single purchase).
    pub per_user_limit: u32,
}

impl Activity {
    /// Checks every field.
    ///
    /// # Errors
    /// [`InventoryError::InvalidActivity`] naming the first invalid field.
    pub fn validate(&self) -> Result<(), InventoryError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(InventoryError::InvalidActivity {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.product_id == 0 {
            return invalid("product_id", "must be a positive integer");
        }
        if self.product_name.trim().is_empty() {
            return invalid("product_name", "must not be empty");
        }
        if self.product_name.chars().count() > MAX_NAME_CHARS {
            return invalid("product_name", "must be at most 200 characters");
        }
        if self.stock > MAX_STOCK {
            return invalid("stock", "must be at most 1000000000");
        }
        if self.end_time <= self.start_time {
            return invalid("end_time", "must be after start_time");
        }
        if self.per_user_limit == 0 || self.per_user_limit > MAX_PER_USER_LIMIT {
            return invalid("per_user_limit", "must be between 1 and 10000");
        }
        Ok(())
    }

    /// `start_time` in milliseconds since the Unix epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_time.timestamp_millis()
    }

    /// `end_time` in milliseconds since the Unix epoch.
    pub fn end_ms(&self) -> i64 {
        self.end_time.timestamp_millis()
    }
}

/// One purchase attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseRequest {
    /// The product to buy.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items wanted, 1..=the activity's per-user limit.
    pub quantity: u32,
    /// A retry carrying the same key gets the first answer and never buys twice.
    pub idempotency_key: Option<String>,
}

/// Identifies one sale; its text form is `"{product_id}-{seq}"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId {
    /// The product sold.
    pub product_id: u64,
    /// Sequence number, unique per product across every activity epoch.
    pub seq: u64,
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.product_id, self.seq)
    }
}

impl FromStr for OrderId {
    type Err = InventoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InventoryError::InvalidOrderId(s.chars().take(64).collect());
        let (p, q) = s.split_once('-').ok_or_else(bad)?;
        let product_id = p.parse().map_err(|_| bad())?;
        let seq = q.parse().map_err(|_| bad())?;
        if product_id == 0 || seq == 0 {
            return Err(bad());
        }
        Ok(Self { product_id, seq })
    }
}

impl Serialize for OrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The answer to a purchase. Every variant but `Success` is a business rejection, not a failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PurchaseOutcome {
    /// Sold: the order follows through the outbox.
    Success {
        /// The new order.
        order_id: OrderId,
        /// Stock left after this sale.
        remaining_stock: u64,
    },
    /// Fewer items left than asked for.
    SoldOut {
        /// Stock left (smaller than the quantity asked).
        remaining_stock: u64,
    },
    /// This user already bought this product.
    AlreadyBought,
    /// The sale has not started yet.
    NotStarted,
    /// The sale is over.
    Ended,
    /// The activity is switched off.
    Inactive,
    /// No activity for this product.
    UnknownProduct,
    /// Quantity outside 1..=`max`.
    InvalidQuantity {
        /// The activity's per-user limit.
        max: u32,
    },
    /// The idempotency key was first used for a different request (another quantity): nothing
    /// was sold, and the first sale stands.
    KeyReused,
}

impl PurchaseOutcome {
    /// True for `Success`.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success { .. })
    }

    /// A short stable name, used for metrics and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Success { .. } => "success",
            Self::SoldOut { .. } => "sold_out",
            Self::AlreadyBought => "already_bought",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::Inactive => "inactive",
            Self::UnknownProduct => "unknown_product",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::KeyReused => "key_reused",
        }
    }
}

/// What a prewarm did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrewarmOutcome {
    /// A new activity was loaded.
    Created {
        /// Its epoch.
        epoch: u64,
    },
    /// The same activity was already loaded; nothing changed.
    Unchanged {
        /// The current epoch.
        epoch: u64,
    },
    /// A different activity replaced the loaded one; its stock and buyers start afresh.
    Replaced {
        /// The new epoch.
        epoch: u64,
    },
    /// Refused: the loaded activity's sale has started and `force` was not given.
    SaleStarted,
    /// The activity was loaded as the order store records its sale
    /// ([`Inventory::restore`](crate::Inventory::restore)).
    Restored {
        /// The recorded epoch.
        epoch: u64,
        /// Live orders carried over (their buyers stay buyers, their items stay sold).
        orders: u64,
        /// Stock left after them.
        remaining_stock: u64,
    },
}

/// A sale as the order store records it, to load again into an inventory that forgot it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedSale {
    /// The epoch the orders sold in; the restored activity carries it.
    pub epoch: u64,
    /// The live (not cancelled) orders of that epoch.
    pub orders: Vec<RecordedOrder>,
}

/// One live order of a [`RecordedSale`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedOrder {
    /// Its id.
    pub order_id: OrderId,
    /// Its buyer.
    pub user_id: u64,
    /// Items it holds.
    pub quantity: u32,
}

/// Order sequence numbers of a product's counter start at a nonce times this: a counter that
/// starts afresh (a backend that forgot its state) gets a new nonce, so its ids never repeat
/// the earlier ones. Nonces stay below 9·10⁶, so every number stays below 2⁵³ (exact in Lua).
pub const SEQUENCE_NONCE_STEP: u64 = 1_000_000_000;

/// A start for a new order sequence: a random nonce (1,000,000..5,000,000) times
/// [`SEQUENCE_NONCE_STEP`] — and, when `after` (the largest sequence number known elsewhere) is
/// given, a nonce past its own, so no number of its sequence (a cancelled order's included) can
/// come again.
pub fn sequence_base(after: u64) -> u64 {
    let random = 1_000_000 + rand::random::<u64>() % 4_000_000;
    let nonce = if after == 0 {
        random
    } else {
        random.max(after / SEQUENCE_NONCE_STEP + 1)
    };
    nonce * SEQUENCE_NONCE_STEP
}

/// A sale handed from the inventory to the order pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecord {
    /// The order.
    pub order_id: OrderId,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items sold.
    pub quantity: u32,
    /// Unit price in cents at the time of sale.
    pub price_cents: u64,
    /// When it sold, milliseconds since the Unix epoch (the inventory's clock).
    pub sold_at_ms: i64,
    /// The activity epoch it sold in.
    pub epoch: u64,
}

/// An outbox entry: a sale not yet acknowledged by the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Opaque id to acknowledge it with.
    pub id: String,
    /// The sale.
    pub record: SaleRecord,
}

/// Counters of one product's sale. `initial_stock = remaining_stock + sold`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryStats {
    /// The product.
    pub product_id: u64,
    /// Current activity epoch.
    pub epoch: u64,
    /// Stock loaded by the prewarm.
    pub initial_stock: u64,
    /// Stock left (cancelled orders' items are back here).
    pub remaining_stock: u64,
    /// Items sold and not cancelled.
    pub sold: u64,
    /// Current buyers.
    pub buyers: u64,
    /// Orders cancelled so far in this epoch.
    pub cancelled: u64,
    /// Sales in the outbox not yet acknowledged by the relay (in transit).
    pub outbox_pending: u64,
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The order's items are back in stock and its buyer may buy again.
    Cancelled {
        /// Items returned.
        quantity: u32,
        /// Stock after the return.
        remaining_stock: u64,
    },
    /// Already cancelled before: nothing changed.
    AlreadyCancelled,
    /// No such order in the current activity epoch (unknown, or sold before a forced re-prewarm).
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_round_trip_and_reject_garbage() {
        let id: OrderId = "1001-42".parse().unwrap();
        assert_eq!(
            id,
            OrderId {
                product_id: 1001,
                seq: 42
            }
        );
        assert_eq!(id.to_string(), "1001-42");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"1001-42\"");
        for bad in [
            "", "1001", "-1", "1001-", "0-1", "1001-0", "a-1", "1-2-3", "1001-42 ",
        ] {
            assert!(bad.parse::<OrderId>().is_err(), "{bad:?} parsed");
        }
    }
}
