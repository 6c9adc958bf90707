//! Join tokens: `hex(sha256(CA DER)) + "." + JWT` (upstream `pkg/security/token`).
//!
//! The JWT is HS256, keyed with the raw SEC1 DER of the CA private key, and
//! carries only `exp`. What we issue is byte-for-byte what golang-jwt v5
//! writes for the same `exp`: header `{"alg":"HS256","typ":"JWT"}`, payload
//! `{"exp":<unix seconds>}`, all segments base64url without padding.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::ca::CertificateAuthority;
use crate::cert::{system_to_unix, unix_to_system};

/// Upstream's default `tokenRefreshDuration` (hours).
pub const DEFAULT_TOKEN_REFRESH_HOURS: u64 = 12;

/// Where upstream's cloudcore keeps the current join token, and its `keadm gettoken` reads it:
/// Secret `kubeedge/tokensecret`, key `tokendata`.
pub const SECRET_NAMESPACE: &str = "kubeedge";
pub const SECRET_NAME: &str = "tokensecret";
pub const SECRET_KEY: &str = "tokendata";

/// `base64url({"alg":"HS256","typ":"JWT"})`, as golang-jwt encodes its header
/// map (keys sorted by `encoding/json`).
const JWT_HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Why a token was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong number of segments, bad JSON, missing `alg`, bad CA hash shape …
    #[error("token is malformed: {0}")]
    BadFormat(String),
    /// A segment is not base64url without padding.
    #[error("token {0} segment is not valid unpadded base64url")]
    BadBase64(&'static str),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("token algorithm {0:?} is not accepted (only HS256)")]
    WrongAlgorithm(String),
    /// The HMAC does not verify with this CA's key.
    #[error("token signature is invalid for this ca")]
    BadSignature,
    /// The payload has no numeric `exp`.
    #[error("token has no exp claim")]
    MissingExpiry,
    /// `exp` is in the past.
    #[error("token expired at unix time {0}")]
    Expired(i64),
    /// `nbf` is in the future.
    #[error("token is not valid before unix time {0}")]
    NotYetValid(i64),
    /// The CA the edge downloaded is not the one the token was issued for.
    #[error("ca certificate hash {actual} does not match the token's ca hash {expected}")]
    CaHashMismatch {
        /// Hash from the token.
        expected: String,
        /// Hash of the CA certificate at hand.
        actual: String,
    },
}

/// `hex(sha256(ca_der))`, lowercase.
pub fn ca_hash_hex(ca_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_der);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Token lifetime for a `tokenRefreshDuration` in hours: twice the refresh
/// interval, so a token fetched just before a refresh still has at least one
/// interval left (upstream's reasoning).
pub fn token_validity(refresh_hours: u64) -> Duration {
    Duration::from_secs(refresh_hours.saturating_mul(2 * 3600))
}

/// Issues a join token for `ca`, expiring at `now + validity` (whole seconds).
pub fn issue_token(ca: &CertificateAuthority, now: SystemTime, validity: Duration) -> String {
    issue_token_raw(ca.ca_der(), ca.ca_key_der(), now, validity)
}

