//! [`Challenge`]: what a buyer passes before a purchase token is issued.

use async_trait::async_trait;

use super::ledger::LedgerError;

/// A challenge handed to a buyer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedChallenge {
    /// The challenge, URL-safe ASCII, answered as it is.
    pub challenge: String,
    /// Leading zero bits the answer must reach (for a proof of work).
    pub difficulty: u8,
    /// When it stops being accepted (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// Why a challenge's answer was not accepted. Every variant but
/// [`Unavailable`](Self::Unavailable) is a refusal; `Unavailable` is a failure to decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeRefusal {
    /// No challenge or no solution was given.
    #[error("no challenge answered")]
    Missing,
    /// Not a challenge: wrong shape, version or encoding, or an oversized solution.
    #[error("malformed challenge")]
    Malformed,
    /// Shaped like a challenge, but not signed with this service's secret.
    #[error("challenge signature mismatch")]
    BadSignature,
    /// A genuine challenge issued to another buyer or for another product.
    #[error("challenge issued for another buyer or product")]
    WrongBinding,
    /// A genuine challenge past its expiry.
    #[error("challenge expired")]
    Expired,
    /// The solution does not solve the challenge.
    #[error("wrong challenge solution")]
    WrongSolution,
    /// A genuine challenge already answered.
    #[error("challenge already used")]
    AlreadyUsed,
    /// The single-use ledger could not tell whether the challenge was used.
    #[error("challenge ledger unavailable")]
    Unavailable(#[source] LedgerError),
}

impl ChallengeRefusal {
    /// Whether this is a failure to decide (retry later) rather than a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A challenge a buyer must pass before a purchase token is issued, so that every attempt
/// costs a bot something.
///
/// Implementations must guarantee that [`verify`](Self::verify) accepts only what
/// [`issue`](Self::issue) issued to the same buyer for the same product, before its expiry,
/// with a correct solution, and each issued challenge at most once across every instance
/// sharing the implementation's ledger; and that neither panics, whatever the input.
#[async_trait]
pub trait Challenge: Send + Sync {
    /// A fresh challenge for `buyer` buying `product`, from `now_ms` (Unix milliseconds).
    fn issue(&self, buyer: u64, product: u64, now_ms: i64) -> IssuedChallenge;

    /// Accepts `solution` to `challenge` from `buyer` for `product`, once.
    ///
    /// # Errors
    /// Why it is not accepted; [`ChallengeRefusal::Unavailable`] when the ledger fails.
    async fn verify(
        &self,
        challenge: &str,
        solution: &str,
        buyer: u64,
        product: u64,
        now_ms: i64,
    ) -> Result<(), ChallengeRefusal>;
}
