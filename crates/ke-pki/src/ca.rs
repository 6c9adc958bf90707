//! The KubeEdge certificate authority (cloudcore's `rootCA.crt`/`rootCA.key`).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose,
};

use crate::cert::{self, CertError};
use crate::key::{EcKeyPair, KeyError};
use crate::{PROJECT_NAME, pem};

/// Upstream's `year100` constant: 364 × 100 days (sic).
pub const CA_VALIDITY: Duration = Duration::from_secs(364 * 100 * 24 * 3600);

/// Why a CA could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA certificate could not be read.
    #[error("ca certificate: {0}")]
    Cert(#[from] CertError),
    /// The CA key could not be read.
    #[error("ca private key: {0}")]
    Key(#[from] KeyError),
    /// The key does not belong to the certificate.
    #[error("ca private key does not match the ca certificate's public key")]
    KeyMismatch,
    /// Building or signing the certificate failed.
    #[error("ca certificate generation failed: {0}")]
    Generate(String),
}

/// A CA certificate plus its private key.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    cert_der: Vec<u8>,
    key: EcKeyPair,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA valid from `now` for [`CA_VALIDITY`].
    ///
    /// Subject `CN=KubeEdge` (no O, as upstream); key usages digitalSignature, keyCertSign,
    /// cRLSign; extended key usages serverAuth and clientAuth (as upstream);
    /// basic constraints CA without path-length limit.
    pub fn generate(now: SystemTime) -> Result<Self, CaError> {
        let key = EcKeyPair::generate()?;
        let params = ca_params(now)?;
        let kp = key.rcgen_key_pair()?;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// Wraps an existing certificate and key, checking that they belong together.
    pub fn from_parts(cert_der: Vec<u8>, key: EcKeyPair) -> Result<Self, CaError> {
        if cert::public_key_bits(&cert_der)? != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        Ok(Self { cert_der, key })
    }

    /// Loads from PEM text: a `CERTIFICATE` block and an `EC PRIVATE KEY` or
    /// `PRIVATE KEY` block.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let cert_der = cert::cert_der_from_pem(cert_pem)?;
        let key = EcKeyPair::from_pem(key_pem)?;
        Self::from_parts(cert_der, key)
    }

    /// CA certificate DER: the body of `GET /ca.crt` and the input of the
    /// token's CA hash.
    pub fn ca_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// CA private key as SEC1 DER — the join-token HMAC secret. Identical to
    /// upstream's `hubconfig.Config.CaKey` (the PEM body of `rootCA.key`).
    pub fn ca_key_der(&self) -> &[u8] {
        self.key.sec1_der()
    }

    /// The CA key pair.
    pub fn key(&self) -> &EcKeyPair {
        &self.key
    }

    /// CA certificate as PEM.
    pub fn ca_pem(&self) -> String {
        pem::encode(pem::CERTIFICATE, &self.cert_der)
    }

    /// CA key as SEC1 PEM (`EC PRIVATE KEY`).
    pub fn ca_key_pem(&self) -> String {
        self.key.to_sec1_pem()
    }

    /// `hex(sha256(ca_der))`, the first segment of a join token.
    pub fn ca_hash_hex(&self) -> String {
        crate::token::ca_hash_hex(&self.cert_der)
    }

    /// True when `cert_der` was signed by this CA's key.
    pub fn has_signed(&self, cert_der: &[u8]) -> bool {
        cert::is_signed_by(cert_der, &self.cert_der)
    }

    pub(crate) fn issuer(&self) -> Result<Issuer<'static, rcgen::KeyPair>, String> {
        let kp = self.key.rcgen_key_pair().map_err(|e| e.to_string())?;
        // Taking the issuer name from the certificate itself (not from our own
        // params) keeps issuer/subject bytes identical for CAs made by Go or
        // openssl, which chain building compares byte-for-byte.
        Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), kp).map_err(|e| e.to_string())
    }
}

fn ca_params(now: SystemTime) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // CN only, exactly like upstream's CA. Adding O=KubeEdge would make the
    // CA's subject identical to the server certificate's (CN=KubeEdge,
    // O=KubeEdge), and OpenSSL-based clients then take the server
    // certificate for a self-signed one and reject it.
    dn.push(DnType::CommonName, cert::dn_value(PROJECT_NAME));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = cert::to_offset(now).map_err(CaError::Generate)?;
    params.not_after = cert::to_offset(now + CA_VALIDITY).map_err(CaError::Generate)?;
    params.serial_number = Some(cert::random_serial().map_err(CaError::Generate)?);
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_has_upstream_shape() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate(now).unwrap();
        let info = cert::cert_info(ca.ca_der()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("KubeEdge"));
        assert!(info.organizations.is_empty());
        assert!(info.is_ca);
        assert!(info.server_auth && info.client_auth);
        let life = info.lifetime().as_secs();
        assert!(life.abs_diff(CA_VALIDITY.as_secs()) <= 1, "{life}");
        assert!(ca.has_signed(ca.ca_der()));
        let parsed = cert::parse(ca.ca_der()).unwrap();
        let ku = parsed.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    }

    #[test]
    fn pem_round_trip_and_key_mismatch() {
        let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
        let again = CertificateAuthority::from_pem(&ca.ca_pem(), &ca.ca_key_pem()).unwrap();
        assert_eq!(again.ca_der(), ca.ca_der());
        assert_eq!(again.ca_key_der(), ca.ca_key_der());
        let other = CertificateAuthority::generate(SystemTime::now()).unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(&ca.ca_pem(), &other.ca_key_pem()),
            Err(CaError::KeyMismatch)
        ));
    }
}
