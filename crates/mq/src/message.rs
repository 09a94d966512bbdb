//! The message envelope and the three message types of the order pipeline.

use serde::{Deserialize, Serialize};

/// Where a message is published. One queue (RabbitMQ) or topic (Kafka) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Sales to turn into orders.
    OrderCreated,
    /// Stock changes, for caches and dashboards.
    StockChanged,
    /// Purchase results, for user notification.
    PurchaseResult,
    /// Accepted asynchronous purchases, waiting for a worker.
    PurchaseRequested,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 4] = [
        Topic::OrderCreated,
        Topic::StockChanged,
        Topic::PurchaseResult,
        Topic::PurchaseRequested,
    ];

    /// The broker-side name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderCreated => "seckill.order.created",
            Self::StockChanged => "seckill.stock.changed",
            Self::PurchaseResult => "seckill.purchase.result",
            Self::PurchaseRequested => "seckill.purchase.requested",
        }
    }
}

/// A sale to be stored as an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order id (`"{product_id}-{seq}"`).
    pub order_id: String,
    /// The product sold.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items sold.
    pub quantity: u32,
    /// Unit price in cents.
    pub price_cents: u64,
    /// When it sold, milliseconds since the Unix epoch.
    pub sold_at_ms: i64,
    /// The activity epoch it sold in.
    pub epoch: u64,
}

/// Why a product's stock changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockChangeReason {
    /// An order was stored.
    Sold,
    /// An order was cancelled and its items returned.
    Cancelled,
}

/// A product's stock changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    /// The product.
    pub product_id: u64,
    /// Items taken (negative) or returned (positive).
    pub delta: i64,
    /// Why.
    pub reason: StockChangeReason,
    /// The order that caused it.
    pub order_id: String,
}

/// The result of a purchase, for the buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseResult {
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// The order, when the purchase succeeded.
    pub order_id: Option<String>,
    /// `"success"` or the rejection's name.
    pub status: String,
}

/// An accepted asynchronous purchase, to be run by a worker of any instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRequested {
    /// The id the client polls the result with; also the purchase's idempotency key, so a
    /// redelivered request is executed at most once.
    pub request_id: String,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: u64,
    /// Items wanted.
    pub quantity: u32,
}

/// A message of one of the pipeline's types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Message {
    /// See [`OrderCreated`].
    OrderCreated(OrderCreated),
    /// See [`StockChanged`].
    StockChanged(StockChanged),
    /// See [`PurchaseResult`].
    PurchaseResult(PurchaseResult),
    /// See [`PurchaseRequested`].
    PurchaseRequested(PurchaseRequested),
}

impl Message {
    /// The topic this message type is published to.
    pub fn topic(&self) -> Topic {
        match self {
            Self::OrderCreated(_) => Topic::OrderCreated,
            Self::StockChanged(_) => Topic::StockChanged,
            Self::PurchaseResult(_) => Topic::PurchaseResult,
            Self::PurchaseRequested(_) => Topic::PurchaseRequested,
        }
    }

    /// The partition key: the product id, so one product's messages stay in order.
    pub fn key(&self) -> u64 {
        match self {
            Self::OrderCreated(m) => m.product_id,
            Self::StockChanged(m) => m.product_id,
            Self::PurchaseResult(m) => m.product_id,
            Self::PurchaseRequested(m) => m.product_id,
        }
    }
}

/// A message with its id and timestamp: what travels through the broker.
///
/// On the wire (JSON): `{"id": "...", "timestamp_ms": 0, "type": "order_created", "payload": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message and stable across redeliveries: consumers de-duplicate on it.
    pub id: String,
    /// When the message was made, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Type and payload.
    #[serde(flatten)]
    pub message: Message,
}

impl Envelope {
    /// Wraps a message, stamped with the current time.
    pub fn new(id: impl Into<String>, message: Message) -> Self {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            id: id.into(),
            timestamp_ms,
            message,
        }
    }

    /// The topic of its message.
    pub fn topic(&self) -> Topic {
        self.message.topic()
    }

    /// JSON bytes.
    ///
    /// # Errors
    /// Never for these types in practice; serialization errors are reported as [`crate::MqError::Codec`].
    pub fn to_json(&self) -> Result<Vec<u8>, crate::MqError> {
        serde_json::to_vec(self).map_err(crate::MqError::Codec)
    }

    /// Parses JSON bytes.
    ///
    /// # Errors
    /// [`crate::MqError::Codec`] when the bytes are not an envelope.
    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::MqError> {
        serde_json::from_slice(bytes).map_err(crate::MqError::Codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json_with_flat_type_and_payload() {
        let env = Envelope::new(
            "oc-1001-1",
            Message::OrderCreated(OrderCreated {
                order_id: "1001-1".into(),
                product_id: 1001,
                user_id: 2001,
                quantity: 1,
                price_cents: 899_900,
                sold_at_ms: 1,
                epoch: 1,
            }),
        );
        let json: serde_json::Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
        assert_eq!(json["type"], "order_created");
        assert_eq!(json["payload"]["order_id"], "1001-1");
        assert_eq!(json["id"], "oc-1001-1");
        let back = Envelope::from_json(&env.to_json().unwrap()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.topic(), Topic::OrderCreated);
        assert_eq!(back.message.key(), 1001);
    }

    #[test]
    fn garbage_is_a_codec_error() {
        assert!(matches!(
            Envelope::from_json(b"{\"id\":1}"),
            Err(crate::MqError::Codec(_))
        ));
    }
}
