//! The relay's side of the outboxes: reading sales with the consumer group, acknowledging them
//! with a range trim, and keeping the set of products with an outbox short.
//!
//! New sales are read with one blocking `XREADGROUP` over every product's stream, on a
//! connection of its own: Redis answers as soon as any product has a sale, so an idle relay
//! costs nothing and no product is polled. Entries another relay claimed and left
//! unacknowledged (it died) are taken over by an `XAUTOCLAIM` pass every half
//! `reclaim_after`, which is also when products whose activity expired and whose outbox is
//! empty leave the set. Each entry holds a batch of sales; acknowledged entries are trimmed by
//! range (`XTRIM MINID`, up to the oldest entry still pending), not deleted one by one.

use std::collections::HashMap;
use std::time::Duration;

use fred::interfaces::{ClientLike, KeysInterface, SetsInterface, StreamsInterface};
use fred::types::Value;
use tokio::time::Instant;

use super::client::backend;
use super::{Inner, RELAY_GROUP, functions};
use crate::{InventoryError, OrderId, OutboxEntry, SaleRecord};

impl Inner {
    /// Products with an outbox, refreshed at most every 500 ms.
    pub(super) async fn products(&self) -> Result<Vec<u64>, InventoryError> {
        {
            let known = self.known.lock();
            if known
                .0
                .is_some_and(|at| at.elapsed() < Duration::from_millis(500))
            {
                return Ok(known.1.clone());
            }
        }
        let members: Vec<String> = self
            .client
            .next()
            .smembers(self.products_key.clone())
            .await
            .map_err(backend)?;
        let ids: Vec<u64> = members.iter().filter_map(|m| m.parse().ok()).collect();
        *self.known.lock() = (Some(Instant::now()), ids.clone());
        Ok(ids)
    }

