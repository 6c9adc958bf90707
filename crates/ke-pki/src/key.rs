//! ECDSA P-256 private keys, the only key type KubeEdge uses.
//!
//! Upstream writes keys with Go's `x509.MarshalECPrivateKey` (SEC1,
//! `EC PRIVATE KEY`). The CA key's SEC1 DER bytes double as the join-token
//! HMAC secret, so a key loaded from SEC1 keeps the exact bytes it was read
//! from instead of being re-encoded.

use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::pem;

/// Why a private key was rejected.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM text holds no `EC PRIVATE KEY` or `PRIVATE KEY` block.
    #[error("private key pem: {0}")]
    Pem(String),
    /// The DER is not a SEC1 `ECPrivateKey` for P-256.
    #[error("invalid sec1 ec private key (only ecdsa p-256 is supported): {0}")]
    InvalidSec1(String),
    /// The DER is not a PKCS#8 P-256 key (RSA, P-384, Ed25519 … end up here).
    #[error("invalid pkcs#8 private key (only ecdsa p-256 is supported): {0}")]
    InvalidPkcs8(String),
    /// Key generation or the crypto backend failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// An ECDSA P-256 key pair.
#[derive(Clone)]
pub struct EcKeyPair {
    sec1_der: Vec<u8>,
    pkcs8_der: Vec<u8>,
    /// Uncompressed SEC1 point (65 bytes), as it appears in a SubjectPublicKeyInfo.
    public_key: Vec<u8>,
}

impl std::fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("EcKeyPair")
            .field("public_key_len", &self.public_key.len())
            .finish_non_exhaustive()
    }
}

impl EcKeyPair {
    /// Generates a fresh P-256 key from the operating system's RNG.
    pub fn generate() -> Result<Self, KeyError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_pkcs8_der(kp.serialized_der())
    }

    /// Loads a SEC1 `ECPrivateKey`; the bytes are kept verbatim.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        let secret = p256::SecretKey::from_sec1_der(der)
            .map_err(|e| KeyError::InvalidSec1(e.to_string()))?;
        let pkcs8 = secret
            .to_pkcs8_der()
            .map_err(|e| KeyError::InvalidSec1(e.to_string()))?;
        Self::assemble(der.to_vec(), pkcs8.as_bytes().to_vec())
    }

    /// Loads a PKCS#8 `PrivateKeyInfo` holding a P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let secret = p256::SecretKey::from_pkcs8_der(der)
            .map_err(|e| KeyError::InvalidPkcs8(e.to_string()))?;
        let sec1 = secret
            .to_sec1_der()
            .map_err(|e| KeyError::InvalidPkcs8(e.to_string()))?;
        // Re-encode so the PKCS#8 we hand to ring always carries the public key.
        let pkcs8 = secret
            .to_pkcs8_der()
            .map_err(|e| KeyError::InvalidPkcs8(e.to_string()))?;
        Self::assemble(sec1.to_vec(), pkcs8.as_bytes().to_vec())
    }

    /// Loads a key from PEM: `EC PRIVATE KEY` (SEC1, upstream's format) or
    /// `PRIVATE KEY` (PKCS#8).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem::decode_first(text, &[pem::EC_PRIVATE_KEY, pem::PRIVATE_KEY])
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        if label == pem::EC_PRIVATE_KEY {
            Self::from_sec1_der(&der)
        } else {
            Self::from_pkcs8_der(&der)
        }
    }

    fn assemble(sec1_der: Vec<u8>, pkcs8_der: Vec<u8>) -> Result<Self, KeyError> {
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8_der.as_slice()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| KeyError::InvalidPkcs8(e.to_string()))?;
        let public_key = kp.public_key_raw().to_vec();
        Ok(Self {
            sec1_der,
            pkcs8_der,
            public_key,
        })
    }

    /// SEC1 DER, byte-identical to what Go's `x509.MarshalECPrivateKey` produced
    /// for keys we generated, and to the file contents for keys we loaded.
    pub fn sec1_der(&self) -> &[u8] {
        &self.sec1_der
    }

    /// PKCS#8 DER (what ring and rustls consume).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// `-----BEGIN EC PRIVATE KEY-----` PEM, as upstream writes key files.
    pub fn to_sec1_pem(&self) -> String {
        pem::encode(pem::EC_PRIVATE_KEY, &self.sec1_der)
    }

    /// The uncompressed public point (`04 || X || Y`).
    pub fn public_key_raw(&self) -> &[u8] {
        &self.public_key
    }

    /// The key in the form rustls wants for `with_single_cert` / `with_client_auth_cert`.
    pub fn rustls_private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8_der.clone()))
    }

    pub(crate) fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, KeyError> {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.pkcs8_der.as_slice()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| KeyError::InvalidPkcs8(e.to_string()))
    }
}

/// A foreign P-256 public key (from a CSR) that rcgen can put into a certificate.
pub(crate) struct P256PublicKey(pub(crate) Vec<u8>);

impl rcgen::PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_go_shaped_sec1() {
        let key = EcKeyPair::generate().unwrap();
        let der = key.sec1_der();
        // Go's MarshalECPrivateKey for P-256: SEQUENCE(0x77) { version 1,
        // 32-byte privateKey, [0] prime256v1, [1] 65-byte public point }.
        assert_eq!(der.len(), 121);
        assert_eq!(&der[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
        assert_eq!(
            &der[39..51],
            &[
                0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
            ]
        );
        assert_eq!(&der[51..56], &[0xa1, 0x44, 0x03, 0x42, 0x00]);
        assert_eq!(&der[56..], key.public_key_raw());
        assert_eq!(key.public_key_raw().len(), 65);
    }

    #[test]
    fn pem_round_trips_in_both_formats() {
        let key = EcKeyPair::generate().unwrap();
        let sec1 = EcKeyPair::from_pem(&key.to_sec1_pem()).unwrap();
        assert_eq!(sec1.sec1_der(), key.sec1_der());
        let pkcs8_pem = crate::pem::encode(crate::pem::PRIVATE_KEY, key.pkcs8_der());
        let pkcs8 = EcKeyPair::from_pem(&pkcs8_pem).unwrap();
        assert_eq!(pkcs8.sec1_der(), key.sec1_der());
        assert_eq!(pkcs8.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn rejects_other_curves_and_garbage() {
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            EcKeyPair::from_pkcs8_der(p384.serialized_der()),
            Err(KeyError::InvalidPkcs8(_))
        ));
        assert!(matches!(
            EcKeyPair::from_sec1_der(b"nope"),
            Err(KeyError::InvalidSec1(_))
        ));
        assert!(matches!(
            EcKeyPair::from_pem("not pem"),
            Err(KeyError::Pem(_))
        ));
        let dbg = format!("{:?}", EcKeyPair::generate().unwrap());
        assert!(!dbg.contains("sec1"));
    }
}
