//! A forced re-prewarm voids the earlier epoch's unpaid orders: the new epoch's stock holds
//! their items, so they can no longer be paid, and nothing returns their stock a second time.

use std::time::Duration;

use seckill_service::{
    ActivityInput, Components, PurchaseInput, Refusal, Sale, Service, ServiceConfig, ServiceError,
};
use seckill_test_support::eventually;

const P: u64 = 7501;

fn activity(name: &str, force: bool) -> ActivityInput {
    let now = chrono::Utc::now();
    ActivityInput {
        product_id: P,
        product_name: name.into(),
        price: 1.0,
        stock: 2,
        start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
        end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
        force,
        ..Default::default()
    }
}

async fn buy(service: &Service, user: u64) -> Option<String> {
    let buyer = service
        .authenticate(None, Some([10, 8, 0, user as u8].into()))
        .unwrap();
    let input = PurchaseInput {
        product_id: P,
        user_id: Some(user),
        ..Default::default()
    };
    let purchase = service.purchase_request(&buyer, input).unwrap();
    let outcome = service.purchase(&purchase, &buyer).await.unwrap();
    Sale::from_outcome(&purchase.request, &outcome).map(|s| s.order_id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_re_prewarm_voids_the_earlier_epochs_unpaid_orders() {
    let (service, pipeline) = Service::start(ServiceConfig::default(), Components::embedded())
        .await
        .unwrap();
    let operator = service
        .authenticate(None, Some([127, 0, 0, 1].into()))
        .unwrap();
    assert_eq!(
        service
            .prewarm(&operator, activity("first", false))
            .await
            .unwrap()
            .result,
        "created"
    );
    let old = buy(&service, 1).await.expect("sold");
    let paid = buy(&service, 2).await.expect("sold");
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(10),
        "stored",
        || async {
            let st = service.product_stats(P).await.ok()?;
            (st.orders_created == 2).then_some(())
        },
    )
    .await;
    service.pay(&operator, &paid).await.unwrap();
    let again = service
        .prewarm(&operator, activity("second", true))
        .await
        .unwrap();
    assert_eq!((again.result, again.epoch), ("replaced", 2));
    // The unpaid order of epoch 1 is void; the paid one stands.
    let o = service.order(&operator, &old).await.unwrap();
    assert_eq!(o.status, seckill_orders::OrderStatus::Cancelled);
    assert!(
        o.stock_returned,
        "its items are the new epoch's, not returned again"
    );
    assert!(matches!(
        service.pay(&operator, &old).await,
        Err(ServiceError::Refused(Refusal::OrderCancelled))
    ));
    assert_eq!(
        service.order(&operator, &paid).await.unwrap().status,
        seckill_orders::OrderStatus::Paid
    );
    // The new epoch sells its own stock, exactly.
    assert!(buy(&service, 1).await.is_some());
    assert!(buy(&service, 3).await.is_some());
    assert!(buy(&service, 4).await.is_none(), "sold out");
    assert!(pipeline.shutdown(Duration::from_secs(30)).await);
    let st = service.product_stats(P).await.unwrap();
    assert_eq!((st.epoch, st.remaining_stock, st.orders_created), (2, 0, 2));
}
