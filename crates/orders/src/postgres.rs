//! [`PgOrderStore`]: orders in PostgreSQL, and the consumer positions of brokers without
//! consumer groups in the same database.
//!
//! The schema lives in `crates/orders/migrations/*.sql`; [`PgOrderStore::connect`] applies the
//! ones not applied yet, in order, under an advisory lock (several instances may start at
//! once) and records them in `seckill_migrations`.
//!
//! Exactly-once effect: the order id is the primary key and inserts are
//! `ON CONFLICT DO NOTHING`, so a redelivered sale changes nothing; pay and cancel are single
//! conditional `UPDATE`s from `awaiting_payment`, so of two racing changes one wins.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use seckill_mq::{Lease, MqError, OffsetStore, PartitionKey};
use tokio_postgres::{NoTls, Row};

use crate::{Order, OrderCounts, OrderError, OrderStatus, OrderStore, OrdersConfig, Transition};

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "orders", include_str!("../migrations/0001_orders.sql")),
    (
        2,
        "consumer_offsets",
        include_str!("../migrations/0002_consumer_offsets.sql"),
    ),
    (
        3,
        "voided_epochs",
        include_str!("../migrations/0003_voided_epochs.sql"),
    ),
];

/// Orders in PostgreSQL (`orders.store = postgres`).
#[derive(Clone)]
pub struct PgOrderStore {
    pool: Pool,
    schema: Option<String>,
    query_timeout: Duration,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A store failure: permanent when PostgreSQL refused the data (SQLSTATE classes 22, 23, 42),
/// transient otherwise (connection, pool, timeouts, serialization…).
fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> OrderError {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    let refused = boxed
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|pg| pg.as_db_error())
        .filter(|db| matches!(&db.code().code()[..2], "22" | "23" | "42"))
        .map(|db| (db.code().code().to_owned(), db.message().to_owned()));
    match refused {
        Some((sqlstate, reason)) => OrderError::Rejected { sqlstate, reason },
        None => OrderError::Store(boxed),
    }
}

fn to_i64(v: u64, field: &'static str) -> Result<i64, OrderError> {
    i64::try_from(v).map_err(|_| OrderError::Invalid(format!("{field} {v} exceeds i64")))
}

