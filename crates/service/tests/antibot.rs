//! The anti-bot guard: purchase tokens (each refusal with its variant), the proof of work, and
//! the ledger contract run against every implementation.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use seckill_service::{
    Antibot, AntibotConfig, Challenge, ChallengeAnswer, ChallengeKind, ChallengeRefusal,
    LedgerError, MemoryLedger, ProofOfWork, PurchaseTokens, TokenLedger, TokenRefusal,
};

const SECRET: &str = "test secret, 16 bytes or more";
const START: i64 = 1_700_000_000_000;
const BUYER: u64 = 2001;
const PRODUCT: u64 = 1001;
const EPOCH: u64 = 7;

fn config() -> AntibotConfig {
    AntibotConfig {
        purchase_token: true,
        secret: Some(SECRET.into()),
        ..AntibotConfig::default()
    }
}

fn pow_config(difficulty: u8) -> AntibotConfig {
    AntibotConfig {
        challenge: ChallengeKind::Pow,
        difficulty,
        ..config()
    }
}

fn memory() -> Arc<dyn TokenLedger> {
    Arc::new(MemoryLedger::default())
}

fn antibot(config: &AntibotConfig) -> Antibot {
    Antibot::new(config, memory()).expect("valid config")
}

/// A token for the test's buyer, product and epoch, issued at the sale's start.
async fn token(a: &Antibot) -> String {
    a.issue(BUYER, PRODUCT, EPOCH, START, None, START)
        .await
        .expect("open")
        .expect("tokens on")
        .token
}

async fn redeem(a: &Antibot, token: Option<&str>, now: i64) -> Result<(), TokenRefusal> {
    a.redeem(token, BUYER, PRODUCT, EPOCH, now).await
}

#[tokio::test]
async fn off_by_default_requires_and_issues_nothing() {
    let a = Antibot::new(&AntibotConfig::default(), memory()).unwrap();
    assert!(!a.requires_token());
    assert!(a.challenge().is_none());
    assert_eq!(a.issue_challenge(BUYER, PRODUCT, START), None);
    assert_eq!(
        a.issue(BUYER, PRODUCT, EPOCH, START, None, START).await,
        Ok(None)
    );
    assert_eq!(redeem(&a, None, START).await, Ok(()));
    assert_eq!(redeem(&a, Some("garbage"), START).await, Ok(()));
    assert!(!Antibot::disabled().requires_token());
}

#[tokio::test]
async fn an_invalid_config_builds_no_guard() {
    let no_secret = AntibotConfig {
        secret: None,
        ..config()
    };
    assert_eq!(
        Antibot::new(&no_secret, memory()).unwrap_err().key,
        "secret"
    );
}

#[tokio::test]
async fn a_valid_token_redeems_once() {
    let a = antibot(&config());
    assert!(a.requires_token());
    let t = token(&a).await;
    assert_eq!(redeem(&a, Some(&t), START + 1_000).await, Ok(()));
    assert_eq!(
        redeem(&a, Some(&t), START + 2_000).await,
        Err(TokenRefusal::AlreadyUsed)
    );
}

#[tokio::test]
async fn no_token_is_missing() {
    let a = antibot(&config());
    assert_eq!(redeem(&a, None, START).await, Err(TokenRefusal::Missing));
    assert_eq!(
        redeem(&a, Some(""), START).await,
        Err(TokenRefusal::Missing)
    );
}

#[tokio::test]
async fn a_forged_mac_is_a_bad_signature() {
    let a = antibot(&config());
    let t = token(&a).await;
    let mut forged = t.into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        redeem(&a, Some(&forged), START).await,
        Err(TokenRefusal::BadSignature)
    );
}

#[tokio::test]
async fn a_token_of_another_service_is_a_bad_signature() {
    let other = antibot(&AntibotConfig {
        secret: Some("another secret of 16+ bytes".into()),
        ..config()
    });
    let t = token(&other).await;
    assert_eq!(
        redeem(&antibot(&config()), Some(&t), START).await,
        Err(TokenRefusal::BadSignature)
    );
}

