//! Who is calling: [`AuthConfig`] (the `auth` section), the [`Authenticator`] that turns a bearer
//! token and a peer address into a [`Caller`], and the rules every front applies through it.
//!
//! With `mode: jwt` a buyer is the `sub` of a verified JWT (HS256 with a shared secret, or RS256 /
//! ES256 with a public key; the accepted algorithm is fixed by the key, so `alg: none` and
//! algorithm swaps are refused), and roles come from its `roles` array or space-separated
//! `scope`. With `mode: none` (the default, so the specification's examples keep working) the
//! request names the buyer, and the admin plane answers only peers in `admin_allow`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Denied, ServiceError};
use crate::settings::ConfigError;

/// How callers are identified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum AuthMode {
    /// No identity: the request names the buyer; the admin plane answers allowed peers.
    #[default]
    None,
    /// Bearer JWTs.
    Jwt,
}

/// `auth.jwt`: how tokens are verified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct JwtConfig {
    /// HS256 shared secret (at least 32 bytes), or
    pub secret: Option<String>,
    /// path to a PEM public key (RS256 or ES256).
    pub public_key: Option<PathBuf>,
    /// When set, `iss` must match.
    pub issuer: Option<String>,
    /// When set, `aud` must match.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            public_key: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        }
    }
}

/// `auth`: identity and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct AuthConfig {
    /// `none` (default) or `jwt`.
    pub mode: AuthMode,
    /// Token verification (mode jwt).
    pub jwt: JwtConfig,
    /// The role of operators (default `seckill:admin`).
    pub admin_role: String,
    /// The role of the payment service (default `seckill:payment`).
    pub payment_role: String,
    /// Mode none: peers that may use the admin plane and pay orders (default loopback).
    pub admin_allow: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            jwt: JwtConfig::default(),
            admin_role: "seckill:admin".into(),
            payment_role: "seckill:payment".into(),
            admin_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

/// Shortest accepted HS256 secret, in bytes.
const MIN_SECRET: usize = 32;

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

