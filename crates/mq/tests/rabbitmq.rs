//! RabbitMQ backend against the real server on 127.0.0.1:5672: each test uses an exchange and
//! queue prefix of its own and deletes its topology at the end.
#![cfg(feature = "rabbitmq")]

use std::collections::HashSet;

use seckill_mq::{
    Broker, Envelope, Message, OrderCreated, RabbitBroker, RabbitSettings, Subscription, Topic,
};

fn settings(groups: &[(Topic, &str)]) -> RabbitSettings {
    RabbitSettings {
        prefix: seckill_test_support::unique("t"),
        max_attempts: 3,
        groups: groups.iter().map(|(t, g)| (*t, (*g).to_owned())).collect(),
        ..RabbitSettings::default()
    }
}

fn order(product: u64, n: u64) -> Envelope {
    Envelope::new(
        format!("oc-{product}-{n}"),
        Message::OrderCreated(OrderCreated {
            order_id: format!("{product}-{n}"),
            product_id: product,
            user_id: n,
            quantity: 1,
            price_cents: 100,
            sold_at_ms: 0,
            epoch: 1,
        }),
    )
}

async fn drain(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Envelope> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let d = sub.next().await.unwrap();
        got.push(d.envelope.clone());
        d.ack().await.unwrap();
    }
    got
}

#[tokio::test]
async fn declared_groups_keep_messages_published_before_they_subscribe() {
    let broker = RabbitBroker::connect(settings(&[(Topic::OrderCreated, "orders")]))
        .await
        .unwrap();
    let batch: Vec<Envelope> = (1..=500).map(|n| order(1 + n % 3, n)).collect();
    broker.publish_batch(&batch).await.unwrap();
    assert_eq!(
        broker.pending(Topic::OrderCreated, "orders").await.unwrap(),
        Some(500)
    );
    let mut sub = broker
        .subscribe(Topic::OrderCreated, "orders")
        .await
        .unwrap();
    let got = drain(&mut sub, 500).await;
    let ids: HashSet<&str> = got.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 500);
    // One queue keeps publication order.
    let sent: Vec<&str> = batch.iter().map(|e| e.id.as_str()).collect();
    let received: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(sent, received);
    assert_eq!(
        broker.pending(Topic::OrderCreated, "orders").await.unwrap(),
        Some(0)
    );
    broker.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_message_failing_max_attempts_times_is_dead_lettered() {
    let broker = RabbitBroker::connect(settings(&[])).await.unwrap();
    let mut sub = broker
        .subscribe(Topic::OrderCreated, "orders")
        .await
        .unwrap();
    broker.publish(&order(1, 1)).await.unwrap();
    broker.publish(&order(1, 2)).await.unwrap();
    // Attempts 1 and 2 are retried, the third failure dead-letters (max_attempts = 3).
    let mut seen_1 = 0;
    let mut redelivered = Vec::new();
    loop {
        let d = sub.next().await.unwrap();
        if d.envelope.id == "oc-1-1" {
            seen_1 += 1;
            redelivered.push(d.redelivered);
            d.nack(true).await.unwrap();
            if seen_1 == 3 {
                break;
            }
        } else {
            d.ack().await.unwrap();
        }
    }
    assert_eq!(redelivered, [false, true, true]);
    // The dead-lettered message is not delivered again; a later one still is.
    broker.publish(&order(1, 3)).await.unwrap();
    let d = sub.next().await.unwrap();
    assert_eq!(d.envelope.id, "oc-1-3");
    d.ack().await.unwrap();
    assert_eq!(
        broker
            .dead_letter_count(Topic::OrderCreated, "orders")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        broker.pending(Topic::OrderCreated, "orders").await.unwrap(),
        Some(0)
    );
    broker.delete_topology().await.unwrap();
}

#[tokio::test]
async fn unacked_deliveries_of_a_closed_connection_are_redelivered_to_another_instance() {
    let s = settings(&[(Topic::OrderCreated, "orders")]);
    let first = RabbitBroker::connect(s.clone()).await.unwrap();
    let second = RabbitBroker::connect(s).await.unwrap();
    first
        .publish_batch(&(1..=10).map(|n| order(1, n)).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut sub = first
        .subscribe(Topic::OrderCreated, "orders")
        .await
        .unwrap();
    let mut acked = HashSet::new();
    for _ in 0..2 {
        let d = sub.next().await.unwrap();
        acked.insert(d.envelope.id.clone());
        d.ack().await.unwrap();
    }
    // Crash holding two deliveries (and the prefetched rest): neither acked nor nacked, so
    // only the loss of the connection hands them back.
    std::mem::forget((sub.next().await.unwrap(), sub.next().await.unwrap()));
    drop(sub);
    first.close().await;
    let mut sub2 = second
        .subscribe(Topic::OrderCreated, "orders")
        .await
        .unwrap();
    let got = drain(&mut sub2, 8).await;
    let ids: HashSet<String> = got.into_iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 8, "every unacknowledged message, once");
    assert!(
        ids.is_disjoint(&acked),
        "acknowledged messages never come back"
    );
    assert_eq!(
        second.pending(Topic::OrderCreated, "orders").await.unwrap(),
        Some(0)
    );
    second.delete_topology().await.unwrap();
}

#[tokio::test]
async fn connect_refuses_invalid_settings() {
    let invalid = RabbitSettings {
        url: "http://127.0.0.1:5672".into(),
        ..settings(&[])
    };
    let err = RabbitBroker::connect(invalid).await.unwrap_err();
    assert!(
        matches!(err, seckill_mq::MqError::InvalidConfig { key: "url", .. }),
        "{err:?}"
    );
}

/// Deletes a queue behind the broker's back, as an operator (or a lost node) would.
async fn delete_queue(name: &str) {
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(name.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = conn.close(0, "done".into()).await;
}

#[tokio::test]
async fn a_sale_with_no_queue_to_take_it_is_a_failure_and_the_queue_comes_back() {
    let broker = RabbitBroker::connect(settings(&[(Topic::OrderCreated, "orders")]))
        .await
        .unwrap();
    delete_queue(&broker.queue_name(Topic::OrderCreated, "orders")).await;
    // Published mandatory: returned unroutable, so the caller (the relay) keeps the sale.
    let err = broker.publish(&order(1, 1)).await.unwrap_err();
    assert!(
        matches!(&err, seckill_mq::MqError::Unroutable(key) if key == Topic::OrderCreated.name()),
        "{err:?}"
    );
    // The failure put the topology back: the retry is delivered.
    broker.publish(&order(1, 1)).await.unwrap();
    let mut sub = broker
        .subscribe(Topic::OrderCreated, "orders")
        .await
        .unwrap();
    let got = drain(&mut sub, 1).await;
    assert_eq!(got[0].id, "oc-1-1");
    // Topics no group consumes are not mandatory: follow-ups nobody reads are not failures.
    broker
        .publish(&Envelope::new(
            "pr-1-1",
            Message::PurchaseResult(seckill_mq::PurchaseResult {
                product_id: 1,
                user_id: 1,
                order_id: Some("1-1".into()),
                status: "success".into(),
            }),
        ))
        .await
        .unwrap();
    broker.delete_topology().await.unwrap();
}
