//! Join tokens as cloudcore issues them and edgecore / `/edge.crt` check them.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ke_pki::CertificateAuthority;
use ke_pki::token::{self, TokenError};

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(SystemTime::now()).unwrap()
}

fn hmac(key: &[u8], msg: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    URL_SAFE_NO_PAD.encode(ring::hmac::sign(&k, msg.as_bytes()).as_ref())
}

#[test]
fn round_trip_full_and_bearer_forms() {
    let ca = ca();
    let now = SystemTime::now();
    let tok = token::issue_token(
        &ca,
        now,
        token::token_validity(token::DEFAULT_TOKEN_REFRESH_HOURS),
    );
    let (hash, jwt) = token::split_token(&tok).unwrap();
    assert_eq!(hash, ca.ca_hash_hex());
    assert_eq!(hash.len(), 64);
    assert_eq!(jwt.split('.').count(), 3);
    token::verify_token(&ca, jwt, now).unwrap();
    token::verify_token(&ca, &tok, now).unwrap();
    // Valid for 2 × 12 h.
    let exp = token::token_expiry(&tok).unwrap();
    let secs = exp.duration_since(now).unwrap().as_secs();
    assert!((24 * 3600 - 1..=24 * 3600).contains(&secs), "{secs}");
    token::verify_token(&ca, jwt, now + Duration::from_secs(23 * 3600)).unwrap();
}

#[test]
fn expired_token_is_rejected() {
    let ca = ca();
    let now = SystemTime::now();
    let tok = token::issue_token(&ca, now, Duration::from_secs(60));
    let err = token::verify_token(&ca, &tok, now + Duration::from_secs(61)).unwrap_err();
    assert!(matches!(err, TokenError::Expired(_)), "{err}");
    assert!(err.to_string().contains("expired"));
}

#[test]
fn tampering_is_detected() {
    let ca = ca();
    let now = SystemTime::now();
    let tok = token::issue_token(&ca, now, Duration::from_secs(3600));
    let (_, jwt) = token::split_token(&tok).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();

    // Payload extended to a later exp, old signature kept.
    let later = URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999}"#);
    let forged = format!("{}.{later}.{}", parts[0], parts[2]);
    assert_eq!(
        token::verify_token(&ca, &forged, now),
        Err(TokenError::BadSignature)
    );

    // Signature bit flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(
        token::verify_token(&ca, &forged, now),
        Err(TokenError::BadSignature)
    );

    // Truncated signature.
    let forged = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..8]);
    assert_eq!(
        token::verify_token(&ca, &forged, now),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn token_from_another_ca_is_rejected() {
    let (a, b) = (ca(), ca());
    let now = SystemTime::now();
    let tok = token::issue_token(&a, now, Duration::from_secs(3600));
    let (_, jwt) = token::split_token(&tok).unwrap();
    assert_eq!(
        token::verify_token(&b, jwt, now),
        Err(TokenError::BadSignature)
    );
    // The full form fails earlier, on the CA hash.
    assert!(matches!(
        token::verify_token(&b, &tok, now),
        Err(TokenError::CaHashMismatch { .. })
    ));
}

#[test]
fn edge_detects_wrong_ca() {
    let (real, fake) = (ca(), ca());
    let tok = token::issue_token(&real, SystemTime::now(), Duration::from_secs(3600));
    let (hash, _) = token::split_token(&tok).unwrap();
    token::verify_ca_hash(real.ca_der(), hash).unwrap();
    token::verify_ca_hash(real.ca_der(), &hash.to_uppercase()).unwrap();
    let err = token::verify_ca_hash(fake.ca_der(), hash).unwrap_err();
    assert!(matches!(err, TokenError::CaHashMismatch { .. }));
    assert!(err.to_string().contains(hash));
}

#[test]
fn other_algorithms_are_rejected() {
    let ca = ca();
    let now = SystemTime::now();
    let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999}"#);

    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(
        token::verify_token(&ca, &format!("{none}.{payload}."), now),
        Err(TokenError::WrongAlgorithm("none".into()))
    );
    // Even correctly HMAC'd with the CA key: we only issue HS256.
    let hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let input = format!("{hs512}.{payload}");
    let tok = format!("{input}.{}", hmac(ca.ca_key_der(), &input));
    assert_eq!(
        token::verify_token(&ca, &tok, now),
        Err(TokenError::WrongAlgorithm("HS512".into()))
    );
    // An equivalent HS256 header with other key order / extra fields is fine.
    let alt = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","kid":"x","alg":"HS256"}"#);
    let input = format!("{alt}.{payload}");
    let tok = format!("{input}.{}", hmac(ca.ca_key_der(), &input));
    token::verify_token(&ca, &tok, now).unwrap();
    // No exp: golang-jwt would accept it forever; we do not.
    let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
    let input = format!("{alt}.{no_exp}");
    let tok = format!("{input}.{}", hmac(ca.ca_key_der(), &input));
    assert_eq!(
        token::verify_token(&ca, &tok, now),
        Err(TokenError::MissingExpiry)
    );
}

#[test]
fn malformed_tokens() {
    let ca = ca();
    let now = SystemTime::now();
    for bad in ["", "abc", "a.b", "a.b.c.d.e"] {
        assert!(
            matches!(
                token::verify_token(&ca, bad, now),
                Err(TokenError::BadFormat(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        token::verify_token(&ca, "!!!.e30.sig", now),
        Err(TokenError::BadBase64("header"))
    );
    let tok = token::issue_token(&ca, now, Duration::from_secs(60));
    let (_, jwt) = token::split_token(&tok).unwrap();
    // Go's RawURLEncoding rejects padding; so do we.
    let padded = format!("{jwt}=");
    assert_eq!(
        token::verify_token(&ca, &padded, now),
        Err(TokenError::BadBase64("signature"))
    );
    assert!(matches!(
        token::split_token("nothex.a.b.c"),
        Err(TokenError::BadFormat(_))
    ));
    assert!(matches!(
        token::split_token(jwt),
        Err(TokenError::BadFormat(_))
    ));
}