impl AuthConfig {
    /// Checks the section without reading files (the key file is read by
    /// [`Authenticator::new`]).
    ///
    /// # Errors
    /// The first invalid value, its key relative to the section (`jwt.secret`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.allowed_peers()?;
        if self.admin_role.trim().is_empty() {
            return Err(invalid("admin_role", "must not be empty"));
        }
        if self.payment_role.trim().is_empty() {
            return Err(invalid("payment_role", "must not be empty"));
        }
        if self.mode == AuthMode::Jwt {
            match (&self.jwt.secret, &self.jwt.public_key) {
                (None, None) => {
                    return Err(invalid(
                        "jwt.secret",
                        "mode jwt needs jwt.secret or jwt.public_key",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "jwt.public_key",
                        "set jwt.secret or jwt.public_key, not both",
                    ));
                }
                (Some(s), None) if s.len() < MIN_SECRET => {
                    return Err(invalid(
                        "jwt.secret",
                        format!("must be at least {MIN_SECRET} bytes"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn allowed_peers(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.admin_allow
            .iter()
            .map(|raw| {
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "admin_allow",
                            format!("{raw:?} is not an address or a network like 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }
}

/// The claims the service reads.
#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    sub: serde_json::Value,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Verifies callers; built once from [`AuthConfig`].
pub struct Authenticator {
    mode: AuthMode,
    key: Option<(DecodingKey, Validation)>,
    admin_role: String,
    payment_role: String,
    admin_allow: Vec<IpNet>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("admin_allow", &self.admin_allow)
            .finish_non_exhaustive()
    }
}

impl Default for Authenticator {
    /// Mode none, loopback admins.
    fn default() -> Self {
        Self::new(&AuthConfig::default()).expect("the default configuration is valid")
    }
}

impl Authenticator {
    /// Builds the verifier, reading the public key file when one is configured.
    ///
    /// # Errors
    /// An invalid section, or a key file that cannot be read or is not an RSA or EC public
    /// key in PEM.
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let key = match config.mode {
            AuthMode::None => None,
            AuthMode::Jwt => Some(decoding_key(&config.jwt)?),
        };
        Ok(Self {
            mode: config.mode,
            key,
            admin_role: config.admin_role.clone(),
            payment_role: config.payment_role.clone(),
            admin_allow: config.allowed_peers()?,
        })
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Identifies a caller from the `Authorization` header value (if any) and the peer address.
    /// In mode jwt a present but bad token is refused here; an absent one gives an anonymous
    /// caller, refused later by whatever needs an identity. Mode none ignores tokens.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for a malformed, expired, wrongly signed or otherwise
    /// invalid token.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, ServiceError> {
        let mut caller = Caller {
            mode: self.mode,
            subject: None,
            buyer: None,
            admin: false,
            payment: false,
            peer,
        };
        match (&self.key, authorization) {
            (None, _) => {
                let allowed = peer.is_some_and(|p| {
                    let p = canonical(p);
                    self.admin_allow.iter().any(|n| n.contains(&p))
                });
                caller.admin = allowed;
                caller.payment = allowed;
            }
            (Some(_), None) => {}
            (Some((key, validation)), Some(header)) => {
                let token = bearer(header).ok_or(ServiceError::Unauthenticated(
                    "the Authorization header must be \"Bearer <token>\"",
                ))?;
                let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| {
                        tracing::debug!(error = %e, "token refused");
                        ServiceError::Unauthenticated("invalid or expired token")
                    })?
                    .claims;
                let has = |role: &str| {
                    claims.roles.iter().any(|r| r == role)
                        || claims
                            .scope
                            .as_deref()
                            .is_some_and(|s| s.split_whitespace().any(|r| r == role))
                };
                caller.admin = has(&self.admin_role);
                caller.payment = has(&self.payment_role);
                let subject = match &claims.sub {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                caller.buyer = buyer_id(&subject);
                caller.subject = Some(subject);
            }
        }
        Ok(caller)
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A subject that is a buyer id: a canonical positive integer that fits in i64.
fn buyer_id(subject: &str) -> Option<u64> {
    let id: u64 = subject.parse().ok()?;
    (id > 0 && id <= i64::MAX as u64 && id.to_string() == subject).then_some(id)
}

fn decoding_key(jwt: &JwtConfig) -> Result<(DecodingKey, Validation), ConfigError> {
    let (key, algorithm) = match (&jwt.secret, &jwt.public_key) {
        (Some(secret), _) => (
            DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| invalid("jwt.secret", e.to_string()))?,
            Algorithm::HS256,
        ),
        (None, Some(path)) => {
            let pem = std::fs::read(path).map_err(|e| {
                invalid("jwt.public_key", format!("reading {}: {e}", path.display()))
            })?;
            if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (k, Algorithm::ES256)
            } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (k, Algorithm::RS256)
            } else {
                return Err(invalid(
                    "jwt.public_key",
                    format!("{} is not an RSA or EC public key in PEM", path.display()),
                ));
            }
        }
        (None, None) => return Err(invalid("jwt.secret", "missing")),
    };
    let mut v = Validation::new(algorithm);
    v.leeway = jwt.leeway.as_secs();
    v.set_required_spec_claims(&["exp", "sub"]);
    match &jwt.issuer {
        Some(iss) => v.set_issuer(&[iss]),
        None => v.iss = None,
    }
    match &jwt.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    Ok((key, v))
}

/// Mints an HS256 token for `subject` with `roles`, valid for `ttl`, from the configured secret
/// (for development and tests; production tokens come from the identity provider).
///
/// # Errors
/// The configuration has no `jwt.secret`.
pub fn mint_token(
    config: &AuthConfig,
    subject: &str,
    roles: &[&str],
    ttl: Duration,
) -> Result<String, ConfigError> {
    let secret = config
        .jwt
        .secret
        .as_deref()
        .ok_or_else(|| invalid("jwt.secret", "minting a token needs the shared secret"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: serde_json::Value::String(subject.to_owned()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scope: None,
        exp: now + ttl.as_secs(),
        iss: config.jwt.issuer.clone(),
        aud: config.jwt.audience.clone(),
    };
    let key = EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| invalid("jwt.secret", e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| invalid("jwt.secret", e.to_string()))
}

/// Who is calling, as the [`Authenticator`] established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    mode: AuthMode,
    subject: Option<String>,
    buyer: Option<u64>,
    admin: bool,
    payment: bool,
    peer: Option<IpAddr>,
}

impl Caller {
    /// A caller of mode none from `peer`, with the admin plane (tests and in-process callers).
    pub fn trusted() -> Self {
        Self {
            mode: AuthMode::None,
            subject: None,
            buyer: None,
            admin: true,
            payment: true,
            peer: None,
        }
    }

    /// The client address, when known.
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// The authenticated buyer (mode jwt), when the token names one.
    pub fn buyer(&self) -> Option<u64> {
        self.buyer
    }

    /// Whether the caller may use the admin plane.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Refuses a caller without the admin role (mode jwt) or from a peer outside
    /// `admin_allow` (mode none).
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] without a token (mode jwt),
    /// [`Denied::NotAdmin`] otherwise.
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        self.require(self.admin)
    }

    /// Refuses a caller who is neither the payment service nor an operator.
    ///
    /// # Errors
    /// As [`Caller::require_admin`].
    pub fn require_payment(&self) -> Result<(), ServiceError> {
        self.require(self.payment || self.admin)
    }

    fn require(&self, allowed: bool) -> Result<(), ServiceError> {
        if allowed {
            Ok(())
        } else if self.mode == AuthMode::Jwt && self.subject.is_none() {
            Err(ServiceError::Unauthenticated("a bearer token is required"))
        } else {
            Err(ServiceError::Denied(Denied::NotAdmin))
        }
    }

    /// The buyer a purchase is for: in mode jwt the token's subject (a `claimed` buyer that
    /// differs is refused), in mode none the claimed one.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] without a token, [`Denied::NotThisBuyer`] for a token
    /// that names another buyer (or none), [`ServiceError::Invalid`] without a buyer in mode
    /// none.
    pub fn buyer_for(&self, claimed: Option<u64>) -> Result<u64, ServiceError> {
        match self.mode {
            AuthMode::None => claimed.ok_or(ServiceError::Invalid("missing field user_id".into())),
            AuthMode::Jwt => {
                if self.subject.is_none() {
                    return Err(ServiceError::Unauthenticated("a bearer token is required"));
                }
                match (self.buyer, claimed) {
                    (Some(b), None) => Ok(b),
                    (Some(b), Some(c)) if b == c => Ok(b),
                    _ => Err(ServiceError::Denied(Denied::NotThisBuyer)),
                }
            }
        }
    }

    /// Whether the caller may see what belongs to `owner`: the owner or an operator (mode jwt);
    /// anyone in mode none, where nobody is identified.
    pub fn may_see(&self, owner: u64) -> bool {
        match self.mode {
            AuthMode::None => true,
            AuthMode::Jwt => self.admin || self.buyer == Some(owner),
        }
    }
}

impl fmt::Display for Caller {
    /// Who did it, for the logs: the token's subject or the peer address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.subject, self.peer) {
            (Some(s), _) => write!(f, "sub:{s}"),
            (None, Some(p)) => write!(f, "peer:{p}"),
            (None, None) => f.write_str("in-process"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

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

    #[test]
    fn buyer_ids_are_canonical_positive_i64() {
        assert_eq!(buyer_id("2001"), Some(2001));
        for bad in ["0", "+1", "01", "-1", "9223372036854775808", "abc", ""] {
            assert_eq!(buyer_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert!(AuthConfig::default().validate().is_ok());
        let mut c = jwt();
        c.jwt.secret = Some("short".into());
        assert_eq!(c.validate().unwrap_err().key, "jwt.secret");
        c.jwt.secret = None;
        assert_eq!(c.validate().unwrap_err().key, "jwt.secret");
        let c = AuthConfig {
            admin_allow: vec!["nonsense".into()],
            ..AuthConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "admin_allow");
    }

    #[test]
    fn tokens_give_buyers_and_roles() {
        let config = jwt();
        let auth = Authenticator::new(&config).unwrap();
        let t = mint_token(&config, "7", &[], Duration::from_secs(60)).unwrap();
        let c = auth
            .authenticate(Some(&format!("Bearer {t}")), None)
            .unwrap();
        assert_eq!(c.buyer(), Some(7));
        assert_eq!(c.buyer_for(None), Ok(7));
        assert_eq!(
            c.buyer_for(Some(8)),
            Err(ServiceError::Denied(Denied::NotThisBuyer))
        );
        assert_eq!(
            c.require_admin(),
            Err(ServiceError::Denied(Denied::NotAdmin))
        );
        let t = mint_token(&config, "ops", &["seckill:admin"], Duration::from_secs(60)).unwrap();
        let c = auth
            .authenticate(Some(&format!("bearer {t}")), None)
            .unwrap();
        assert!(c.require_admin().is_ok() && c.require_payment().is_ok());
        assert_eq!(c.buyer(), None);
        let anonymous = auth.authenticate(None, None).unwrap();
        assert!(matches!(
            anonymous.require_admin(),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(auth.authenticate(Some("Bearer x.y.z"), None).is_err());
        assert!(auth.authenticate(Some("Basic abc"), None).is_err());
    }

    #[test]
    fn mode_none_admits_allowed_peers_only() {
        let auth = Authenticator::default();
        let local = auth
            .authenticate(None, Some("127.0.0.1".parse().unwrap()))
            .unwrap();
        assert!(local.require_admin().is_ok());
        let mapped = auth
            .authenticate(None, Some("::ffff:127.0.0.1".parse().unwrap()))
            .unwrap();
        assert!(mapped.require_admin().is_ok());
        let remote = auth
            .authenticate(None, Some("10.1.2.3".parse().unwrap()))
            .unwrap();
        assert_eq!(
            remote.require_admin(),
            Err(ServiceError::Denied(Denied::NotAdmin))
        );
        assert_eq!(remote.buyer_for(Some(5)), Ok(5));
        assert!(remote.may_see(99));
    }
}