    /// Up to `max` sales for this relay, waiting up to `block` for one.
    pub(super) async fn read_outbox(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, InventoryError> {
        let max = max.max(1);
        if self.claim_due() {
            let claimed = self.claim(max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        let products = self.products().await?;
        if products.is_empty() {
            tokio::time::sleep(block.min(self.config.poll_interval.max(Duration::from_millis(1))))
                .await;
            return Ok(Vec::new());
        }
        // Below the command timeout, so a quiet wait is not taken for a dead server.
        let block = block.min(self.config.command_timeout.mul_f64(0.75));
        match self.read_new(&products, max, block).await {
            Err(e) if is_nogroup(&e) => {
                // A product's stream went away (purged): forget the set and claim afresh.
                self.known.lock().0 = None;
                *self.last_claim.lock() = None;
                Ok(Vec::new())
            }
            other => other,
        }
    }

    fn claim_due(&self) -> bool {
        let mut last = self.last_claim.lock();
        let every = self.config.reclaim_after / 2;
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Entries other relays left unacknowledged past `reclaim_after`, then anything new, per
    /// product; products whose activity expired with an empty outbox leave the set.
    async fn claim(&self, max: usize) -> Result<Vec<OutboxEntry>, InventoryError> {
        let min_idle = self.config.reclaim_after.as_millis().to_string();
        let mut out = Vec::new();
        for product_id in self.products().await? {
            let want = max - out.len();
            if want == 0 {
                break;
            }
            let k = self.keys(product_id);
            let flat: Vec<Value> = self
                .client
                .fcall(
                    functions::op::outbox_claim,
                    vec![k.outbox.clone()],
                    vec![
                        RELAY_GROUP.into(),
                        self.consumer.clone().into(),
                        want.to_string().into(),
                        min_idle.clone().into(),
                    ],
                )
                .await?;
            if flat.is_empty() {
                self.retire_if_ended(product_id).await?;
            }
            for pair in flat.chunks(2) {
                if let [id, fields] = pair {
                    parse_entry(product_id, id, fields, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Drops an ended product (its activity key expired) with nothing left to relay from the
    /// set, so the relay stops watching it.
    async fn retire_if_ended(&self, product_id: u64) -> Result<(), InventoryError> {
        let k = self.keys(product_id);
        let c = self.client.next();
        let (alive, left): (u64, u64) = tokio::try_join!(
            async { c.exists(k.activity.clone()).await.map_err(backend) },
            async { c.xlen(k.outbox.clone()).await.map_err(backend) },
        )?;
        if alive == 0 && left == 0 {
            c.srem::<(), _, _>(self.products_key.clone(), product_id.to_string())
                .await
                .map_err(backend)?;
            self.known.lock().0 = None;
        }
        Ok(())
    }

    /// New entries of every product, in one blocking read.
    async fn read_new(
        &self,
        products: &[u64],
        max: usize,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, InventoryError> {
        let mut by_key = HashMap::with_capacity(products.len());
        let mut args: Vec<Value> = vec![
            "GROUP".into(),
            RELAY_GROUP.into(),
            self.consumer.clone().into(),
            "COUNT".into(),
            (max as i64).into(),
            "BLOCK".into(),
            (block.as_millis().max(1) as i64).into(),
            "STREAMS".into(),
        ];
        for &p in products {
            let k = self.keys(p);
            by_key.insert(k.outbox_name.clone(), p);
            args.push(k.outbox.clone().into());
        }
        args.extend(products.iter().map(|_| Value::from(">")));
        let reply: Value = self
            .client
            .blocking()
            .custom(fred::cmd!("XREADGROUP"), args)
            .await
            .map_err(backend)?;
        let mut out = Vec::new();
        for (key, entries) in streams(reply) {
            let Some(&product_id) = by_key.get(&key) else {
                continue;
            };
            let Value::Array(entries) = entries else {
                continue;
            };
            for e in entries {
                if let Value::Array(pair) = e {
                    if let [id, fields] = pair.as_slice() {
                        parse_entry(product_id, id, fields, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Acknowledges relayed entries (every sale read from an entry carries its id) and
    /// trims each outbox by range.
    pub(super) async fn ack_outbox(&self, ids: &[String]) -> Result<(), InventoryError> {
        // product -> entry -> sales read from it
        let mut by_product: HashMap<u64, HashMap<&str, u64>> = HashMap::new();
        for id in ids {
            if let Some((p, entry)) = id.split_once(':') {
                if let Ok(p) = p.parse() {
                    *by_product.entry(p).or_default().entry(entry).or_default() += 1;
                }
            }
        }
        for (product_id, entries) in by_product {
            let k = self.keys(product_id);
            let mut args: Vec<Value> = Vec::with_capacity(1 + 2 * entries.len());
            args.push(RELAY_GROUP.into());
            for (entry, sales) in entries {
                args.push(entry.to_owned().into());
                args.push((sales as i64).into());
            }
            let _: i64 = self
                .client
                .fcall(
                    functions::op::outbox_ack,
                    vec![k.outbox.clone(), k.outbox_count.clone()],
                    args,
                )
                .await?;
        }
        Ok(())
    }
}

fn is_nogroup(e: &InventoryError) -> bool {
    match e {
        InventoryError::Backend(b) => b.to_string().contains("NOGROUP"),
        _ => false,
    }
}

/// `(stream key, entries)` of an `XREADGROUP` reply, as RESP2 arrays or a RESP3 map; nothing
/// for a timeout.
fn streams(reply: Value) -> Vec<(String, Value)> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?.as_string()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The sales of one outbox entry, appended to `out`: fields `p` price, `t` ms, `e` epoch and
/// `s` = `seq|user|qty;…` for a batch, or (written by an earlier release) one field each of a
/// single sale. Every sale of the entry carries the entry's id.
pub(super) fn parse_entry(
    product_id: u64,
    id: &Value,
    fields: &Value,
    out: &mut Vec<OutboxEntry>,
) -> Result<(), InventoryError> {
    let id = id
        .as_str()
        .ok_or_else(|| InventoryError::Protocol("outbox entry without an id".into()))?;
    let Value::Array(kv) = fields else {
        return Err(InventoryError::Protocol(format!(
            "outbox entry {id} without fields"
        )));
    };
    let mut map = HashMap::with_capacity(kv.len() / 2);
    for pair in kv.chunks(2) {
        if let (Some(k), Some(v)) = (pair[0].as_str(), pair.get(1).and_then(Value::as_str)) {
            map.insert(k.into_owned(), v.into_owned());
        }
    }
    let bad = |what: &str| InventoryError::Protocol(format!("outbox entry {id} lacks {what}"));
    let field = |name: &str| -> Result<i64, InventoryError> {
        map.get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(name))
    };
    let entry_id = format!("{product_id}:{id}");
    let mut push = |seq: i64, user: i64, qty: i64, price: i64, ts: i64, epoch: i64| {
        out.push(OutboxEntry {
            id: entry_id.clone(),
            record: SaleRecord {
                order_id: OrderId {
                    product_id,
                    seq: u64::try_from(seq).unwrap_or(0),
                },
                product_id,
                user_id: u64::try_from(user).unwrap_or(0),
                quantity: u32::try_from(qty).unwrap_or(0),
                price_cents: u64::try_from(price).unwrap_or(0),
                sold_at_ms: ts,
                epoch: u64::try_from(epoch).unwrap_or(0),
            },
        });
    };
    match map.get("s") {
        Some(sales) => {
            let (price, ts, epoch) = (field("p")?, field("t")?, field("e")?);
            for sale in sales.split(';') {
                let mut parts = sale.split('|').map(str::parse::<i64>);
                let mut next = || {
                    parts
                        .next()
                        .and_then(Result::ok)
                        .ok_or_else(|| bad("a sale"))
                };
                let (seq, user, qty) = (next()?, next()?, next()?);
                push(seq, user, qty, price, ts, epoch);
            }
        }
        None => push(
            field("order")?,
            field("user")?,
            field("qty")?,
            field("price")?,
            field("ts")?,
            field("epoch")?,
        ),
    }
    Ok(())
}
