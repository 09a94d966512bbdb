//! Anti-bot purchase tokens and the challenge before them: the `antibot` section.
//!
//! Threat model: a script that knows the purchase endpoint fires purchases the moment (or
//! before) a sale opens, from many attempts and many accounts, and replays what worked. With
//! `purchase_token` on, a purchase needs a short-lived, single-use token signed by the service,
//! bound to the buyer, the product and the activity's epoch and issued only from the sale's
//! start, so nothing can be fired early or replayed; with a proof-of-work `challenge`, every
//! token costs the client CPU, so attempts at scale cost the bot, not the service. It does not
//! stop a patient bot that solves challenges like a browser does: per-buyer limits remain
//! the defence there.
//!
//! # Layout
//! - `config`: [`AntibotConfig`], [`ChallengeKind`].
//! - `token`: [`PurchaseTokens`], [`IssuedToken`], [`TokenRefusal`].
//! - `challenge`: the [`Challenge`] trait, [`IssuedChallenge`], [`ChallengeRefusal`].
//! - `pow`: [`ProofOfWork`], with its reference solver.
//! - `ledger`: [`TokenLedger`] (single use), [`MemoryLedger`], `RedisLedger` (feature `redis`).
//! - `signed`: the signed strings tokens and challenges are made of.
//! - [`Antibot`] (this module): what the purchase path calls.

mod challenge;
mod config;
mod ledger;
mod pow;
mod signed;
mod token;

use std::fmt;
use std::sync::Arc;

pub use challenge::{Challenge, ChallengeRefusal, IssuedChallenge};
pub use config::{AntibotConfig, ChallengeKind};
#[cfg(feature = "redis")]
pub use ledger::RedisLedger;
pub use ledger::{LedgerError, MemoryLedger, TokenLedger};
pub use pow::ProofOfWork;
pub use token::{IssuedToken, PurchaseTokens, TokenRefusal};

use crate::settings::ConfigError;

/// An answered challenge, as a buyer sends it with a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeAnswer<'a> {
    /// The challenge as issued.
    pub challenge: &'a str,
    /// The buyer's solution.
    pub solution: &'a str,
}

/// The anti-bot guard of the purchase path, built from the `antibot` section: whether
/// purchases need a token, the challenge before a token (if any), and issuing and redeeming
/// tokens. With everything off it requires nothing and issues nothing. Cloning is cheap.
///
/// Times are Unix milliseconds passed in by the caller; nothing here reads a clock but the
/// [`MemoryLedger`]'s expiry (tokio's).
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use seckill_service::{
///     Antibot, AntibotConfig, ChallengeAnswer, ChallengeKind, MemoryLedger, ProofOfWork, TokenRefusal,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = AntibotConfig {
///     purchase_token: true,
///     secret: Some("a secret of 16 bytes or more".into()),
///     challenge: ChallengeKind::Pow,
///     difficulty: 8,
///     ..AntibotConfig::default()
/// };
/// let antibot = Antibot::new(&config, Arc::new(MemoryLedger::default()))?;
/// let (buyer, product, epoch, sale_start) = (2001, 1001, 1, 1_700_000_000_000);
/// let now = sale_start + 500;
/// assert!(antibot.requires_token());
///
/// // The page asks for a challenge and solves it (in the browser, in real life).
/// let issued = antibot.issue_challenge(buyer, product, now).expect("a challenge is on");
/// let solution = ProofOfWork::solve(&issued.challenge, issued.difficulty);
/// let answer = ChallengeAnswer { challenge: &issued.challenge, solution: &solution };
///
/// // Then it trades the solution for a purchase token…
/// let token = antibot
///     .issue(buyer, product, epoch, sale_start, Some(answer), now)
///     .await?
///     .expect("tokens are on");
///
/// // …which the purchase carries, once.
/// antibot.redeem(Some(&token.token), buyer, product, epoch, now + 100).await?;
/// let replay = antibot.redeem(Some(&token.token), buyer, product, epoch, now + 200).await;
/// assert_eq!(replay, Err(TokenRefusal::AlreadyUsed));
/// assert_eq!(
///     antibot.redeem(None, buyer, product, epoch, now).await,
///     Err(TokenRefusal::Missing)
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Antibot {
    tokens: Option<PurchaseTokens>,
    challenge: Option<Arc<dyn Challenge>>,
}

impl fmt::Debug for Antibot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Antibot")
            .field("tokens", &self.tokens)
            .field("challenge", &self.challenge.is_some())
            .finish()
    }
}