impl PgOrderStore {
    /// Connects, creates the schema when missing and applies pending migrations.
    ///
    /// # Errors
    /// [`OrderError::InvalidConfig`] for a bad URL, schema name or pool size;
    /// [`OrderError::Store`] when the database cannot be reached or a migration fails.
    pub async fn connect(settings: &OrdersConfig) -> Result<Self, OrderError> {
        settings.validate_postgres()?;
        let mut config: tokio_postgres::Config =
            settings
                .database_url
                .parse()
                .map_err(|e: tokio_postgres::Error| OrderError::InvalidConfig {
                    key: "database_url",
                    reason: e.to_string(),
                })?;
        config.connect_timeout(settings.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        let mut options = format!(
            "-c statement_timeout={}",
            settings.query_timeout.as_millis().max(1)
        );
        if let Some(schema) = &settings.schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(&options);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(store_err)?;
        let store = Self {
            pool,
            schema: settings.schema.clone(),
            query_timeout: settings.query_timeout,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Bounds a database call: a connection that stopped answering fails the call instead of
    /// hanging it (the server also cancels statements after the same time).
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, OrderError>>,
    ) -> Result<T, OrderError> {
        tokio::time::timeout(self.query_timeout, op)
            .await
            .map_err(|_| OrderError::Store("PostgreSQL did not answer in time".into()))?
    }

    async fn timed_mq<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, MqError>>,
    ) -> Result<T, MqError> {
        tokio::time::timeout(self.query_timeout, op)
            .await
            .map_err(|_| MqError::Timeout)?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, OrderError> {
        self.pool.get().await.map_err(store_err)
    }

    async fn migrate(&self) -> Result<(), OrderError> {
        let mut client = self.client().await?;
        if let Some(schema) = &self.schema {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(store_err)?;
        }
        let tx = client.transaction().await.map_err(store_err)?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('seckill_migrations:' || current_schema()));
             CREATE TABLE IF NOT EXISTS seckill_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(store_err)?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM seckill_migrations", &[])
            .await
            .map_err(store_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tracing::info!(version, name, "applying order store migration");
            tx.batch_execute(sql).await.map_err(store_err)?;
            tx.execute(
                "INSERT INTO seckill_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(store_err)?;
        }
        tx.commit().await.map_err(store_err)
    }

    /// The schema holding the tables, when not the server's default.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Versions of the migrations applied, ascending.
    ///
    /// # Errors
    /// The database failed.
    pub async fn migrations(&self) -> Result<Vec<i32>, OrderError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT version FROM seckill_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(store_err)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Drops the store's schema with everything in it (tests use a schema of their own).
    ///
    /// # Errors
    /// [`OrderError::Invalid`] when the store uses the default schema; database failures.
    pub async fn drop_schema(&self) -> Result<(), OrderError> {
        let Some(schema) = &self.schema else {
            return Err(OrderError::Invalid(
                "refusing to drop the default schema".into(),
            ));
        };
        let client = self.client().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(store_err)?;
        drop(client);
        self.pool.close();
        Ok(())
    }

    async fn find(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT * FROM orders WHERE order_id = $1")
            .await
            .map_err(store_err)?;
        client
            .query_opt(&stmt, &[&order_id])
            .await
            .map_err(store_err)?
            .map(|r| order_from_row(&r))
            .transpose()
    }

    async fn set_status(
        &self,
        order_id: &str,
        to: OrderStatus,
        now_ms: i64,
    ) -> Result<Transition, OrderError> {
        let client = self.client().await?;
        let sql = match to {
            OrderStatus::Paid => {
                "UPDATE orders SET status = 'paid', updated_at_ms = $2
                 WHERE order_id = $1 AND status = 'awaiting_payment' AND expires_at_ms > $2
                 RETURNING *"
            }
            _ => {
                "UPDATE orders SET status = 'cancelled', updated_at_ms = $2
                 WHERE order_id = $1 AND status = 'awaiting_payment'
                 RETURNING *"
            }
        };
        let stmt = client.prepare_cached(sql).await.map_err(store_err)?;
        if let Some(row) = client
            .query_opt(&stmt, &[&order_id, &now_ms])
            .await
            .map_err(store_err)?
        {
            return Ok(Transition::Done(order_from_row(&row)?));
        }
        drop(client);
        Ok(match self.find(order_id).await? {
            None => Transition::NotFound,
            Some(o) if o.status == OrderStatus::AwaitingPayment => Transition::Expired(o),
            Some(o) => Transition::Final(o),
        })
    }
}

fn order_from_row(r: &Row) -> Result<Order, OrderError> {
    let status: String = r.get("status");
    let u = |v: i64, field: &str| {
        u64::try_from(v).map_err(|_| OrderError::Invalid(format!("stored {field} {v} < 0")))
    };
    Ok(Order {
        order_id: r.get("order_id"),
        product_id: u(r.get("product_id"), "product_id")?,
        user_id: u(r.get("user_id"), "user_id")?,
        quantity: u32::try_from(r.get::<_, i32>("quantity"))
            .map_err(|_| OrderError::Invalid("stored quantity < 0".into()))?,
        price_cents: u(r.get("price_cents"), "price_cents")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| OrderError::Invalid(format!("stored status {status:?}")))?,
        sold_at_ms: r.get("sold_at_ms"),
        created_at_ms: r.get("created_at_ms"),
        expires_at_ms: r.get("expires_at_ms"),
        updated_at_ms: r.get("updated_at_ms"),
        stock_returned: r.get("stock_returned"),
        epoch: u(r.get("epoch"), "epoch")?,
    })
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn insert(&self, o: &Order) -> Result<bool, OrderError> {
        self.timed(async {
            let quantity = i32::try_from(o.quantity)
                .map_err(|_| OrderError::Invalid(format!("quantity {} exceeds i32", o.quantity)))?;
            let (product, user, price, epoch) = (
                to_i64(o.product_id, "product_id")?,
                to_i64(o.user_id, "user_id")?,
                to_i64(o.price_cents, "price_cents")?,
                to_i64(o.epoch, "epoch")?,
            );
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO orders (order_id, product_id, user_id, quantity, price_cents, status,
                         epoch, sold_at_ms, created_at_ms, expires_at_ms, updated_at_ms, stock_returned)
                     SELECT $1::text, $2::bigint, $3::bigint, $4::integer, $5::bigint,
                         CASE WHEN void THEN 'cancelled' ELSE $6::text END,
                         $7::bigint, $8::bigint, $9::bigint, $10::bigint, $11::bigint,
                         $12::boolean OR void
                     FROM (SELECT $6::text = 'awaiting_payment' AND $7::bigint < coalesce(
                         (SELECT before_epoch FROM voided_epochs WHERE product_id = $2::bigint), 0) AS void) v
                     ON CONFLICT (order_id) DO NOTHING",
                )
                .await
                .map_err(store_err)?;
            let n = client
                .execute(
                    &stmt,
                    &[
                        &o.order_id,
                        &product,
                        &user,
                        &quantity,
                        &price,
                        &o.status.as_str(),
                        &epoch,
                        &o.sold_at_ms,
                        &o.created_at_ms,
                        &o.expires_at_ms,
                        &o.updated_at_ms,
                        &o.stock_returned,
                    ],
                )
                .await
                .map_err(store_err)?;
            Ok(n == 1)
        })
        .await
    }