/// [`issue_token`] from the raw CA certificate DER and SEC1 key DER.
pub fn issue_token_raw(
    ca_der: &[u8],
    ca_key_der: &[u8],
    now: SystemTime,
    validity: Duration,
) -> String {
    let exp = system_to_unix(now + validity);
    let payload = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
    let signing_input = format!("{JWT_HEADER_B64}.{payload}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, ca_key_der);
    let sig = hmac::sign(&key, signing_input.as_bytes());
    format!(
        "{}.{signing_input}.{}",
        ca_hash_hex(ca_der),
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// Verifies a token at `now` against `ca`.
///
/// Accepts the bare JWT (what edges send as `Authorization: Bearer <jwt>`)
/// or the full four-segment join token, whose CA hash is then checked too.
pub fn verify_token(
    ca: &CertificateAuthority,
    token: &str,
    now: SystemTime,
) -> Result<(), TokenError> {
    verify_token_raw(ca.ca_der(), ca.ca_key_der(), token, now)
}

/// [`verify_token`] from the raw CA certificate DER and SEC1 key DER.
pub fn verify_token_raw(
    ca_der: &[u8],
    ca_key_der: &[u8],
    token: &str,
    now: SystemTime,
) -> Result<(), TokenError> {
    let token = token.trim();
    let jwt = match token.matches('.').count() {
        2 => token,
        3 => {
            let (hash, jwt) = split_token(token)?;
            verify_ca_hash(ca_der, hash)?;
            jwt
        }
        n => {
            return Err(TokenError::BadFormat(format!(
                "expected 3 or 4 dot-separated segments, got {}",
                n + 1
            )));
        }
    };
    let mut parts = jwt.splitn(3, '.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::BadFormat("missing jwt segment".into()));
    };

    let header = decode_json(header_b64, "header")?;
    match header.get("alg").and_then(|a| a.as_str()) {
        Some("HS256") => {}
        Some(other) => return Err(TokenError::WrongAlgorithm(other.to_owned())),
        None => return Err(TokenError::BadFormat("header has no alg".into())),
    }

    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::BadBase64("signature"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, ca_key_der);
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    // ring's verify compares in constant time.
    hmac::verify(&key, &jwt.as_bytes()[..signing_input_len], &sig)
        .map_err(|_| TokenError::BadSignature)?;

    let claims = decode_json(payload_b64, "payload")?;
    let now_secs = system_to_unix(now);
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(TokenError::MissingExpiry)?;
    // golang-jwt: valid while now < exp, no leeway.
    if now_secs >= exp {
        return Err(TokenError::Expired(exp));
    }
    if let Some(nbf) = claims.get("nbf").and_then(numeric_date)
        && now_secs < nbf
    {
        return Err(TokenError::NotYetValid(nbf));
    }
    Ok(())
}

/// When a token expires, without verifying it (for display, e.g. `keadm gettoken`).
pub fn token_expiry(token: &str) -> Result<SystemTime, TokenError> {
    let jwt = match token.trim().matches('.').count() {
        3 => split_token(token.trim())?.1,
        _ => token.trim(),
    };
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::BadFormat("missing payload segment".into()))?;
    let claims = decode_json(payload, "payload")?;
    claims
        .get("exp")
        .and_then(numeric_date)
        .map(unix_to_system)
        .ok_or(TokenError::MissingExpiry)
}

/// Splits a join token into `(ca_hash_hex, jwt)`; the JWT is what goes into
/// the `Authorization: Bearer` header.
pub fn split_token(token: &str) -> Result<(&str, &str), TokenError> {
    let token = token.trim();
    if token.matches('.').count() != 3 {
        return Err(TokenError::BadFormat(
            "join token must have 4 dot-separated segments (cahash.header.payload.signature)"
                .into(),
        ));
    }
    let (hash, jwt) = token
        .split_once('.')
        .ok_or_else(|| TokenError::BadFormat("missing ca hash".into()))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::BadFormat(
            "ca hash segment must be 64 hex characters".into(),
        ));
    }
    Ok((hash, jwt))
}

/// Checks the CA fetched from `/ca.crt` against the token's first segment.
pub fn verify_ca_hash(ca_der: &[u8], hash_hex: &str) -> Result<(), TokenError> {
    let actual = ca_hash_hex(ca_der);
    if actual.eq_ignore_ascii_case(hash_hex.trim()) {
        Ok(())
    } else {
        Err(TokenError::CaHashMismatch {
            expected: hash_hex.trim().to_owned(),
            actual,
        })
    }
}

fn decode_json(
    segment: &str,
    name: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::BadBase64(name))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::BadFormat(format!("{name} is not a json object: {e}")))
}

/// A JWT NumericDate; golang-jwt accepts fractional seconds, so do we.
fn numeric_date(v: &serde_json::Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    v.as_f64()
        .filter(|f| f.is_finite())
        // Saturating float-to-int cast is intended: absurd values stay absurd.
        .map(|f| f.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn header_constant_matches_go() {
        assert_eq!(
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            JWT_HEADER_B64
        );
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256 is deterministic, so the whole token is fixed for fixed inputs.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tok = issue_token_raw(b"ca", b"key", now, token_validity(12));
        let (hash, jwt) = split_token(&tok).unwrap();
        assert_eq!(hash, ca_hash_hex(b"ca"));
        let mut it = jwt.split('.');
        assert_eq!(it.next(), Some(JWT_HEADER_B64));
        let payload = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        assert_eq!(payload, br#"{"exp":1700086400}"#);
        assert_eq!(
            token_expiry(&tok).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_086_400)
        );
        verify_token_raw(b"ca", b"key", jwt, now).unwrap();
        verify_token_raw(b"ca", b"key", &tok, now).unwrap();
    }

    #[test]
    fn exp_boundary_and_float_exp() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let tok = issue_token_raw(b"ca", b"k", now, Duration::from_secs(10));
        assert!(verify_token_raw(b"ca", b"k", &tok, now + Duration::from_secs(9)).is_ok());
        assert_eq!(
            verify_token_raw(b"ca", b"k", &tok, now + Duration::from_secs(10)),
            Err(TokenError::Expired(1010))
        );
        assert_eq!(numeric_date(&serde_json::json!(12.9)), Some(12));
        assert_eq!(numeric_date(&serde_json::json!("12")), None);
    }
}
