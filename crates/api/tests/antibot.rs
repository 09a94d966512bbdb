//! Purchase tokens and the proof-of-work challenge through real HTTP: with
//! `antibot.purchase_token` on, a purchase needs a valid, unused token bound to its buyer,
//! product and epoch; the challenge before the token costs the client CPU.

mod common;

use std::time::Duration;

use common::{Server, Setup, activity, settings};
use seckill_service::{AntibotConfig, ChallengeKind, Components, ProofOfWork};
use serde_json::{Value, json};

fn code(v: &Value) -> i64 {
    v["code"].as_i64().unwrap_or(-1)
}

async fn start(challenge: ChallengeKind) -> Server {
    Server::start_with(
        settings(),
        Setup {
            antibot: AntibotConfig {
                purchase_token: true,
                secret: Some("an-antibot-secret-for-tests".into()),
                token_ttl: Duration::from_secs(30),
                challenge,
                difficulty: 8,
                ..AntibotConfig::default()
            },
            ..Setup::default()
        },
        Components::embedded(),
    )
    .await
}

async fn get_token(s: &Server, product: u64, user: u64, extra: &str) -> (u16, Value) {
    s.get(&format!(
        "/api/v1/seckill/token/{product}?user_id={user}{extra}"
    ))
    .await
}

async fn buy(s: &Server, product: u64, user: u64, token: Option<&str>) -> (u16, Value) {
    let mut body = json!({"product_id": product, "user_id": user});
    if let Some(t) = token {
        body["purchase_token"] = json!(t);
    }
    s.post("/api/v1/seckill/purchase", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_needs_a_valid_unused_token_of_its_own() {
    let s = start(ChallengeKind::None).await;
    assert_eq!(s.prewarm(activity(6001, 10)).await.0, 200);
    assert_eq!(s.prewarm(activity(6002, 10)).await.0, 200);
    let (st, v) = get_token(&s, 6001, 1, "").await;
    assert_eq!(st, 200, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_owned();
    assert!(v["data"]["expires_at_ms"].as_i64().unwrap() > 0);
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for (what, user, product, t) in [
        ("no token", 1, 6001, None),
        ("a forged token", 1, 6001, Some(forged.as_str())),
        ("another buyer's token", 2, 6001, Some(token.as_str())),
        ("another product's token", 1, 6002, Some(token.as_str())),
        ("garbage", 1, 6001, Some("v1.x.y")),
    ] {
        let (st, v) = buy(&s, product, user, t).await;
        assert_eq!((st, code(&v)), (403, 40306), "{what}: {v}");
    }
    assert_eq!(s.stats(6001).await["sold"], 0);
    assert_eq!(s.stats(6002).await["sold"], 0);
    // The right one sells once; used again it is refused.
    let (st, v) = buy(&s, 6001, 1, Some(&token)).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = buy(&s, 6001, 1, Some(&token)).await;
    assert_eq!((st, code(&v)), (403, 40306), "a reused token: {v}");
    assert_eq!(s.stats(6001).await["sold"], 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_issued_from_the_sale_s_start_only() {
    let s = start(ChallengeKind::None).await;
    let now = chrono::Utc::now();
    let mut later = activity(6003, 10);
    later["start_time"] = json!((now + chrono::Duration::hours(1)).to_rfc3339());
    later["end_time"] = json!((now + chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(s.prewarm(later).await.0, 200);
    let (st, v) = get_token(&s, 6003, 1, "").await;
    assert_eq!((st, code(&v)), (403, 40302), "{v}");
    let (st, v) = get_token(&s, 6099, 1, "").await;
    assert_eq!((st, code(&v)), (404, 40401), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_of_work_comes_before_the_token() {
    let s = start(ChallengeKind::Pow).await;
    assert_eq!(s.prewarm(activity(6004, 10)).await.0, 200);
    // No answer: no token.
    let (st, v) = get_token(&s, 6004, 1, "").await;
    assert_eq!((st, code(&v)), (403, 40306), "{v}");
    let (st, v) = s.get("/api/v1/seckill/challenge/6004?user_id=1").await;
    assert_eq!(st, 200, "{v}");
    let challenge = v["data"]["challenge"].as_str().unwrap().to_owned();
    let difficulty = v["data"]["difficulty"].as_u64().unwrap() as u8;
    assert_eq!(difficulty, 8);
    // A wrong solution is refused.
    let (st, _) = get_token(
        &s,
        6004,
        1,
        &format!("&challenge={challenge}&solution=nope"),
    )
    .await;
    assert_eq!(st, 403);
    let solution = ProofOfWork::solve(&challenge, difficulty);
    let answer = format!("&challenge={challenge}&solution={solution}");
    // Another buyer cannot use it.
    let (st, _) = get_token(&s, 6004, 2, &answer).await;
    assert_eq!(st, 403);
    let (st, v) = get_token(&s, 6004, 1, &answer).await;
    assert_eq!(st, 200, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_owned();
    // The challenge is used up.
    assert_eq!(get_token(&s, 6004, 1, &answer).await.0, 403);
    assert_eq!(buy(&s, 6004, 1, Some(&token)).await.0, 200);
    s.shutdown().await;
}