    /// One statement for the whole batch (`unnest` of column arrays), atomic.
    async fn insert_many(&self, orders: &[Order]) -> Result<Vec<bool>, OrderError> {
        self.timed(async {
            let n = orders.len();
            let mut ids = Vec::with_capacity(n);
            let (mut products, mut users, mut prices, mut epochs) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut quantities, mut statuses, mut returned) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut sold, mut created, mut expires, mut updated) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for o in orders {
                ids.push(o.order_id.as_str());
                products.push(to_i64(o.product_id, "product_id")?);
                users.push(to_i64(o.user_id, "user_id")?);
                prices.push(to_i64(o.price_cents, "price_cents")?);
                epochs.push(to_i64(o.epoch, "epoch")?);
                quantities.push(i32::try_from(o.quantity).map_err(|_| {
                    OrderError::Invalid(format!("quantity {} exceeds i32", o.quantity))
                })?);
                statuses.push(o.status.as_str());
                returned.push(o.stock_returned);
                sold.push(o.sold_at_ms);
                created.push(o.created_at_ms);
                expires.push(o.expires_at_ms);
                updated.push(o.updated_at_ms);
            }
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO orders (order_id, product_id, user_id, quantity, price_cents, status,
                         epoch, sold_at_ms, created_at_ms, expires_at_ms, updated_at_ms, stock_returned)
                     SELECT u.order_id, u.product_id, u.user_id, u.quantity, u.price_cents,
                         CASE WHEN u.void THEN 'cancelled' ELSE u.status END,
                         u.epoch, u.sold_at_ms, u.created_at_ms, u.expires_at_ms, u.updated_at_ms,
                         u.stock_returned OR u.void
                     FROM (SELECT s.*, s.status = 'awaiting_payment'
                               AND s.epoch < coalesce(v.before_epoch, 0) AS void
                           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[],
                               $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[],
                               $10::bigint[], $11::bigint[], $12::boolean[])
                               AS s(order_id, product_id, user_id, quantity, price_cents, status,
                                    epoch, sold_at_ms, created_at_ms, expires_at_ms, updated_at_ms,
                                    stock_returned)
                           LEFT JOIN voided_epochs v ON v.product_id = s.product_id) u
                     ON CONFLICT (order_id) DO NOTHING
                     RETURNING order_id",
                )
                .await
                .map_err(store_err)?;
            let rows = client
                .query(
                    &stmt,
                    &[
                        &ids,
                        &products,
                        &users,
                        &quantities,
                        &prices,
                        &statuses,
                        &epochs,
                        &sold,
                        &created,
                        &expires,
                        &updated,
                        &returned,
                    ],
                )
                .await
                .map_err(store_err)?;
            let mut inserted: std::collections::HashSet<String> =
                rows.iter().map(|r| r.get::<_, String>(0)).collect();
            Ok(orders
                .iter()
                .map(|o| inserted.remove(&o.order_id))
                .collect())
        })
        .await
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, OrderError> {
        self.timed(async { self.find(order_id).await }).await
    }

    async fn get_many(&self, order_ids: &[&str]) -> Result<Vec<Order>, OrderError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT * FROM orders WHERE order_id = ANY($1)")
                .await
                .map_err(store_err)?;
            let rows = client
                .query(&stmt, &[&order_ids])
                .await
                .map_err(store_err)?;
            rows.iter().map(order_from_row).collect()
        })
        .await
    }

    async fn now_ms(&self) -> Result<i64, OrderError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .await
                .map_err(store_err)?;
            let row = client.query_one(&stmt, &[]).await.map_err(store_err)?;
            Ok(row.get::<_, i64>(0))
        })
        .await
    }

    async fn live_orders(&self, product_id: u64, epoch: u64) -> Result<Vec<Order>, OrderError> {
        self.timed(async {
            let (product, epoch) = (to_i64(product_id, "product_id")?, to_i64(epoch, "epoch")?);
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT * FROM orders
                     WHERE product_id = $1 AND epoch = $2 AND status <> 'cancelled'",
                )
                .await
                .map_err(store_err)?;
            let rows = client
                .query(&stmt, &[&product, &epoch])
                .await
                .map_err(store_err)?;
            rows.iter().map(order_from_row).collect()
        })
        .await
    }

    async fn void_before(
        &self,
        product_id: u64,
        epoch: u64,
        now_ms: i64,
    ) -> Result<u64, OrderError> {
        self.timed(async {
            let (product, epoch) = (to_i64(product_id, "product_id")?, to_i64(epoch, "epoch")?);
            let client = self.client().await?;
            // First the mark, so an order stored from now on is void at once; then those stored.
            let mark = client
                .prepare_cached(
                    "INSERT INTO voided_epochs (product_id, before_epoch) VALUES ($1, $2)
                     ON CONFLICT (product_id)
                     DO UPDATE SET before_epoch = greatest(voided_epochs.before_epoch, $2)",
                )
                .await
                .map_err(store_err)?;
            client
                .execute(&mark, &[&product, &epoch])
                .await
                .map_err(store_err)?;
            let stmt = client
                .prepare_cached(
                    "UPDATE orders SET status = 'cancelled', stock_returned = true, updated_at_ms = $3
                     WHERE product_id = $1 AND epoch < $2 AND status = 'awaiting_payment'",
                )
                .await
                .map_err(store_err)?;
            client
                .execute(&stmt, &[&product, &epoch, &now_ms])
                .await
                .map_err(store_err)
        })
        .await
    }

    async fn last_epoch(&self, product_id: u64) -> Result<Option<u64>, OrderError> {
        self.timed(async {
            let product = to_i64(product_id, "product_id")?;
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT max(epoch) FROM orders WHERE product_id = $1")
                .await
                .map_err(store_err)?;
            let row = client
                .query_one(&stmt, &[&product])
                .await
                .map_err(store_err)?;
            Ok(row
                .get::<_, Option<i64>>(0)
                .and_then(|e| u64::try_from(e).ok()))
        })
        .await
    }

    async fn counts(&self, product_id: u64, epoch: u64) -> Result<OrderCounts, OrderError> {
        self.timed(async {
            let (product, epoch) = (to_i64(product_id, "product_id")?, to_i64(epoch, "epoch")?);
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT count(*),
                            count(*) FILTER (WHERE status <> 'cancelled'),
                            coalesce(sum(quantity) FILTER (WHERE status <> 'cancelled'), 0)
                     FROM orders WHERE product_id = $1 AND epoch = $2",
                )
                .await
                .map_err(store_err)?;
            let row = client
                .query_one(&stmt, &[&product, &epoch])
                .await
                .map_err(store_err)?;
            let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            Ok(OrderCounts {
                orders: n(0),
                live_orders: n(1),
                live_items: n(2),
            })
        })
        .await
    }

    async fn pay(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        self.timed(async { self.set_status(order_id, OrderStatus::Paid, now_ms).await })
            .await
    }

    async fn cancel(&self, order_id: &str, now_ms: i64) -> Result<Transition, OrderError> {
        self.timed(async {
            self.set_status(order_id, OrderStatus::Cancelled, now_ms)
                .await
        })
        .await
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, OrderError> {
        self.timed(async {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "(SELECT * FROM orders WHERE status = 'awaiting_payment' AND expires_at_ms <= $1
                      ORDER BY expires_at_ms LIMIT $2)
                     UNION ALL
                     (SELECT * FROM orders WHERE status = 'cancelled' AND NOT stock_returned
                      ORDER BY expires_at_ms LIMIT $2)",
                )
                .await
                .map_err(store_err)?;
            let rows = client
                .query(&stmt, &[&now_ms, &limit])
                .await
                .map_err(store_err)?;
            let mut due = rows
                .iter()
                .map(order_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            due.sort_by_key(|o| o.expires_at_ms);
            due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(due)
        })
        .await
    }

    async fn mark_stock_returned(&self, order_id: &str) -> Result<(), OrderError> {
        self.timed(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("UPDATE orders SET stock_returned = true WHERE order_id = $1")
                .await
                .map_err(store_err)?;
            client
                .execute(&stmt, &[&order_id])
                .await
                .map_err(store_err)?;
            Ok(())
        })
        .await
    }
}

