//! [`PurchaseTokens`]: signed, short-lived, single-use purchase tokens.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::challenge::ChallengeRefusal;
use super::config::{AntibotConfig, millis};
use super::ledger::{LedgerError, TokenLedger};
use super::signed::{OpenError, Signer};
use crate::settings::ConfigError;

/// The tag, and the version, of purchase tokens.
const TAG: &str = "v1";

/// How long a used token's id is remembered beyond its expiry: instances whose clocks run
/// this much behind the redeeming one still see it used.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// A purchase token handed to a buyer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    /// The token: `v1.<buyer>.<product>.<epoch>.<expires_at_ms>.<nonce>.<mac>`, URL-safe ASCII.
    pub token: String,
    /// When it stops being accepted (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// Why a purchase token was not issued or not accepted. Every variant but
/// [`Unavailable`](Self::Unavailable) is a refusal (a front answers 403); `Unavailable` is a
/// failure to decide (a front answers "try again", 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// The purchase carried no token.
    #[error("no purchase token")]
    Missing,
    /// Not a token: wrong shape, version or encoding.
    #[error("malformed purchase token")]
    Malformed,
    /// Shaped like a token, but not signed with this service's secret.
    #[error("purchase token signature mismatch")]
    BadSignature,
    /// A genuine token for another buyer, product or activity epoch.
    #[error("purchase token issued for another buyer, product or activity")]
    WrongBinding,
    /// A genuine token past its expiry.
    #[error("purchase token expired")]
    Expired,
    /// A genuine token already redeemed.
    #[error("purchase token already used")]
    AlreadyUsed,
    /// Tokens for this sale are not issued yet.
    #[error("purchase tokens not issued before {opens_at_ms}")]
    NotYetOpen {
        /// From when they are (Unix milliseconds): the sale's start less the lead time.
        opens_at_ms: i64,
    },
    /// The challenge before the token was not passed.
    #[error("challenge not passed")]
    Challenge(#[source] ChallengeRefusal),
    /// The single-use ledger could not tell whether the token was used.
    #[error("purchase token ledger unavailable")]
    Unavailable(#[source] LedgerError),
}

impl TokenRefusal {
    /// Whether this is a failure to decide (retry later) rather than a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Challenge(c) => c.is_transient(),
            _ => false,
        }
    }
}

/// Issues and redeems purchase tokens: HMAC-SHA256 signed, bound to a buyer, a product and an
/// activity epoch, valid for `token_ttl`, each redeemed at most once across every instance
/// sharing the ledger. Cloning is cheap.
#[derive(Clone)]
pub struct PurchaseTokens {
    signer: Signer,
    ttl_ms: i64,
    lead_ms: i64,
    ledger: Arc<dyn TokenLedger>,
}

impl fmt::Debug for PurchaseTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurchaseTokens")
            .field("ttl_ms", &self.ttl_ms)
            .field("lead_ms", &self.lead_ms)
            .finish_non_exhaustive()
    }
}

impl PurchaseTokens {
    /// Tokens signed with `config.secret`, valid for `token_ttl`, issued from `lead_time`
    /// before a sale's start, single-use through `ledger` (whether `purchase_token` is on or
    /// not).
    ///
    /// # Errors
    /// An invalid `config`, or one without a secret.
    pub fn new(config: &AntibotConfig, ledger: Arc<dyn TokenLedger>) -> Result<Self, ConfigError> {
        Ok(Self {
            signer: Signer::new(config.secret_bytes()?, TAG),
            ttl_ms: millis(config.token_ttl),
            lead_ms: millis(config.lead_time),
            ledger,
        })
    }

    /// When tokens for a sale starting at `sale_start_ms` are first issued.
    pub fn opens_at_ms(&self, sale_start_ms: i64) -> i64 {
        sale_start_ms.saturating_sub(self.lead_ms)
    }

    /// A fresh token for `buyer` to buy `product` in the activity's `epoch`, valid from
    /// `now_ms` for the token lifetime. Times are Unix milliseconds.
    ///
    /// # Errors
    /// [`TokenRefusal::NotYetOpen`] before the sale's start less the lead time.
    pub fn issue(
        &self,
        buyer: u64,
        product: u64,
        epoch: u64,
        sale_start_ms: i64,
        now_ms: i64,
    ) -> Result<IssuedToken, TokenRefusal> {
        let opens_at_ms = self.opens_at_ms(sale_start_ms);
        if now_ms < opens_at_ms {
            return Err(TokenRefusal::NotYetOpen { opens_at_ms });
        }
        let expires_at_ms = now_ms.max(0).saturating_add(self.ttl_ms);
        Ok(IssuedToken {
            token: self.signer.sign([buyer, product, epoch], expires_at_ms),
            expires_at_ms,
        })
    }

