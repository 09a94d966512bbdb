//! [`AntibotConfig`]: the `antibot` section, with its defaults and its validation.

use std::fmt;
use std::time::Duration;

use crate::settings::ConfigError;

/// Shortest accepted HMAC secret, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Most leading zero bits a proof of work may ask for (2^32 hashes on average).
pub(crate) const MAX_DIFFICULTY: u8 = 32;

/// Which challenge a buyer passes before a purchase token is issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum ChallengeKind {
    /// None: a token is issued on request (default).
    #[default]
    None,
    /// A hashcash-style proof of work ([`ProofOfWork`](crate::ProofOfWork)).
    Pow,
}

/// `antibot`: purchase tokens and the challenge before them; everything is off by default.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct AntibotConfig {
    /// Whether a purchase needs a valid, unused purchase token (default false).
    pub purchase_token: bool,
    /// The HMAC key signing tokens and challenges, at least 16 bytes; required when anything is
    /// on, and the same on every instance (default none).
    pub secret: Option<String>,
    /// How long a purchase token is valid (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub token_ttl: Duration,
    /// How long before the sale's start tokens are issued (default 0 s: from the start).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lead_time: Duration,
    /// The challenge before a token (default none); needs `purchase_token`.
    pub challenge: ChallengeKind,
    /// Leading zero bits a proof of work must reach, 1 to 32 (default 18: about 260,000
    /// hashes on average).
    pub difficulty: u8,
    /// How long a challenge may be answered (default 60 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub challenge_ttl: Duration,
}

impl Default for AntibotConfig {
    fn default() -> Self {
        Self {
            purchase_token: false,
            secret: None,
            token_ttl: Duration::from_secs(30),
            lead_time: Duration::ZERO,
            challenge: ChallengeKind::None,
            difficulty: 18,
            challenge_ttl: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for AntibotConfig {
    /// Everything but the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AntibotConfig")
            .field("purchase_token", &self.purchase_token)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("token_ttl", &self.token_ttl)
            .field("lead_time", &self.lead_time)
            .field("challenge", &self.challenge)
            .field("difficulty", &self.difficulty)
            .field("challenge_ttl", &self.challenge_ttl)
            .finish()
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl AntibotConfig {
    /// Whether anything is on.
    pub fn enabled(&self) -> bool {
        self.purchase_token || self.challenge != ChallengeKind::None
    }

    /// Checks what the types cannot. The key of the error is relative to the section
    /// (`secret`).
    ///
    /// # Errors
    /// The first invalid value: a missing or short `secret` while anything is on, a challenge
    /// without `purchase_token` (it would guard nothing), a `difficulty` outside 1 to 32, a
    /// time-to-live under 1 s.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.secret {
            None if self.enabled() => {
                return Err(invalid(
                    "secret",
                    "required when purchase_token or a challenge is on",
                ));
            }
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(invalid(
                    "secret",
                    format!("must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
            _ => {}
        }
        if self.challenge != ChallengeKind::None && !self.purchase_token {
            return Err(invalid(
                "challenge",
                "needs purchase_token: true (the challenge guards the token)",
            ));
        }
        if !(1..=MAX_DIFFICULTY).contains(&self.difficulty) {
            return Err(invalid(
                "difficulty",
                format!("must be between 1 and {MAX_DIFFICULTY}"),
            ));
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err(invalid("token_ttl", "must be at least 1s"));
        }
        if self.challenge_ttl < Duration::from_secs(1) {
            return Err(invalid("challenge_ttl", "must be at least 1s"));
        }
        Ok(())
    }

    /// The secret, once validated.
    pub(crate) fn secret_bytes(&self) -> Result<&[u8], ConfigError> {
        self.validate()?;
        self.secret
            .as_deref()
            .map(str::as_bytes)
            .ok_or_else(|| invalid("secret", "required to sign tokens and challenges"))
    }
}

/// `d` in milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> AntibotConfig {
        AntibotConfig {
            purchase_token: true,
            secret: Some("0123456789abcdef".into()),
            ..AntibotConfig::default()
        }
    }

    #[test]
    fn the_defaults_are_off_and_valid() {
        let c = AntibotConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.token_ttl, Duration::from_secs(30));
        assert_eq!(c.lead_time, Duration::ZERO);
        assert_eq!(c.challenge, ChallengeKind::None);
        assert_eq!(c.difficulty, 18);
        assert_eq!(c.challenge_ttl, Duration::from_secs(60));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(on().validate(), Ok(()));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let key = |c: AntibotConfig| c.validate().unwrap_err().key;
        assert_eq!(
            key(AntibotConfig {
                secret: None,
                ..on()
            }),
            "secret"
        );
        assert_eq!(
            key(AntibotConfig {
                secret: Some("short".into()),
                ..on()
            }),
            "secret"
        );
        assert_eq!(
            key(AntibotConfig {
                purchase_token: false,
                challenge: ChallengeKind::Pow,
                ..on()
            }),
            "challenge"
        );
        for difficulty in [0, 33] {
            assert_eq!(key(AntibotConfig { difficulty, ..on() }), "difficulty");
        }
        assert_eq!(
            key(AntibotConfig {
                token_ttl: Duration::from_millis(10),
                ..on()
            }),
            "token_ttl"
        );
        assert_eq!(
            key(AntibotConfig {
                challenge_ttl: Duration::ZERO,
                ..on()
            }),
            "challenge_ttl"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn the_section_reads_with_humantime_durations_and_lowercase_kinds() {
        let c: AntibotConfig = serde_json::from_str(
            r#"{"purchase_token": true, "secret": "0123456789abcdef", "token_ttl": "45s",
                "lead_time": "2s", "challenge": "pow", "difficulty": 20, "challenge_ttl": "2m"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            AntibotConfig {
                token_ttl: Duration::from_secs(45),
                lead_time: Duration::from_secs(2),
                challenge: ChallengeKind::Pow,
                difficulty: 20,
                challenge_ttl: Duration::from_secs(120),
                ..on()
            }
        );
        let empty: AntibotConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, AntibotConfig::default());
        assert!(serde_json::from_str::<AntibotConfig>(r#"{"purchase_tokens": true}"#).is_err());
        assert!(serde_json::from_str::<AntibotConfig>(r#"{"challenge": "captcha"}"#).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", on());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