fn mq_err(e: impl std::error::Error + Send + Sync + 'static) -> MqError {
    MqError::Backend(Box::new(e))
}

/// Consumer positions and partition leases in the `consumer_offsets` table, beside the orders.
#[async_trait]
impl OffsetStore for PgOrderStore {
    async fn lease(
        &self,
        key: &PartitionKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, MqError> {
        self.timed_mq(async {
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            let client = self.pool.get().await.map_err(mq_err)?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO consumer_offsets (group_name, topic, partition, owner, lease_until)
                     VALUES ($1, $2, $3, $4, clock_timestamp() + $5::bigint * interval '1 millisecond')
                     ON CONFLICT (group_name, topic, partition) DO UPDATE
                         SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                         WHERE consumer_offsets.owner IS NULL
                            OR consumer_offsets.owner = EXCLUDED.owner
                            OR consumer_offsets.lease_until < clock_timestamp()
                     RETURNING next_offset",
                )
                .await
                .map_err(mq_err)?;
            let row = client
                .query_opt(
                    &stmt,
                    &[&key.group, &key.topic, &key.partition, &owner, &ttl_ms],
                )
                .await
                .map_err(mq_err)?;
            Ok(row.map_or(Lease::HeldByAnother, |r| {
                Lease::held(r.get::<_, Option<i64>>(0))
            }))
        })
        .await
    }