#[tokio::test]
async fn an_edited_binding_is_a_bad_signature() {
    let a = antibot(&config());
    let t = token(&a).await;
    let edited = t.replacen(&format!("v1.{BUYER}."), "v1.2002.", 1);
    assert_ne!(edited, t);
    assert_eq!(
        a.redeem(Some(&edited), 2002, PRODUCT, EPOCH, START).await,
        Err(TokenRefusal::BadSignature)
    );
}

#[tokio::test]
async fn a_token_for_another_product_buyer_or_epoch_is_refused() {
    let a = antibot(&config());
    let t = token(&a).await;
    for (buyer, product, epoch) in [
        (BUYER, PRODUCT + 1, EPOCH),
        (BUYER + 1, PRODUCT, EPOCH),
        (BUYER, PRODUCT, EPOCH + 1),
    ] {
        assert_eq!(
            a.redeem(Some(&t), buyer, product, epoch, START).await,
            Err(TokenRefusal::WrongBinding),
            "{buyer} {product} {epoch}"
        );
    }
    // The refusals did not use the token up.
    assert_eq!(redeem(&a, Some(&t), START).await, Ok(()));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let a = antibot(&config());
    let issued = a
        .issue(BUYER, PRODUCT, EPOCH, START, None, START)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(issued.expires_at_ms, START + 30_000, "token_ttl 30s");
    assert_eq!(
        redeem(&a, Some(&issued.token), issued.expires_at_ms).await,
        Err(TokenRefusal::Expired)
    );
    assert_eq!(
        redeem(&a, Some(&issued.token), issued.expires_at_ms - 1).await,
        Ok(())
    );
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let a = antibot(&config());
    let t = token(&a).await;
    for bad in [
        "x".to_owned(),
        "v1".to_owned(),
        "v1.1.2.3.4.5.6".to_owned(),
        t.replacen("v1.", "v2.", 1),
        format!("{t}.extra"),
        "é".repeat(1_000),
        "\0".repeat(10),
        ".".repeat(6),
    ] {
        assert_eq!(
            redeem(&a, Some(&bad), START).await,
            Err(TokenRefusal::Malformed),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn tokens_are_issued_from_the_start_less_the_lead_time() {
    let a = antibot(&config());
    assert_eq!(
        a.issue(BUYER, PRODUCT, EPOCH, START, None, START - 1).await,
        Err(TokenRefusal::NotYetOpen { opens_at_ms: START })
    );
    let early = antibot(&AntibotConfig {
        lead_time: Duration::from_secs(5),
        ..config()
    });
    assert!(
        early
            .issue(BUYER, PRODUCT, EPOCH, START, None, START - 5_000)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        early
            .issue(BUYER, PRODUCT, EPOCH, START, None, START - 5_001)
            .await,
        Err(TokenRefusal::NotYetOpen {
            opens_at_ms: START - 5_000
        })
    );
    let tokens = PurchaseTokens::new(&config(), memory()).unwrap();
    assert_eq!(
        tokens.issue(BUYER, PRODUCT, EPOCH, START, START - 1),
        Err(TokenRefusal::NotYetOpen { opens_at_ms: START })
    );
}

#[test]
fn refusals_are_final_but_an_unavailable_ledger_is_transient() {
    assert!(!TokenRefusal::AlreadyUsed.is_transient());
    assert!(!TokenRefusal::Challenge(ChallengeRefusal::WrongSolution).is_transient());
    let down = LedgerError::Backend("down".into());
    assert!(TokenRefusal::Unavailable(down.clone()).is_transient());
    assert!(TokenRefusal::Challenge(ChallengeRefusal::Unavailable(down)).is_transient());
}

/// A ledger that always fails: the guard answers "unavailable", never "refused" or "ok".
struct Down;

#[async_trait::async_trait]
impl TokenLedger for Down {
    async fn consume(&self, _: &str, _: Duration) -> Result<bool, LedgerError> {
        Err(LedgerError::Backend("connection refused".into()))
    }
}

#[tokio::test]
async fn a_failing_ledger_is_unavailable() {
    let a = Antibot::new(&config(), Arc::new(Down)).unwrap();
    let t = token(&a).await;
    let r = redeem(&a, Some(&t), START).await;
    assert!(matches!(r, Err(TokenRefusal::Unavailable(_))), "{r:?}");
    assert!(r.unwrap_err().is_transient());
}

// The proof of work.

#[tokio::test]
async fn a_solved_challenge_earns_a_token_once() {
    let a = antibot(&pow_config(8));
    let c = a.issue_challenge(BUYER, PRODUCT, START).expect("pow on");
    assert_eq!(c.difficulty, 8);
    assert_eq!(c.expires_at_ms, START + 60_000, "challenge_ttl 60s");
    let solution = ProofOfWork::solve(&c.challenge, c.difficulty);
    let answer = ChallengeAnswer {
        challenge: &c.challenge,
        solution: &solution,
    };
    let t = a
        .issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeem(&a, Some(&t.token), START + 20).await, Ok(()));
    assert_eq!(
        a.issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START + 30)
            .await,
        Err(TokenRefusal::Challenge(ChallengeRefusal::AlreadyUsed))
    );
    assert_eq!(
        a.issue(BUYER, PRODUCT, EPOCH, START, None, START).await,
        Err(TokenRefusal::Challenge(ChallengeRefusal::Missing))
    );
}

#[tokio::test]
async fn a_challenge_is_not_used_up_before_the_sale_opens() {
    let a = antibot(&pow_config(8));
    let c = a.issue_challenge(BUYER, PRODUCT, START - 10_000).unwrap();
    let solution = ProofOfWork::solve(&c.challenge, c.difficulty);
    let answer = ChallengeAnswer {
        challenge: &c.challenge,
        solution: &solution,
    };
    assert_eq!(
        a.issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START - 1)
            .await,
        Err(TokenRefusal::NotYetOpen { opens_at_ms: START })
    );
    assert!(
        a.issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn wrong_solutions_and_reused_challenges_are_refused() {
    let pow = ProofOfWork::new(&pow_config(8), memory()).unwrap();
    let c = loop {
        let c = pow.issue(BUYER, PRODUCT, START);
        match pow
            .verify(&c.challenge, "wrong", BUYER, PRODUCT, START)
            .await
        {
            Err(ChallengeRefusal::WrongSolution) => break c,
            // One challenge in 256 is solved by "wrong": take another.
            Ok(()) => {}
            other => panic!("{other:?}"),
        }
    };
    let right = ProofOfWork::solve(&c.challenge, 8);
    let right = right.as_str();
    let verify = async |solution: &str, buyer, product, now| {
        pow.verify(&c.challenge, solution, buyer, product, now)
            .await
    };
    assert_eq!(
        verify(right, BUYER + 1, PRODUCT, START).await,
        Err(ChallengeRefusal::WrongBinding)
    );
    assert_eq!(
        verify(right, BUYER, PRODUCT + 1, START).await,
        Err(ChallengeRefusal::WrongBinding)
    );
    assert_eq!(
        verify(right, BUYER, PRODUCT, c.expires_at_ms).await,
        Err(ChallengeRefusal::Expired)
    );
    assert_eq!(verify(right, BUYER, PRODUCT, START).await, Ok(()), "once");
    assert_eq!(
        verify(right, BUYER, PRODUCT, START).await,
        Err(ChallengeRefusal::AlreadyUsed)
    );
    assert_eq!(
        verify("wrong", BUYER, PRODUCT, START).await,
        Err(ChallengeRefusal::WrongSolution),
        "the solution is checked before the single use"
    );
    let mut forged = c.challenge.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        pow.verify(&forged, right, BUYER, PRODUCT, START).await,
        Err(ChallengeRefusal::BadSignature)
    );
    assert_eq!(
        pow.verify("not a challenge", right, BUYER, PRODUCT, START)
            .await,
        Err(ChallengeRefusal::Malformed)
    );
}

#[tokio::test]
async fn a_token_is_not_a_challenge_nor_a_challenge_a_token() {
    let a = antibot(&pow_config(8));
    let t = a
        .tokens()
        .unwrap()
        .issue(BUYER, PRODUCT, EPOCH, START, START)
        .unwrap();
    let pow = a.challenge().unwrap();
    let as_challenge = pow
        .verify(&t.token, "0", BUYER, PRODUCT, START)
        .await
        .unwrap_err();
    assert_eq!(as_challenge, ChallengeRefusal::Malformed);
    let c = a.issue_challenge(BUYER, PRODUCT, START).unwrap();
    assert_eq!(
        redeem(&a, Some(&c.challenge), START).await,
        Err(TokenRefusal::Malformed)
    );
}

// The ledger contract, against every implementation.

/// What every [`TokenLedger`] guarantees: one first use per id, ids independent.
async fn ledger_contract(ledger: &dyn TokenLedger) -> Vec<String> {
    let ids: Vec<String> = (0..3).map(|i| format!("contract-{i}")).collect();
    let ttl = Duration::from_secs(60);
    assert_eq!(ledger.consume(&ids[0], ttl).await, Ok(true));
    assert_eq!(ledger.consume(&ids[0], ttl).await, Ok(false));
    assert_eq!(ledger.consume(&ids[1], ttl).await, Ok(true));
    // Concurrent first uses of one id: exactly one wins.
    let firsts = first_uses(ledger, &ids[2], ttl).await;
    assert_eq!(firsts, 1, "exactly one first use");
    ids
}

async fn first_uses(ledger: &dyn TokenLedger, id: &str, ttl: Duration) -> usize {
    let (a, b, c, d) = tokio::join!(
        ledger.consume(id, ttl),
        ledger.consume(id, ttl),
        ledger.consume(id, ttl),
        ledger.consume(id, ttl),
    );
    [a, b, c, d]
        .into_iter()
        .filter(|r| *r.as_ref().expect("ledger answers"))
        .count()
}

#[tokio::test]
async fn the_memory_ledger_keeps_the_contract() {
    ledger_contract(&MemoryLedger::default()).await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_ledger_forgets_ids_after_their_ttl() {
    let l = MemoryLedger::default();
    assert_eq!(l.consume("a", Duration::from_secs(5)).await, Ok(true));
    assert_eq!(l.consume("b", Duration::from_secs(10)).await, Ok(true));
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert_eq!(l.consume("a", Duration::from_secs(5)).await, Ok(false));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(l.len(), 1, "a expired, b not");
    assert_eq!(l.consume("b", Duration::from_secs(10)).await, Ok(false));
    assert_eq!(l.consume("a", Duration::from_secs(5)).await, Ok(true));
}

#[tokio::test(start_paused = true)]
async fn a_full_memory_ledger_refuses_rather_than_grows() {
    let l = MemoryLedger::new(NonZeroUsize::new(2).unwrap());
    let ttl = Duration::from_secs(10);
    assert_eq!(l.consume("a", ttl).await, Ok(true));
    assert_eq!(l.consume("b", ttl).await, Ok(true));
    assert_eq!(
        l.consume("c", ttl).await,
        Err(LedgerError::Full { capacity: 2 })
    );
    assert_eq!(
        l.consume("a", ttl).await,
        Ok(false),
        "used ids still answer"
    );
    assert_eq!(l.len(), 2);
    tokio::time::advance(ttl).await;
    assert_eq!(l.consume("c", ttl).await, Ok(true), "room after expiry");

    // Through the guard, a full ledger is a transient failure, not a refusal.
    let a = Antibot::new(
        &config(),
        Arc::new(MemoryLedger::new(NonZeroUsize::new(1).unwrap())),
    )
    .unwrap();
    let (t1, t2) = (token(&a).await, token(&a).await);
    assert_eq!(redeem(&a, Some(&t1), START).await, Ok(()));
    assert_eq!(
        redeem(&a, Some(&t2), START).await,
        Err(TokenRefusal::Unavailable(LedgerError::Full { capacity: 1 }))
    );
}

/// A used token's id is remembered until its expiry and a little beyond (clock skew between
/// instances), and no longer.
#[tokio::test(start_paused = true)]
async fn a_used_token_is_remembered_past_its_expiry_only() {
    let l = Arc::new(MemoryLedger::default());
    let a = Antibot::new(&config(), l.clone()).unwrap();
    let t = token(&a).await;
    assert_eq!(redeem(&a, Some(&t), START + 20_000).await, Ok(()));
    assert_eq!(l.len(), 1);
    // 10 s left on the token, plus the 5 s of skew.
    tokio::time::advance(Duration::from_millis(14_999)).await;
    assert_eq!(l.len(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(l.is_empty());
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use seckill_inventory::{RedisClient, RedisConfig};
    use seckill_service::RedisLedger;

    const NEED_REDIS: &str =
        "these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it";

    async fn client() -> RedisClient {
        RedisClient::connect(&RedisConfig {
            host: "127.0.0.1".into(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
            ..RedisConfig::default()
        })
        .await
        .expect(NEED_REDIS)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_ledger_keeps_the_contract() {
        let prefix = seckill_test_support::unique("antibot");
        let ledger = RedisLedger::new(client().await, &prefix);
        let ids = ledger_contract(&ledger).await;
        let keys: Vec<String> = ids.iter().map(|id| ledger.key(id)).collect();
        assert_eq!(client().await.delete(&keys).await.unwrap(), 3);
    }

    /// Two instances sharing a prefix see each other's tokens and challenges used; another
    /// prefix is another ledger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_sharing_a_prefix_share_single_use() {
        let prefix = seckill_test_support::unique("antibot");
        let (ca, cb) = (client().await, client().await);
        let (la, lb) = (
            Arc::new(RedisLedger::new(ca, &prefix)),
            Arc::new(RedisLedger::new(cb, &prefix)),
        );
        let a = Antibot::new(&pow_config(8), la.clone()).unwrap();
        let b = Antibot::new(&pow_config(8), lb.clone()).unwrap();

        // A token issued and redeemed on a is used on b.
        let c = a.issue_challenge(BUYER, PRODUCT, START).unwrap();
        let solution = ProofOfWork::solve(&c.challenge, c.difficulty);
        let answer = ChallengeAnswer {
            challenge: &c.challenge,
            solution: &solution,
        };
        let t = a
            .issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START)
            .await
            .unwrap()
            .unwrap();
        // The challenge answered on a is used on b.
        assert_eq!(
            b.issue(BUYER, PRODUCT, EPOCH, START, Some(answer), START)
                .await,
            Err(TokenRefusal::Challenge(ChallengeRefusal::AlreadyUsed))
        );
        assert_eq!(redeem(&a, Some(&t.token), START).await, Ok(()));
        assert_eq!(
            redeem(&b, Some(&t.token), START).await,
            Err(TokenRefusal::AlreadyUsed)
        );

        // Raw ids, both ways round.
        assert_eq!(
            lb.consume("shared", Duration::from_secs(60)).await,
            Ok(true)
        );
        assert_eq!(
            la.consume("shared", Duration::from_secs(60)).await,
            Ok(false)
        );
        let other = RedisLedger::new(client().await, &format!("{prefix}_other"));
        assert_eq!(
            other.consume("shared", Duration::from_secs(60)).await,
            Ok(true)
        );

        // Clean up: the challenge's, the token's and the raw ids' keys.
        let nonce = |s: &str| s.split('.').nth(5).unwrap().to_owned();
        let keys = vec![
            la.key(&format!("c:{}", nonce(&c.challenge))),
            la.key(&format!("t:{}", nonce(&t.token))),
            la.key("shared"),
            other.key("shared"),
        ];
        assert_eq!(client().await.delete(&keys).await.unwrap(), 4);
    }
}
