//! The gRPC API through a real tonic client: every method, the error mapping (status code,
//! `seckill-code` metadata and details), bearer tokens in metadata, purchase tokens, server
//! reflection and the health service.

use std::time::Duration;

use seckill_grpc::pb;
use seckill_grpc::pb::seckill_client::SeckillClient;
use seckill_service::{
    AntibotConfig, AuthConfig, AuthMode, ChallengeKind, Components, JwtConfig, ProofOfWork,
    RateLimits, Service, ServiceConfig, Settings, mint_token,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const SECRET: &str = "the-test-secret-of-at-least-32-bytes";

/// A service on the in-process backends, served over gRPC on a free port; a client to it.
async fn start(auth: AuthConfig, antibot: AntibotConfig) -> (SeckillClient<Channel>, Channel) {
    let config = ServiceConfig {
        seckill: Settings {
            rate_limit: RateLimits {
                enable: false,
                ..RateLimits::default()
            },
            ..Settings::default()
        },
        auth,
        antibot,
        ..ServiceConfig::default()
    };
    let (service, pipeline) = Service::start(config, Components::embedded())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _pipeline = pipeline;
        seckill_grpc::serve(listener, service, std::future::pending()).await
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    (SeckillClient::new(channel.clone()), channel)
}

async fn open() -> SeckillClient<Channel> {
    start(AuthConfig::default(), AntibotConfig::default())
        .await
        .0
}

fn activity(product_id: u64, stock: u64) -> pb::PrewarmRequest {
    let now = chrono::Utc::now();
    pb::PrewarmRequest {
        product_id,
        product_name: "grpc".into(),
        price: 12.5,
        stock,
        start_time: (now - chrono::Duration::minutes(1)).to_rfc3339(),
        end_time: (now + chrono::Duration::hours(1)).to_rfc3339(),
        ..Default::default()
    }
}

fn buy(product_id: u64, user_id: u64) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        product_id,
        user_id: Some(user_id),
        quantity: 1,
        ..Default::default()
    }
}