    async fn commit(
        &self,
        key: &PartitionKey,
        owner: &str,
        next_offset: i64,
    ) -> Result<bool, MqError> {
        self.timed_mq(async {
            let client = self.pool.get().await.map_err(mq_err)?;
            let stmt = client
                .prepare_cached(
                    "UPDATE consumer_offsets SET next_offset = $4
                     WHERE group_name = $1 AND topic = $2 AND partition = $3 AND owner = $5",
                )
                .await
                .map_err(mq_err)?;
            let n = client
                .execute(
                    &stmt,
                    &[&key.group, &key.topic, &key.partition, &next_offset, &owner],
                )
                .await
                .map_err(mq_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn position(&self, key: &PartitionKey) -> Result<Option<i64>, MqError> {
        self.timed_mq(async {
            let client = self.pool.get().await.map_err(mq_err)?;
            let row = client
                .query_opt(
                    "SELECT next_offset FROM consumer_offsets
                     WHERE group_name = $1 AND topic = $2 AND partition = $3",
                    &[&key.group, &key.topic, &key.partition],
                )
                .await
                .map_err(mq_err)?;
            Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
        })
        .await
    }

    async fn release(&self, key: &PartitionKey, owner: &str) -> Result<(), MqError> {
        self.timed_mq(async {
            let client = self.pool.get().await.map_err(mq_err)?;
            client
                .execute(
                    "UPDATE consumer_offsets SET owner = NULL, lease_until = NULL
                     WHERE group_name = $1 AND topic = $2 AND partition = $3 AND owner = $4",
                    &[&key.group, &key.topic, &key.partition, &owner],
                )
                .await
                .map_err(mq_err)?;
            Ok(())
        })
        .await
    }
}