    /// Accepts `token` for `buyer` buying `product` in `epoch`, once. Checked in this order:
    /// its shape, its MAC (in constant time), its binding, its expiry, then its single use
    /// (only a token passing every other check is recorded as used). Never panics, whatever
    /// `token` holds.
    ///
    /// # Errors
    /// The first check that fails; [`TokenRefusal::Unavailable`] when the ledger fails.
    pub async fn redeem(
        &self,
        token: &str,
        buyer: u64,
        product: u64,
        epoch: u64,
        now_ms: i64,
    ) -> Result<(), TokenRefusal> {
        let opened = self.signer.open(token).map_err(|e| match e {
            OpenError::Malformed => TokenRefusal::Malformed,
            OpenError::BadSignature => TokenRefusal::BadSignature,
        })?;
        if opened.fields != [buyer, product, epoch] {
            return Err(TokenRefusal::WrongBinding);
        }
        if now_ms >= opened.expires_at_ms {
            return Err(TokenRefusal::Expired);
        }
        let left = Duration::from_millis(opened.expires_at_ms.abs_diff(now_ms));
        match self
            .ledger
            .consume(&format!("t:{}", opened.nonce), left + CLOCK_SKEW)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenRefusal::AlreadyUsed),
            Err(e) => Err(TokenRefusal::Unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::antibot::MemoryLedger;

    const START: i64 = 1_700_000_000_000;

    fn tokens() -> PurchaseTokens {
        let config = AntibotConfig {
            purchase_token: true,
            secret: Some("0123456789abcdef0123".into()),
            ..AntibotConfig::default()
        };
        PurchaseTokens::new(&config, Arc::new(MemoryLedger::default())).unwrap()
    }

    #[tokio::test]
    async fn a_token_redeems_once() {
        let t = tokens();
        let issued = t.issue(1, 2, 3, START, START).unwrap();
        assert_eq!(issued.expires_at_ms, START + 30_000);
        assert!(issued.token.starts_with("v1.1.2.3.1700000030000."));
        assert_eq!(
            t.redeem(&issued.token, 1, 2, 3, START + 29_999).await,
            Ok(())
        );
        assert_eq!(
            t.redeem(&issued.token, 1, 2, 3, START + 29_999).await,
            Err(TokenRefusal::AlreadyUsed)
        );
    }

    #[test]
    fn a_config_without_a_secret_builds_no_tokens() {
        let err = PurchaseTokens::new(&AntibotConfig::default(), Arc::new(MemoryLedger::default()))
            .unwrap_err();
        assert_eq!(err.key, "secret");
    }

    /// Whatever a client sends, redeeming never panics and never accepts anything but the
    /// token as issued: random bytes, random strings over the token's alphabet, and random
    /// edits of a genuine token (seeded, so a failure replays).
    #[tokio::test]
    async fn garbage_never_panics_and_never_redeems() {
        let t = tokens();
        let genuine = t.issue(1, 2, 3, START, START).unwrap().token;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ec_c111);
        let alphabet = b"v1.0123456789abcdef+-_ \xff";
        for round in 0..20_000u32 {
            let candidate = match round % 3 {
                0 => {
                    let len = rng.random_range(0..400);
                    let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => {
                    let len = rng.random_range(0..200);
                    let bytes: Vec<u8> = (0..len)
                        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => {
                    let mut bytes = genuine.clone().into_bytes();
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..=bytes.len());
                        match rng.random_range(0..4) {
                            0 if at < bytes.len() => bytes[at] = rng.random(),
                            1 if at < bytes.len() => {
                                bytes.remove(at);
                            }
                            2 => bytes.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                            _ => bytes.truncate(at),
                        }
                    }
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            if candidate == genuine {
                continue;
            }
            let refused = t.redeem(&candidate, 1, 2, 3, START).await;
            assert!(
                matches!(
                    refused,
                    Err(TokenRefusal::Malformed | TokenRefusal::BadSignature)
                ),
                "{candidate:?}: {refused:?}"
            );
        }
        assert_eq!(t.redeem(&genuine, 1, 2, 3, START).await, Ok(()));
    }
}
