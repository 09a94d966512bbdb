//! Signed strings `<tag>.<a>.<b>.<c>.<expires_at_ms>.<nonce>.<mac>`: the shape of purchase
//! tokens and challenges, and the one strict parser both go through.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest string looked at; anything longer is malformed before it is split.
const MAX_LEN: usize = 256;
/// Random bytes in a nonce (hex in the string).
const NONCE_BYTES: usize = 16;
/// Bytes of an HMAC-SHA256 tag (hex in the string).
const MAC_BYTES: usize = 32;

/// Signs and opens the strings of one kind (`tag`) with a key of that kind.
#[derive(Clone)]
pub(crate) struct Signer {
    tag: &'static str,
    key: HmacSha256,
}

/// A string that carried this signer's valid MAC.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened<'a> {
    pub(crate) fields: [u64; 3],
    pub(crate) expires_at_ms: i64,
    /// Unique per signed string: the single-use ledger's id.
    pub(crate) nonce: &'a str,
}

/// Why a string does not open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not of the shape, the tag or the canonical encoding.
    Malformed,
    /// The shape is right, the MAC is not.
    BadSignature,
}

impl Signer {
    /// A signer for `tag`, keyed with HMAC(secret, "seckill antibot " ‖ tag): each kind has a
    /// key of its own, so a challenge can never pass for a token, whatever its shape.
    pub(crate) fn new(secret: &[u8], tag: &'static str) -> Self {
        let mut derive = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        derive.update(b"seckill antibot ");
        derive.update(tag.as_bytes());
        let key = derive.finalize().into_bytes();
        Self {
            tag,
            key: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    /// A fresh string for `fields`, valid until `expires_at_ms` (clamped to 0 and above).
    pub(crate) fn sign(&self, fields: [u64; 3], expires_at_ms: i64) -> String {
        let nonce = hex::encode(rand::random::<[u8; NONCE_BYTES]>());
        let [a, b, c] = fields;
        let payload = format!("{}.{a}.{b}.{c}.{}.{nonce}", self.tag, expires_at_ms.max(0));
        let mut mac = self.key.clone();
        mac.update(payload.as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        format!("{payload}.{mac}")
    }

    /// Parses `s` strictly (only what [`sign`](Self::sign) writes is accepted, so one payload
    /// has one spelling) and checks its MAC in constant time. Never panics, whatever `s` is.
    pub(crate) fn open<'a>(&self, s: &'a str) -> Result<Opened<'a>, OpenError> {
        use OpenError::Malformed;
        if s.len() > MAX_LEN {
            return Err(Malformed);
        }
        let (payload, mac_hex) = s.rsplit_once('.').ok_or(Malformed)?;
        let mut parts = payload.split('.');
        if parts.next() != Some(self.tag) {
            return Err(Malformed);
        }
        let mut number = || parts.next().and_then(canonical_u64).ok_or(Malformed);
        let fields = [number()?, number()?, number()?];
        let expires_at_ms = i64::try_from(number()?).map_err(|_| Malformed)?;
        let nonce = parts
            .next()
            .filter(|n| is_lower_hex(n, 2 * NONCE_BYTES))
            .ok_or(Malformed)?;
        if parts.next().is_some() || !is_lower_hex(mac_hex, 2 * MAC_BYTES) {
            return Err(Malformed);
        }
        let mut tag = [0u8; MAC_BYTES];
        hex::decode_to_slice(mac_hex, &mut tag).map_err(|_| Malformed)?;
        let mut mac = self.key.clone();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| OpenError::BadSignature)?;
        Ok(Opened {
            fields,
            expires_at_ms,
            nonce,
        })
    }
}

/// A decimal `u64` as `format!` writes it: digits only, no sign, no leading zero.
fn canonical_u64(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef", "v1")
    }

    #[test]
    fn what_is_signed_opens_with_its_fields() {
        let s = signer().sign([1, u64::MAX, 0], 1_700_000_000_000);
        let opened = signer().open(&s).unwrap();
        assert_eq!(opened.fields, [1, u64::MAX, 0]);
        assert_eq!(opened.expires_at_ms, 1_700_000_000_000);
        assert_eq!(opened.nonce.len(), 32);
        assert!(s.len() <= MAX_LEN, "{}", s.len());
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'),
            "URL-safe: {s}"
        );
    }

    #[test]
    fn another_spelling_of_the_same_payload_is_malformed() {
        let s = signer().sign([7, 8, 9], 1000);
        for (from, to) in [(".7.", ".07."), (".7.", ".+7."), ("v1.", "V1.")] {
            let respelled = s.replacen(from, to, 1);
            assert_eq!(
                signer().open(&respelled),
                Err(OpenError::Malformed),
                "{respelled}"
            );
        }
        let upper_mac = {
            let (payload, mac) = s.rsplit_once('.').unwrap();
            format!("{payload}.{}", mac.to_uppercase())
        };
        assert_eq!(signer().open(&upper_mac), Err(OpenError::Malformed));
    }

    #[test]
    fn another_kind_or_key_does_not_verify() {
        let s = signer().sign([1, 2, 3], 1000);
        let other_kind = Signer::new(b"0123456789abcdef", "pow1");
        let retagged = s.replacen("v1.", "pow1.", 1);
        assert_eq!(other_kind.open(&retagged), Err(OpenError::BadSignature));
        let other_key = Signer::new(b"fedcba9876543210", "v1");
        assert_eq!(other_key.open(&s), Err(OpenError::BadSignature));
    }

    #[test]
    fn numbers_are_canonical() {
        assert_eq!(canonical_u64("0"), Some(0));
        assert_eq!(canonical_u64("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            "1a",
            "18446744073709551616",
            "１",
        ] {
            assert_eq!(canonical_u64(bad), None, "{bad:?}");
        }
    }
}
