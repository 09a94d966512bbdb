//! Identity through real HTTP and real tokens: with `auth.mode: jwt` every buyer route needs a
//! valid bearer token naming the buyer, the admin plane needs the admin role, orders belong to
//! their buyer; with mode none the admin plane answers only `admin_allow` peers. After every
//! refusal the stock, the buyers and the orders are unchanged.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Server, Setup, activity, settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use seckill_service::{AuthConfig, AuthMode, Components, JwtConfig, mint_token};
use serde_json::{Value, json};

const SECRET: &str = "the-test-secret-of-at-least-32-bytes";

fn jwt_config() -> AuthConfig {
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
    mint_token(&jwt_config(), sub, roles, Duration::from_secs(600)).unwrap()
}

fn admin() -> String {
    token("ops-1", &["seckill:admin"])
}

fn code(v: &Value) -> i64 {
    v["code"].as_i64().unwrap_or(-1)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs arbitrary claims with `key`.
fn signed(claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

async fn start(auth: AuthConfig) -> Server {
    Server::start_with(
        settings(),
        Setup {
            auth,
            ..Setup::default()
        },
        Components::embedded(),
    )
    .await
}

/// Stock, buyers and stored orders of a product must not move.
async fn assert_unchanged(s: &Server, product: u64, remaining: u64, buyers: u64) {
    let st = s.stats(product).await;
    assert_eq!(
        (st["remaining_stock"].as_u64(), st["buyers"].as_u64()),
        (Some(remaining), Some(buyers)),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_plane_needs_the_admin_role() {
    let s = start(jwt_config()).await;
    let buyer = token("7", &[]);
    let admin = admin();
    let routes: [(&str, &str, Value); 6] = [
        (
            "POST",
            "/api/v1/seckill/activity/prewarm",
            activity(5001, 10),
        ),
        ("POST", "/api/v1/system/degradation", json!({"mode": "on"})),
        ("GET", "/api/v1/system/rate-limit", Value::Null),
        (
            "POST",
            "/api/v1/system/rate-limit",
            json!({"enable": false}),
        ),
        ("GET", "/api/v1/system/stats", Value::Null),
        ("GET", "/metrics", Value::Null),
    ];
    for (method, path, body) in &routes {
        for (who, t, expect) in [
            ("anonymous", None, (401, 40101)),
            ("a buyer", Some(buyer.as_str()), (403, 40305)),
        ] {
            let mut r = if *method == "GET" {
                s.client.get(s.url(path))
            } else {
                s.client.post(s.url(path)).json(body)
            };
            if let Some(t) = t {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            if status == 401 {
                assert_eq!(
                    r.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer")
                );
            }
            let v: Value = r.json().await.unwrap();
            assert_eq!((status, code(&v)), expect, "{who} {method} {path}: {v}");
        }
    }
    // Nothing changed: the product was never loaded, degradation is off, the limit as configured.
    assert_eq!(s.get("/api/v1/seckill/stats/5001").await.0, 404);
    let (st, v) = s.get_as("/api/v1/system/stats", Some(&admin)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["degradation_mode"], "auto");
    // The admin role opens every route.
    let (st, v) = s.prewarm_as(&admin, activity(5001, 10)).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .post_as(
            "/api/v1/system/degradation",
            Some(&admin),
            json!({"mode": "off"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = s.get_as("/api/v1/system/rate-limit", Some(&admin)).await;
    assert_eq!(st, 200);
    // Roles may come from a space-separated scope too.
    let scoped = signed(
        &json!({"sub": "ops-2", "scope": "read seckill:admin", "exp": now() + 600}),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    );
    assert_eq!(s.get_as("/api/v1/system/stats", Some(&scoped)).await.0, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buyer_is_the_token_s_subject() {
    let s = start(jwt_config()).await;
    assert_eq!(s.prewarm_as(&admin(), activity(5002, 10)).await.0, 200);
    let a = token("1001", &[]);
    // No token: 401, nothing sold.
    let (st, v) = s
        .post(
            "/api/v1/seckill/purchase",
            json!({"product_id": 5002, "user_id": 1001}),
        )
        .await;
    assert_eq!((st, code(&v)), (401, 40101), "{v}");
    // A buying as B: 403.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5002, "user_id": 1002}),
        )
        .await;
    assert_eq!((st, code(&v)), (403, 40304), "{v}");
    // A token whose subject is not a buyer id cannot buy.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&admin()),
            json!({"product_id": 5002}),
        )
        .await;
    assert_eq!((st, code(&v)), (403, 40304), "{v}");
    assert_unchanged(&s, 5002, 10, 0).await;
    // A buys as A, with or without naming themselves.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5002}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["user_id"], 1001);
    let first = v["data"]["order_id"].clone();
    // Naming themselves: the same buyer, whose purchase again answers their order.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5002, "user_id": 1001}),
        )
        .await;
    assert_eq!((st, &v["data"]["order_id"]), (200, &first), "{v}");
    assert_unchanged(&s, 5002, 9, 1).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let s = start(jwt_config()).await;
    assert_eq!(s.prewarm_as(&admin(), activity(5003, 10)).await.0, 200);
    let hs = |secret: &str, claims: Value| {
        signed(
            &claims,
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"sub": "1001", "exp": now() + 600});
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let cases = [
        (
            "expired",
            hs(SECRET, json!({"sub": "1001", "exp": now() - 3600})),
        ),
        (
            "forged",
            hs("another-secret-of-at-least-32-bytes!", claims.clone()),
        ),
        ("alg none", none),
        ("malformed", "not-a-jwt".to_owned()),
        ("no exp", hs(SECRET, json!({"sub": "1001"}))),
        ("truncated", {
            let t = hs(SECRET, claims.clone());
            t[..t.len() - 4].to_owned()
        }),
    ];
    for (what, t) in cases {
        for (path, body) in [
            ("/api/v1/seckill/purchase", json!({"product_id": 5003})),
            ("/api/v1/seckill/activity/prewarm", activity(5004, 10)),
        ] {
            let (st, v) = s.post_as(path, Some(&t), body).await;
            assert_eq!((st, code(&v)), (401, 40101), "{what} at {path}: {v}");
        }
    }
    // Not a bearer token at all.
    let r = s
        .client
        .post(s.url("/api/v1/seckill/purchase"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"product_id": 5003}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_unchanged(&s, 5003, 10, 0).await;
    assert_eq!(s.get("/api/v1/seckill/stats/5004").await.0, 404);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_results_and_purchases_belong_to_their_buyer() {
    let s = start(jwt_config()).await;
    let (a, b) = (token("2001", &[]), token("2002", &[]));
    let payment = token("payments", &["seckill:payment"]);
    assert_eq!(s.prewarm_as(&admin(), activity(5005, 10)).await.0, 200);
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5005}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let order = v["data"]["order_id"].as_str().unwrap().to_owned();
    s.wait_orders(5005, 1).await;
    let path = format!("/api/v1/seckill/orders/{order}");
    // B learns nothing about A's order, cannot cancel or pay it.
    let (st, v) = s.get_as(&path, Some(&b)).await;
    assert_eq!((st, code(&v)), (404, 40402), "{v}");
    let (st, v) = s
        .post_as(&format!("{path}/cancel"), Some(&b), json!({}))
        .await;
    assert_eq!((st, code(&v)), (404, 40402), "{v}");
    let (st, v) = s.post_as(&format!("{path}/pay"), Some(&b), json!({})).await;
    assert_eq!((st, code(&v)), (403, 40305), "{v}");
    // A cannot pay either: paying is the payment service's call.
    let (st, v) = s.post_as(&format!("{path}/pay"), Some(&a), json!({})).await;
    assert_eq!((st, code(&v)), (403, 40305), "{v}");
    let (st, v) = s.get_as(&path, Some(&a)).await;
    assert_eq!(
        (st, v["data"]["status"].as_str()),
        (200, Some("awaiting_payment")),
        "{v}"
    );
    assert_unchanged(&s, 5005, 9, 1).await;
    // A cross-site form post is not JSON: refused before anything.
    let r = s
        .client
        .post(s.url(&format!("{path}/cancel")))
        .bearer_auth(&a)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Whether A bought: A or an operator may ask, with the order id; B may not.
    let purchased = "/api/v1/seckill/purchased/5005/2001";
    let (st, v) = s.get_as(purchased, Some(&a)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["purchased"], true);
    assert_eq!(v["data"]["order_id"], order.as_str());
    assert_eq!(s.get_as(purchased, Some(&admin())).await.0, 200);
    let (st, v) = s.get_as(purchased, Some(&b)).await;
    assert_eq!((st, code(&v)), (403, 40304), "{v}");
    // The payment service pays it.
    let (st, v) = s
        .post_as(&format!("{path}/pay"), Some(&payment), json!({}))
        .await;
    assert_eq!(
        (st, v["data"]["status"].as_str()),
        (200, Some("paid")),
        "{v}"
    );
    // An asynchronous purchase's result is B's alone.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase/async",
            Some(&b),
            json!({"product_id": 5005}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let result = format!(
        "/api/v1/seckill/result/{}",
        v["data"]["request_id"].as_str().unwrap()
    );
    let (st, v) = s.get_as(&result, Some(&a)).await;
    assert_eq!((st, code(&v)), (404, 40403), "{v}");
    assert_eq!(s.get_as(&result, Some(&b)).await.0, 200);
    assert_eq!(s.get_as(&result, None).await.0, 404);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_with_a_public_key_and_algorithm_swaps_are_refused() {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let private = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public = key.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let dir = std::env::temp_dir().join(seckill_test_support::unique("es256"));
    std::fs::create_dir_all(&dir).unwrap();
    let public_path = dir.join("public.pem");
    std::fs::write(&public_path, &public).unwrap();
    let s = start(AuthConfig {
        mode: AuthMode::Jwt,
        jwt: JwtConfig {
            public_key: Some(public_path),
            issuer: Some("https://id.example".into()),
            audience: Some("seckill".into()),
            ..JwtConfig::default()
        },
        ..AuthConfig::default()
    })
    .await;
    let es = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
    let claims = |sub: &str, roles: &[&str], iss: &str, aud: &str| json!({"sub": sub, "roles": roles, "iss": iss, "aud": aud, "exp": now() + 600});
    let admin = signed(
        &claims("ops", &["seckill:admin"], "https://id.example", "seckill"),
        Algorithm::ES256,
        &es,
    );
    assert_eq!(s.prewarm_as(&admin, activity(5006, 10)).await.0, 200);
    let buyer = signed(
        &claims("3001", &[], "https://id.example", "seckill"),
        Algorithm::ES256,
        &es,
    );
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&buyer),
            json!({"product_id": 5006}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // Another issuer or audience, or an HS256 token keyed with the public key: refused.
    let refused = [
        signed(
            &claims("3002", &[], "https://evil.example", "seckill"),
            Algorithm::ES256,
            &es,
        ),
        signed(
            &claims("3002", &[], "https://id.example", "other"),
            Algorithm::ES256,
            &es,
        ),
        signed(
            &claims("3002", &[], "https://id.example", "seckill"),
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()).unwrap(),
        ),
    ];
    for t in refused {
        let (st, v) = s
            .post_as(
                "/api/v1/seckill/purchase",
                Some(&t),
                json!({"product_id": 5006}),
            )
            .await;
        assert_eq!((st, code(&v)), (401, 40101), "{v}");
    }
    assert_unchanged(&s, 5006, 9, 1).await;
    s.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_none_admits_only_allowed_peers_to_the_admin_plane() {
    // The tests' requests come from 127.0.0.1, outside this list.
    let s = start(AuthConfig {
        admin_allow: vec!["10.0.0.0/8".into()],
        ..AuthConfig::default()
    })
    .await;
    let (st, v) = s.prewarm(activity(5007, 10)).await;
    assert_eq!((st, code(&v)), (403, 40305), "{v}");
    let (st, v) = s.get("/api/v1/system/stats").await;
    assert_eq!((st, code(&v)), (403, 40305), "{v}");
    let (st, v) = s
        .post("/api/v1/system/degradation", json!({"mode": "on"}))
        .await;
    assert_eq!((st, code(&v)), (403, 40305), "{v}");
    assert_eq!(
        s.get("/api/v1/seckill/stats/5007").await.0,
        404,
        "nothing loaded"
    );
    // Buyer routes stay open, naming the buyer in the body.
    assert_eq!(s.get("/health").await.0, 200);
    let (st, v) = s.purchase(5007, 1).await;
    assert_eq!((st, code(&v)), (404, 40401), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limits_are_keyed_on_the_authenticated_buyer() {
    let mut cfg = settings();
    cfg.rate_limit.per_user = seckill_service::KeyedLimit {
        enable: true,
        requests_per_second: seckill_test_support::nz(1),
        burst_size: seckill_test_support::nz(1),
    };
    let s = Server::start_with(
        cfg,
        Setup {
            auth: jwt_config(),
            ..Setup::default()
        },
        Components::embedded(),
    )
    .await;
    assert_eq!(s.prewarm_as(&admin(), activity(5008, 10)).await.0, 200);
    let a = token("4001", &[]);
    assert_eq!(
        s.post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5008})
        )
        .await
        .0,
        200
    );
    // The same buyer again: the per-user level refuses before the inventory is asked.
    let (st, v) = s
        .post_as(
            "/api/v1/seckill/purchase",
            Some(&a),
            json!({"product_id": 5008}),
        )
        .await;
    assert_eq!((st, code(&v)), (429, 42901), "{v}");
    // Another buyer is not limited by A's spending.
    let b = token("4002", &[]);
    assert_eq!(
        s.post_as(
            "/api/v1/seckill/purchase",
            Some(&b),
            json!({"product_id": 5008})
        )
        .await
        .0,
        200
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_port_the_admin_plane_leaves_the_public_listener() {
    use seckill_api::{App, ServerConfig};
    use seckill_service::{Service, ServiceConfig};
    let (service, pipeline) = Service::start(
        ServiceConfig {
            seckill: settings(),
            ..ServiceConfig::default()
        },
        Components::embedded(),
    )
    .await
    .unwrap();
    let app = App::new(
        service,
        pipeline,
        ServerConfig {
            admin_port: Some(0),
            ..ServerConfig::default()
        },
        None,
    );
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_url, admin_url) = (
        format!("http://{}", public.local_addr().unwrap()),
        format!("http://{}", admin.local_addr().unwrap()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(seckill_api::serve_with_admin(
        public,
        Some(admin),
        app,
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let prewarm = "/api/v1/seckill/activity/prewarm";
    let r = client
        .post(format!("{public_url}{prewarm}"))
        .json(&activity(5009, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "no admin route on the public port"
    );
    let r = client
        .get(format!("{public_url}/api/v1/system/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client
        .post(format!("{admin_url}{prewarm}"))
        .json(&activity(5009, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        client
            .get(format!("{admin_url}/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let r = client
        .post(format!("{public_url}/api/v1/seckill/purchase"))
        .json(&json!({"product_id": 5009, "user_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "buyers stay on the public port");
    let r = client
        .post(format!("{admin_url}/api/v1/seckill/purchase"))
        .json(&json!({"product_id": 5009, "user_id": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "and only there");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
