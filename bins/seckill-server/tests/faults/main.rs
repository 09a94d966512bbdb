//! Fault runs through the real binary: `seckill-server` processes on a private redis-server,
//! PostgreSQL and RabbitMQ or Kafka, with Redis emptied, stopped (SIGSTOP) or an instance
//! killed (SIGKILL) mid-sale, a RabbitMQ queue deleted, PostgreSQL cut off past the payment
//! deadline, a sale the database refuses, and a drift made by hand in Redis. Each ends with
//! the books balanced and every answered sale exactly one row.

#![cfg(unix)]

mod fleet;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet::{Answer, Fleet, Mq, assert_books};
use seckill_test_support::eventually;
use serde_json::json;

const P: u64 = 9101;
const SETTLE: Duration = Duration::from_secs(90);

/// Waits until `done` reaches `n` answers.
async fn answered(done: &AtomicUsize, n: usize) {
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(5),
        "answers",
        || async { (done.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

/// The last answer of each user.
fn last(answers: impl IntoIterator<Item = Answer>) -> HashMap<u64, Answer> {
    answers.into_iter().map(|a| (a.user, a)).collect()
}

async fn redis_emptied_then_the_same_prewarm(mq: Mq) {
    let mut f = Fleet::new(mq, false, &[]).await;
    f.start().await;
    let f = Arc::new(f);
    assert_eq!(f.prewarm(0, P, 500).await["result"], "created");
    let done = Arc::new(AtomicUsize::new(0));
    let first = f.burst(0, P, (1..=300).collect(), done.clone()).await;
    assert!(first.iter().all(Answer::sold), "{first:?}");
    let rows = f.settled(0, P, SETTLE).await;
    assert_eq!(rows.len(), 300);

    // Redis forgets everything, as a restart without persistence would.
    assert_eq!(f.redis.cli(&["FLUSHALL"]).trim(), "OK");
    let gap = f.buy(0, P, 10_000, None).await;
    assert!(!gap.sold(), "sold with no activity in Redis: {gap:?}");
    // The same prewarm restores the sale from the order store.
    let again = f.prewarm(0, P, 500).await;
    assert_eq!(
        (
            again["result"].as_str(),
            again["restored_orders"].as_u64(),
            again["remaining_stock"].as_u64()
        ),
        (Some("restored"), Some(300), Some(200)),
        "{again}"
    );
    // The earlier buyers try again beside 300 newcomers: 200 items are left, and only
    // newcomers get them.
    let second = f.burst(0, P, (1..=600).collect(), done.clone()).await;
    let newcomers: Vec<&Answer> = second.iter().filter(|a| a.user > 300).collect();
    assert_eq!(newcomers.iter().filter(|a| a.sold()).count(), 200);
    let earlier: HashMap<u64, String> = first
        .iter()
        .map(|a| (a.user, a.order_id.clone().unwrap()))
        .collect();
    for a in second.iter().filter(|a| a.user <= 300) {
        assert!(
            a.status == 409 || a.order_id.as_ref() == Some(&earlier[&a.user]),
            "an earlier buyer bought again: {a:?}"
        );
    }
    let rows = f.settled(0, P, SETTLE).await;
    let stats = f.stats(0, P).await;
    let by_user = assert_books(
        &first.iter().chain(&second).cloned().collect::<Vec<_>>(),
        &rows,
        &stats,
        500,
    );
    assert_eq!(by_user.len(), 500);
    // No reused id: each buyer's order is their own.
    for user in [1, 150, 300] {
        let id = &earlier[&user];
        let (st, v) = f.get(0, &format!("/api/v1/seckill/orders/{id}")).await;
        assert_eq!(
            (st, v["data"]["user_id"].as_u64()),
            (200, Some(user)),
            "{v}"
        );
    }
    Arc::into_inner(f).unwrap().cleanup().await;
}

async fn redis_stopped_mid_burst(mq: Mq) {
    let mut f = Fleet::new(mq, false, &[]).await;
    f.start().await;
    let f = Arc::new(f);
    f.prewarm(0, P, 300).await;
    let done = Arc::new(AtomicUsize::new(0));
    let burst = tokio::spawn({
        let (f, done) = (f.clone(), done.clone());
        async move { f.burst(0, P, (1..=400).collect(), done).await }
    });
    answered(&done, 60).await;
    f.redis.signal("STOP");
    // Longer than the Redis command timeout (1 s): calls in flight time out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    f.redis.signal("CONT");
    let answers = burst.await.unwrap();
    let rows = f.settled(0, P, SETTLE).await;
    let first = last(answers.clone());
    let unknown = first.values().filter(|a| a.code == 50304).count();
    // Whoever bought was told so, or told the outcome is unknown — never "did not happen".
    for r in &rows {
        let a = &first[&r.user_id];
        assert!(
            a.order_id.as_ref() == Some(&r.order_id) || (a.status == 503 && a.code == 50304),
            "user {} bought {} but was answered {a:?}",
            r.user_id,
            r.order_id
        );
    }
    // Those told "unknown" retry with the same key: a buyer gets their order back.
    let mut retried = Vec::new();
    for a in first.values().filter(|a| a.code == 50304) {
        let again = f.buy(0, P, a.user, Some(&format!("k-{}", a.user))).await;
        if let Some(r) = rows.iter().find(|r| r.user_id == a.user) {
            assert_eq!(again.order_id.as_ref(), Some(&r.order_id), "{again:?}");
        }
        retried.push(again);
    }
    let rows = f.settled(0, P, SETTLE).await;
    let stats = f.stats(0, P).await;
    let all: Vec<Answer> = answers.into_iter().chain(retried).collect();
    assert_books(&all, &rows, &stats, 300);
    eprintln!(
        "{mq:?}: {} sold, {unknown} answered 50304 during the stop",
        rows.len()
    );
    Arc::into_inner(f).unwrap().cleanup().await;
}

async fn an_instance_killed_mid_sale(mq: Mq) {
    let mut f = Fleet::new(mq, false, &[]).await;
    f.start().await;
    f.start().await;
    let f = Arc::new(f);
    f.prewarm(0, P, 300).await;
    let done = Arc::new(AtomicUsize::new(0));
    let burst = tokio::spawn({
        let (f, done) = (f.clone(), done.clone());
        async move { f.burst(0, P, (1..=400).collect(), done).await }
    });
    answered(&done, 100).await;
    // SIGKILL while requests are in flight (through the pid: the burst shares the fleet).
    let log = f.instances[0].log();
    kill_instance(&f, 0);
    let answers = burst.await.unwrap();
    // Whoever got no answer (or "unknown") retries on the other instance with the same key.
    let mut finals = last(answers.clone());
    let lost: Vec<u64> = finals
        .values()
        .filter(|a| a.status == 0 || a.code == 50304)
        .map(|a| a.user)
        .collect();
    assert!(!lost.is_empty(), "the kill hit no request; log:\n{log}");
    for user in lost {
        let a = f.buy(1, P, user, Some(&format!("k-{user}"))).await;
        finals.insert(user, a);
    }
    let rows = f.settled(1, P, SETTLE).await;
    let stats = f.stats(1, P).await;
    let finals: Vec<Answer> = finals.into_values().collect();
    assert_books(&finals, &rows, &stats, 300);
    // Everyone whose purchase happened was, in the end, answered with it.
    let by_user = last(finals);
    for r in &rows {
        assert_eq!(
            by_user[&r.user_id].order_id.as_ref(),
            Some(&r.order_id),
            "user {} holds {} without knowing it",
            r.user_id,
            r.order_id
        );
    }
    Arc::into_inner(f).unwrap().cleanup().await;
}

/// SIGKILLs instance `i` through its pid.
fn kill_instance(f: &Fleet, i: usize) {
    let pid = f.instances[i].pid();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -KILL {pid}");
}

async fn postgres_down_past_the_payment_timeout(mq: Mq) {
    let mut f = Fleet::new(
        mq,
        true,
        &[
            ("SECKILL_ORDERS__PAYMENT_TIMEOUT", "4s"),
            ("SECKILL_ORDERS__SWEEP_INTERVAL", "200ms"),
        ],
    )
    .await;
    f.start().await;
    let f = Arc::new(f);
    f.prewarm(0, P, 40).await;
    // The database is cut off for longer than the payment timeout while the sale goes on.
    f.db_proxy.as_ref().unwrap().down();
    let done = Arc::new(AtomicUsize::new(0));
    let answers = f.burst(0, P, (1..=40).collect(), done).await;
    assert!(answers.iter().all(Answer::sold), "{answers:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    f.db_proxy.as_ref().unwrap().up();
    let rows = f.settled(0, P, SETTLE).await;
    let stats = f.stats(0, P).await;
    assert_books(&answers, &rows, &stats, 40);
    // Every buyer can pay: the deadline runs from when the order was stored.
    for a in &answers {
        let id = a.order_id.as_ref().unwrap();
        let (st, v) = f
            .post(
                0,
                &format!("/api/v1/seckill/orders/{id}/pay"),
                json!({}),
                None,
            )
            .await;
        assert_eq!(
            (st, v["data"]["status"].as_str()),
            (200, Some("paid")),
            "{v}"
        );
    }
    Arc::into_inner(f).unwrap().cleanup().await;
}

async fn a_sale_the_database_refuses(mq: Mq) {
    let mut f = Fleet::new(mq, false, &[]).await;
    f.start().await;
    // A rule the sale of user 666 breaks (SQLSTATE 23514): permanent, never retried.
    f.sql("ALTER TABLE orders ADD CONSTRAINT no_user_666 CHECK (user_id <> 666)");
    let f = Arc::new(f);
    f.prewarm(0, P, 20).await;
    let done = Arc::new(AtomicUsize::new(0));
    let answers = f.burst(0, P, (660..=672).collect(), done).await;
    assert!(answers.iter().all(Answer::sold), "{answers:?}");
    let rows = eventually(SETTLE, Duration::from_millis(100), "12 rows", || async {
        let rows = f.rows(P);
        (rows.len() == 12).then_some(rows)
    })
    .await;
    f.metric_line(0, SETTLE, |l| {
        l.starts_with("seckill_order_dead_letters_total{reason=\"rejected\"}")
    })
    .await;
    let users: Vec<u64> = rows.iter().map(|r| r.user_id).collect();
    assert!(!users.contains(&666));
    for u in (660..=672).filter(|&u| u != 666) {
        assert!(users.contains(&u), "user {u}'s order is not stored");
    }
    // The refused sale is not forgotten: the reconciler counts it as unaccounted.
    let drift = format!("seckill_inventory_unaccounted_items{{product_id=\"{P}\"}} 1");
    f.metric_line(0, SETTLE, |l| l == drift).await;
    let log = f.instances[0].log();
    assert!(log.contains("dead-lettered"), "{log}");
    Arc::into_inner(f).unwrap().cleanup().await;
}

async fn the_reconciler_repairs_a_drift_made_by_hand(mq: Mq) {
    let mut f = Fleet::new(mq, false, &[]).await;
    f.start().await;
    let f = Arc::new(f);
    f.prewarm(0, P, 10).await;
    let done = Arc::new(AtomicUsize::new(0));
    let answers = f.burst(0, P, (1..=4).collect(), done).await;
    assert!(answers.iter().all(Answer::sold));
    f.settled(0, P, SETTLE).await;
    // By hand: two items put back on sale and a buyer forgotten.
    let prefix = &f.name;
    f.redis
        .cli(&["HSET", &format!("{prefix}:{{{P}}}:activity"), "stock", "8"]);
    f.redis
        .cli(&["HDEL", &format!("{prefix}:{{{P}}}:buyers"), "2"]);
    let run = |repair: bool| {
        let mut c = f.command();
        c.args(["reconcile", "--product", &P.to_string()]);
        if repair {
            c.arg("--repair");
        }
        let out = c.output().expect("reconcile runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| {
                panic!(
                    "no JSON line: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (
            out.status.code(),
            serde_json::from_str::<serde_json::Value>(line).unwrap(),
        )
    };
    let (code, found) = run(false);
    assert_eq!(
        (
            code,
            found["unaccounted_items"].as_i64(),
            found["unaccounted_buyers"].as_i64()
        ),
        (Some(2), Some(-2), Some(-1)),
        "{found}"
    );
    // The background reconciler of the instance exports the same drift.
    let drift = format!("seckill_inventory_unaccounted_items{{product_id=\"{P}\"}} -2");
    f.metric_line(0, SETTLE, |l| l == drift).await;
    let (code, fixed) = run(true);
    assert_eq!(
        (code, fixed["repaired"].as_bool()),
        (Some(0), Some(true)),
        "{fixed}"
    );
    let (code, after) = run(false);
    assert_eq!(
        (code, after["unaccounted_items"].as_i64()),
        (Some(0), Some(0)),
        "{after}"
    );
    // Buyer 2 is a buyer again: a second purchase answers their order, and sells nothing.
    let again = f.buy(0, P, 2, None).await;
    let theirs = answers.iter().find(|a| a.user == 2).unwrap();
    assert!(
        again.status == 409 || again.order_id == theirs.order_id,
        "{again:?}"
    );
    let stats = f.stats(0, P).await;
    assert_books(&answers, &f.rows(P), &stats, 10);
    Arc::into_inner(f).unwrap().cleanup().await;
}

async fn a_queue_deleted_mid_sale(mq: Mq) {
    // The database is held off so the sales pile up in the queue (beyond the consumer's
    // prefetch) before it is deleted with them.
    let mut f = Fleet::new(mq, true, &[("SECKILL_MQ__RABBITMQ__PREFETCH", "50")]).await;
    f.start().await;
    let f = Arc::new(f);
    f.prewarm(0, P, 400).await;
    f.db_proxy.as_ref().unwrap().down();
    let done = Arc::new(AtomicUsize::new(0));
    let answers = f.burst(0, P, (1..=400).collect(), done).await;
    assert!(answers.iter().all(Answer::sold));
    let queue = format!("{}.seckill.order.created.order-service", f.name);
    let ch = rabbit().await;
    eventually(
        SETTLE,
        Duration::from_millis(50),
        "sales in the queue",
        || async {
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .ok()?;
            // Four consumers hold 50 each; the rest wait in the queue.
            (q.message_count() >= 150).then_some(())
        },
    )
    .await;
    let deleted = ch
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    assert!(deleted >= 150, "{deleted}");
    f.db_proxy.as_ref().unwrap().up();
    // The sales the queue took with it are sent again by the reconciler.
    let rows = f.settled(0, P, SETTLE).await;
    let stats = f.stats(0, P).await;
    assert_books(&answers, &rows, &stats, 400);
    assert_eq!(rows.len(), 400);
    let redelivered: f64 = f
        .metrics(0)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("seckill_reconciler_redelivered_total "))
        .map_or(0.0, |v| v.parse().unwrap());
    assert!(
        redelivered >= f64::from(deleted),
        "{redelivered} < {deleted}"
    );
    Arc::into_inner(f).unwrap().cleanup().await;
}

/// A channel to the shared RabbitMQ, to act behind the servers' backs as an operator (or a
/// lost node) would.
async fn rabbit() -> lapin::Channel {
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    conn.create_channel().await.unwrap()
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Mq::Rabbit).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Mq::Kafka).await;
                }
            )*
        }
    };
}

on_both!(
    redis_emptied_then_the_same_prewarm,
    redis_stopped_mid_burst,
    an_instance_killed_mid_sale,
    postgres_down_past_the_payment_timeout,
    a_sale_the_database_refuses,
    the_reconciler_repairs_a_drift_made_by_hand,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_queue_deleted_mid_sale_loses_nothing() {
    a_queue_deleted_mid_sale(Mq::Rabbit).await;
}