/// The envelope code a status carries, checked in both places.
fn code(s: &Status) -> i64 {
    let meta: i64 = s
        .metadata()
        .get("seckill-code")
        .unwrap_or_else(|| panic!("no seckill-code in {s:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let details: serde_json::Value = serde_json::from_slice(s.details()).unwrap();
    assert_eq!(details["code"].as_i64(), Some(meta), "{s:?}");
    assert_eq!(details["message"].as_str(), Some(s.message()), "{s:?}");
    meta
}

/// The status of a failed call, with its code and envelope code.
fn failed<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>) -> (Code, i64, Status) {
    let s = r.expect_err("the call should fail");
    (s.code(), code(&s), s)
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers_over_grpc() {
    let mut c = open().await;
    let p = c
        .prewarm(pb::PrewarmRequest {
            per_user_limit: Some(2),
            ..activity(501, 3)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.result.as_str(), p.stock, p.epoch), ("created", 3, 1));
    let st = c
        .get_stats(pb::ProductRequest { product_id: 501 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.initial_stock, st.remaining_stock, st.price),
        (3, 3, 12.5)
    );

    // Purchase; again as the same buyer answers the same order; another quantity is refused.
    let sale = c.purchase(buy(501, 1)).await.unwrap().into_inner();
    assert_eq!(
        (sale.user_id, sale.quantity, sale.remaining_stock),
        (1, 1, 2)
    );
    let again = c.purchase(buy(501, 1)).await.unwrap().into_inner();
    assert_eq!(again.order_id, sale.order_id);
    let (st, code, _) = failed(
        c.purchase(pb::PurchaseRequest {
            quantity: 2,
            ..buy(501, 1)
        })
        .await,
    );
    assert_eq!((st, code), (Code::AlreadyExists, 40902));

    // The idempotency key in metadata: a retry is answered as the first time.
    let mut keyed = Request::new(buy(501, 2));
    keyed
        .metadata_mut()
        .insert("idempotency-key", "k-2".parse().unwrap());
    let first = c.purchase(keyed).await.unwrap().into_inner();
    let retry = c
        .purchase(pb::PurchaseRequest {
            idempotency_key: Some("k-2".into()),
            ..buy(501, 2)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (retry.order_id, retry.remaining_stock),
        (first.order_id.clone(), first.remaining_stock)
    );

    // Asynchronous: accepted, then its result.
    let accepted = c.purchase_async(buy(501, 3)).await.unwrap().into_inner();
    assert_eq!(accepted.status, "pending");
    let result = seckill_test_support::eventually(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the asynchronous result",
        || {
            let (mut c, id) = (c.clone(), accepted.request_id.clone());
            async move {
                let r = c
                    .get_result(pb::ResultRequest { request_id: id })
                    .await
                    .unwrap()
                    .into_inner();
                (r.status != "pending").then_some(r)
            }
        },
    )
    .await;
    assert_eq!(result.status, "success", "{result:?}");
    assert_eq!(result.remaining_stock, Some(0));
    // Sold out now.
    let (st, code, _) = failed(c.purchase(buy(501, 4)).await);
    assert_eq!((st, code), (Code::FailedPrecondition, 40901));

    let bought = c
        .get_purchased(pb::PurchasedRequest {
            product_id: 501,
            user_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (bought.purchased, bought.order_id.as_deref()),
        (true, Some(sale.order_id.as_str()))
    );

    // Orders: stored by the pipeline, then paid, then not cancellable.
    let order = seckill_test_support::eventually(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the order stored",
        || {
            let (mut c, id) = (c.clone(), sale.order_id.clone());
            async move {
                c.get_order(pb::OrderRequest { order_id: id })
                    .await
                    .ok()
                    .map(tonic::Response::into_inner)
            }
        },
    )
    .await;
    assert_eq!(
        (order.user_id, order.status.as_str(), order.price_cents),
        (1, "awaiting_payment", 1250)
    );
    let id = || pb::OrderRequest {
        order_id: sale.order_id.clone(),
    };
    assert_eq!(c.pay_order(id()).await.unwrap().into_inner().status, "paid");
    let (st, code, _) = failed(c.cancel_order(id()).await);
    assert_eq!((st, code), (Code::FailedPrecondition, 40906));
    // Buyer 2 cancels: the item is back on sale.
    let two = pb::OrderRequest {
        order_id: first.order_id.clone(),
    };
    seckill_test_support::eventually(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "order 2 stored",
        || {
            let (mut c, two) = (c.clone(), two.clone());
            async move { c.get_order(two).await.ok() }
        },
    )
    .await;
    let cancelled = c.cancel_order(two).await.unwrap().into_inner();
    assert_eq!(cancelled.status, "cancelled");
    let (st, code, _) = failed(
        c.get_order(pb::OrderRequest {
            order_id: "501-999".into(),
        })
        .await,
    );
    assert_eq!((st, code), (Code::NotFound, 40402));

    let sys = c
        .get_system_stats(pb::SystemStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        sys.requests
            .iter()
            .any(|r| r.outcome == "success" && r.count >= 2),
        "{sys:?}"
    );
    assert_eq!(
        (sys.degradation_mode.as_str(), sys.circuit_breaker.as_str()),
        ("auto", "closed")
    );

    // The levers.
    let d = c
        .set_degradation(pb::DegradationRequest { mode: "on".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((d.mode.as_str(), d.degraded), ("on", true));
    let (st, code, s) = failed(c.purchase(buy(501, 9)).await);
    assert_eq!((st, code), (Code::Unavailable, 50301), "{s:?}");
    c.set_degradation(pb::DegradationRequest {
        mode: "auto".into(),
    })
    .await
    .unwrap();
    let (st, code, s) = failed(
        c.set_degradation(pb::DegradationRequest {
            mode: "sideways".into(),
        })
        .await,
    );
    assert_eq!((st, code), (Code::InvalidArgument, 40001));
    assert!(s.message().contains("mode"), "{s:?}");

    assert!(
        !c.get_rate_limit(pb::RateLimitRequest {})
            .await
            .unwrap()
            .into_inner()
            .enable
    );
    let tight = c
        .set_rate_limit(pb::RateLimitChange {
            enable: true,
            requests_per_second: Some(1),
            burst_size: Some(1),
            algorithm: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (tight.enable, tight.requests_per_second, tight.burst_size),
        (true, Some(1), Some(1))
    );
    let _ = c.purchase(buy(501, 10)).await;
    let (st, code, s) = failed(c.purchase(buy(501, 11)).await);
    assert_eq!((st, code), (Code::ResourceExhausted, 42901));
    assert!(s.metadata().get("retry-after").is_some(), "{s:?}");
    let (st, code, _) = failed(
        c.set_rate_limit(pb::RateLimitChange {
            enable: true,
            requests_per_second: Some(0),
            ..Default::default()
        })
        .await,
    );
    assert_eq!((st, code), (Code::InvalidArgument, 40001));
    c.set_rate_limit(pb::RateLimitChange {
        enable: false,
        ..Default::default()
    })
    .await
    .unwrap();

    // Bad input names its field and changes nothing.
    let (st, code, s) = failed(c.purchase(buy(0, 1)).await);
    assert_eq!((st, code), (Code::InvalidArgument, 40001));
    assert!(s.message().contains("product_id"), "{s:?}");
    let (st, code, _) = failed(
        c.get_result(pb::ResultRequest {
            request_id: "nope".into(),
        })
        .await,
    );
    assert_eq!((st, code), (Code::InvalidArgument, 40001));
    let (st, code, _) = failed(c.get_stats(pb::ProductRequest { product_id: 777 }).await);
    assert_eq!((st, code), (Code::NotFound, 40401));
    let (st, code, _) = failed(
        c.prewarm(pb::PrewarmRequest {
            per_user_limit: Some(2),
            ..activity(501, 50)
        })
        .await,
    );
    assert_eq!((st, code), (Code::FailedPrecondition, 40903));
    let mut ended = activity(502, 5);
    ended.start_time = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    ended.end_time = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    c.prewarm(ended).await.unwrap();
    let (st, code, _) = failed(c.purchase(buy(502, 1)).await);
    assert_eq!((st, code), (Code::FailedPrecondition, 40303));
}

fn jwt() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Jwt,
        jwt: JwtConfig {
            secret: Some(SECRET.into()),
            ..JwtConfig::default()
        },
        ..AuthConfig::default()
    }
}

fn token(sub: &str, roles: &[&str]) -> String {
    mint_token(&jwt(), sub, roles, Duration::from_secs(600)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_in_metadata_name_the_buyer_and_the_operator() {
    let (mut c, _) = start(jwt(), AntibotConfig::default()).await;
    let (admin, buyer) = (token("ops", &["seckill:admin"]), token("7", &[]));
    // No token: who is buying?
    let (st, code, _) = failed(c.purchase(buy(601, 7)).await);
    assert_eq!((st, code), (Code::Unauthenticated, 40101));
    let (st, code, _) = failed(c.purchase(with_token(buy(601, 7), "not.a.jwt")).await);
    assert_eq!((st, code), (Code::Unauthenticated, 40101));
    // A buyer is not an operator.
    let (st, code, _) = failed(c.prewarm(with_token(activity(601, 5), &buyer)).await);
    assert_eq!((st, code), (Code::PermissionDenied, 40305));
    let (st, code, _) = failed(
        c.get_system_stats(with_token(pb::SystemStatsRequest {}, &buyer))
            .await,
    );
    assert_eq!((st, code), (Code::PermissionDenied, 40305));
    c.prewarm(with_token(activity(601, 5), &admin))
        .await
        .unwrap();
    // A buyer buys as themselves only; the user id may be left out.
    let (st, code, _) = failed(c.purchase(with_token(buy(601, 8), &buyer)).await);
    assert_eq!((st, code), (Code::PermissionDenied, 40304));
    let sale = c
        .purchase(with_token(
            pb::PurchaseRequest {
                user_id: None,
                ..buy(601, 0)
            },
            &buyer,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sale.user_id, 7);
    // Another buyer cannot see that order.
    let other = token("8", &[]);
    let order = pb::OrderRequest {
        order_id: sale.order_id.clone(),
    };
    seckill_test_support::eventually(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the order stored",
        || {
            let (mut c, order, buyer) = (c.clone(), order.clone(), buyer.clone());
            async move { c.get_order(with_token(order, &buyer)).await.ok() }
        },
    )
    .await;
    let (st, _, _) = failed(c.get_order(with_token(order.clone(), &other)).await);
    assert!(
        matches!(st, Code::NotFound | Code::PermissionDenied),
        "{st:?}"
    );
    // Paying takes the payment role.
    let (st, _, _) = failed(c.pay_order(with_token(order.clone(), &other)).await);
    assert_eq!(st, Code::PermissionDenied);
    let payments = token("payments", &["seckill:payment"]);
    let paid = c
        .pay_order(with_token(order, &payments))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, "paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_need_a_token_earned_with_a_proof_of_work() {
    let (mut c, _) = start(
        AuthConfig::default(),
        AntibotConfig {
            purchase_token: true,
            secret: Some("an-antibot-secret-for-tests".into()),
            challenge: ChallengeKind::Pow,
            difficulty: 8,
            ..AntibotConfig::default()
        },
    )
    .await;
    c.prewarm(activity(701, 5)).await.unwrap();
    let (st, code, _) = failed(c.purchase(buy(701, 1)).await);
    assert_eq!((st, code), (Code::PermissionDenied, 40306));
    let ch = c
        .get_challenge(pb::ChallengeRequest {
            product_id: 701,
            user_id: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ch.required);
    assert_eq!(ch.difficulty, 8);
    let ask = |solution: String| pb::PurchaseTokenRequest {
        product_id: 701,
        user_id: Some(1),
        challenge: Some(ch.challenge.clone()),
        solution: Some(solution),
    };
    let solution = ProofOfWork::solve(&ch.challenge, 8);
    let wrong = if solution == "0" { "1" } else { "0" };
    let (st, _, _) = failed(c.get_purchase_token(ask(wrong.into())).await);
    assert_eq!(st, Code::PermissionDenied);
    let t = c
        .get_purchase_token(ask(solution))
        .await
        .unwrap()
        .into_inner();
    assert!(t.required && !t.token.is_empty());
    let sale = c
        .purchase(pb::PurchaseRequest {
            purchase_token: Some(t.token.clone()),
            ..buy(701, 1)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sale.user_id, 1);
    // Single use.
    let (st, code, _) = failed(
        c.purchase(pb::PurchaseRequest {
            purchase_token: Some(t.token),
            ..buy(701, 1)
        })
        .await,
    );
    assert_eq!((st, code), (Code::PermissionDenied, 40306));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answers_with_its_request_id() {
    let mut c = open().await;
    let mut asked = Request::new(pb::ProductRequest { product_id: 404 });
    asked
        .metadata_mut()
        .insert("x-request-id", "grpc-req-9".parse().unwrap());
    // An error answers with it too.
    let err = c.get_stats(asked).await.unwrap_err();
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "grpc-req-9");
    let ok = c.get_rate_limit(pb::RateLimitRequest {}).await.unwrap();
    let fresh = ok.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert!(
        fresh.len() == 32 && fresh.bytes().all(|b| b.is_ascii_hexdigit()),
        "{fresh}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_service_and_health_answers_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (_, channel) = start(AuthConfig::default(), AntibotConfig::default()).await;
    let mut health = HealthClient::new(channel.clone());
    for service in [seckill_grpc::SERVICE_NAME, ""] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("not a service list: {first:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == seckill_grpc::SERVICE_NAME),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
}