impl Antibot {
    /// The guard `config` describes, single-use through `ledger` (one ledger for tokens and
    /// challenges; ids of the two never collide). Behind a load balancer every instance needs
    /// the same ledger and the same secret.
    ///
    /// # Errors
    /// An invalid `config` ([`AntibotConfig::validate`]).
    pub fn new(config: &AntibotConfig, ledger: Arc<dyn TokenLedger>) -> Result<Self, ConfigError> {
        config.validate()?;
        let tokens = config
            .purchase_token
            .then(|| PurchaseTokens::new(config, ledger.clone()))
            .transpose()?;
        let challenge = match config.challenge {
            ChallengeKind::None => None,
            ChallengeKind::Pow => {
                Some(Arc::new(ProofOfWork::new(config, ledger)?) as Arc<dyn Challenge>)
            }
        };
        Ok(Self { tokens, challenge })
    }

    /// A guard requiring nothing (the default).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Replaces the challenge before a token with `challenge` (another kind than the built-in
    /// ones). It guards something only when purchase tokens are on.
    pub fn with_challenge(mut self, challenge: Arc<dyn Challenge>) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Whether a purchase needs a valid, unused token.
    pub fn requires_token(&self) -> bool {
        self.tokens.is_some()
    }

    /// The purchase tokens, when they are on.
    pub fn tokens(&self) -> Option<&PurchaseTokens> {
        self.tokens.as_ref()
    }

    /// The challenge before a token, if any.
    pub fn challenge(&self) -> Option<&dyn Challenge> {
        self.challenge.as_deref()
    }

    /// A fresh challenge for `buyer` buying `product`, when a challenge is on.
    pub fn issue_challenge(
        &self,
        buyer: u64,
        product: u64,
        now_ms: i64,
    ) -> Option<IssuedChallenge> {
        self.challenge
            .as_ref()
            .map(|c| c.issue(buyer, product, now_ms))
    }

    /// A purchase token for `buyer` to buy `product` in the activity's `epoch`, for a sale
    /// starting at `sale_start_ms`; with a challenge on, `answer` must answer one issued to
    /// this buyer for this product (it is used up only when the sale is open). `None` when
    /// purchase tokens are off: nothing to issue, purchases need none.
    ///
    /// # Errors
    /// [`TokenRefusal::NotYetOpen`] before the sale's start less the lead time (checked
    /// first); [`TokenRefusal::Challenge`] when the challenge is not passed
    /// ([`ChallengeRefusal::Missing`] without `answer`).
    pub async fn issue(
        &self,
        buyer: u64,
        product: u64,
        epoch: u64,
        sale_start_ms: i64,
        answer: Option<ChallengeAnswer<'_>>,
        now_ms: i64,
    ) -> Result<Option<IssuedToken>, TokenRefusal> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let opens_at_ms = tokens.opens_at_ms(sale_start_ms);
        if now_ms < opens_at_ms {
            return Err(TokenRefusal::NotYetOpen { opens_at_ms });
        }
        if let Some(challenge) = &self.challenge {
            let s = answer.ok_or(TokenRefusal::Challenge(ChallengeRefusal::Missing))?;
            challenge
                .verify(s.challenge, s.solution, buyer, product, now_ms)
                .await
                .map_err(TokenRefusal::Challenge)?;
        }
        tokens
            .issue(buyer, product, epoch, sale_start_ms, now_ms)
            .map(Some)
    }

    /// Admits a purchase by `buyer` of `product` in `epoch` carrying `token`: always when
    /// tokens are off (the token is not looked at), otherwise only with a valid, unused one,
    /// which this uses up ([`PurchaseTokens::redeem`]).
    ///
    /// # Errors
    /// [`TokenRefusal::Missing`] without a token (or an empty one), else why it is refused;
    /// [`TokenRefusal::Unavailable`] (transient) when the ledger fails.
    pub async fn redeem(
        &self,
        token: Option<&str>,
        buyer: u64,
        product: u64,
        epoch: u64,
        now_ms: i64,
    ) -> Result<(), TokenRefusal> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        match token {
            None | Some("") => Err(TokenRefusal::Missing),
            Some(t) => tokens.redeem(t, buyer, product, epoch, now_ms).await,
        }
    }
}
