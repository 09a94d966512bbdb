//! [`ProofOfWork`]: a hashcash-style [`Challenge`], with its reference solver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::challenge::{Challenge, ChallengeRefusal, IssuedChallenge};
use super::config::{AntibotConfig, MAX_DIFFICULTY, millis};
use super::ledger::TokenLedger;
use super::signed::{OpenError, Signer};
use super::token::CLOCK_SKEW;
use crate::settings::ConfigError;

/// The tag, and the version, of proof-of-work challenges.
const TAG: &str = "pow1";
/// Longest solution looked at, in bytes.
const MAX_SOLUTION_LEN: usize = 64;

/// A proof of work: the challenge `pow1.<buyer>.<product>.<difficulty>.<expires_at_ms>.<nonce>.<mac>`
/// is solved by any string `solution` (up to 64 bytes) such that SHA-256(challenge ‖ solution),
/// over their UTF-8 bytes, starts with at least `difficulty` zero bits. Finding one takes
/// 2^difficulty hashes on average; checking it, one. Each challenge is accepted once, through
/// the ledger. Cloning is cheap.
#[derive(Clone)]
pub struct ProofOfWork {
    signer: Signer,
    difficulty: u8,
    ttl_ms: i64,
    ledger: Arc<dyn TokenLedger>,
}

impl fmt::Debug for ProofOfWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofOfWork")
            .field("difficulty", &self.difficulty)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl ProofOfWork {
    /// Challenges signed with `config.secret`, of `config.difficulty`, valid for
    /// `challenge_ttl`, single-use through `ledger` (whatever `config.challenge` says).
    ///
    /// # Errors
    /// An invalid `config`, or one without a secret.
    pub fn new(config: &AntibotConfig, ledger: Arc<dyn TokenLedger>) -> Result<Self, ConfigError> {
        Ok(Self {
            signer: Signer::new(config.secret_bytes()?, TAG),
            difficulty: config.difficulty,
            ttl_ms: millis(config.challenge_ttl),
            ledger,
        })
    }

    /// The leading zero bits new challenges ask for.
    pub fn difficulty(&self) -> u8 {
        self.difficulty
    }

    /// Finds a solution to a proof-of-work `challenge` of `difficulty` bits: the first
    /// decimal counter from 0 that solves it. The reference a client implements (and what
    /// tests use); it takes 2^difficulty hashes on average, so it is for clients and small
    /// difficulties.
    pub fn solve(challenge: &str, difficulty: u8) -> String {
        let prefix = Sha256::new().chain_update(challenge);
        (0u64..)
            .find(|n| {
                let hash = prefix.clone().chain_update(n.to_string()).finalize();
                leading_zero_bits(&hash) >= u32::from(difficulty)
            })
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Challenge for ProofOfWork {
    fn issue(&self, buyer: u64, product: u64, now_ms: i64) -> IssuedChallenge {
        let expires_at_ms = now_ms.max(0).saturating_add(self.ttl_ms);
        IssuedChallenge {
            challenge: self
                .signer
                .sign([buyer, product, u64::from(self.difficulty)], expires_at_ms),
            difficulty: self.difficulty,
            expires_at_ms,
        }
    }

    /// Checks, in this order: the solution's length, the challenge's shape, its MAC (in
    /// constant time), its binding, its expiry, the solution, then its single use (a wrong
    /// solution does not use the challenge up).
    async fn verify(
        &self,
        challenge: &str,
        solution: &str,
        buyer: u64,
        product: u64,
        now_ms: i64,
    ) -> Result<(), ChallengeRefusal> {
        if solution.len() > MAX_SOLUTION_LEN {
            return Err(ChallengeRefusal::Malformed);
        }
        let opened = self.signer.open(challenge).map_err(|e| match e {
            OpenError::Malformed => ChallengeRefusal::Malformed,
            OpenError::BadSignature => ChallengeRefusal::BadSignature,
        })?;
        let [b, p, difficulty] = opened.fields;
        if (b, p) != (buyer, product) {
            return Err(ChallengeRefusal::WrongBinding);
        }
        // Signed by us, so within range; the check only keeps a future bug from asking nothing.
        let difficulty = u8::try_from(difficulty)
            .ok()
            .filter(|d| (1..=MAX_DIFFICULTY).contains(d))
            .ok_or(ChallengeRefusal::Malformed)?;
        if now_ms >= opened.expires_at_ms {
            return Err(ChallengeRefusal::Expired);
        }
        if !solves(challenge, solution, difficulty) {
            return Err(ChallengeRefusal::WrongSolution);
        }
        let left = Duration::from_millis(opened.expires_at_ms.abs_diff(now_ms));
        match self
            .ledger
            .consume(&format!("c:{}", opened.nonce), left + CLOCK_SKEW)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ChallengeRefusal::AlreadyUsed),
            Err(e) => Err(ChallengeRefusal::Unavailable(e)),
        }
    }
}

/// Whether SHA-256(challenge ‖ solution) starts with at least `difficulty` zero bits.
fn solves(challenge: &str, solution: &str, difficulty: u8) -> bool {
    let hash = Sha256::new()
        .chain_update(challenge)
        .chain_update(solution)
        .finalize();
    leading_zero_bits(&hash) >= u32::from(difficulty)
}

fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut bits = 0;
    for b in bytes {
        bits += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::antibot::MemoryLedger;

    const NOW: i64 = 1_700_000_000_000;

    fn pow(difficulty: u8) -> ProofOfWork {
        let config = AntibotConfig {
            purchase_token: true,
            secret: Some("0123456789abcdef0123".into()),
            challenge: crate::ChallengeKind::Pow,
            difficulty,
            ..AntibotConfig::default()
        };
        ProofOfWork::new(&config, Arc::new(MemoryLedger::default())).unwrap()
    }

    #[test]
    fn leading_zero_bits_count_across_bytes() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0, 0, 0x10, 0]), 19);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    #[test]
    fn a_solution_meets_its_difficulty() {
        for difficulty in [1, 4, 8, 12] {
            let c = pow(difficulty).issue(1, 2, NOW);
            assert_eq!(c.difficulty, difficulty);
            let s = ProofOfWork::solve(&c.challenge, difficulty);
            assert!(solves(&c.challenge, &s, difficulty));
        }
    }

    #[tokio::test]
    async fn a_wrong_solution_does_not_use_the_challenge_up() {
        let p = pow(8);
        let c = p.issue(1, 2, NOW);
        let right = ProofOfWork::solve(&c.challenge, 8);
        let wrong = (0u64..)
            .map(|n| n.to_string())
            .find(|s| !solves(&c.challenge, s, 8))
            .unwrap();
        assert_eq!(
            p.verify(&c.challenge, &wrong, 1, 2, NOW).await,
            Err(ChallengeRefusal::WrongSolution)
        );
        assert_eq!(p.verify(&c.challenge, &right, 1, 2, NOW).await, Ok(()));
        let long = "0".repeat(MAX_SOLUTION_LEN + 1);
        assert_eq!(
            p.verify(&c.challenge, &long, 1, 2, NOW).await,
            Err(ChallengeRefusal::Malformed)
        );
    }
}
