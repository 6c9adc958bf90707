//! Signing edge CSRs (cloudcore's `GET /edge.crt`).

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

use crate::ca::CertificateAuthority;
use crate::cert;
use crate::identity::{self, IdentityError, LEGACY_EDGE_CN, NODES_ORGANIZATION};
use crate::key::P256PublicKey;

/// Upstream's default `edgeCertSigningDuration` (days).
pub const DEFAULT_EDGE_CERT_SIGNING_DAYS: u32 = 365;

/// How far `notBefore` is backdated so an edge whose clock is slightly behind
/// cloudcore's does not reject a fresh certificate as "not yet valid".
/// (Upstream does not backdate; Kubernetes' CSR signer uses the same 5 min.)
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Why an edge CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The `NodeName` header is not a valid node name.
    #[error("nodename header: {0}")]
    NodeName(#[source] IdentityError),
    /// The body is not a DER PKCS#10 request.
    #[error("malformed csr der: {0}")]
    Malformed(String),
    /// The request's key is not ECDSA P-256.
    #[error("unsupported csr key {0}: only ecdsa p-256 keys are accepted")]
    UnsupportedKey(String),
    /// The request's self-signature does not verify.
    #[error("csr signature does not verify: {0}")]
    BadSignature(String),
    /// The CSR's CN names another node (or something that is not a node).
    #[error("csr common name {found:?} does not match node {node:?} (expected {expected:?})")]
    CommonNameMismatch {
        /// Node from the `NodeName` header.
        node: String,
        /// `system:node:<node>`.
        expected: String,
        /// CN in the CSR.
        found: String,
    },
    /// The `ExtKeyUsages` header is not a JSON array of integers.
    #[error("extkeyusages header {header:?} is not a json array of integers: {reason}")]
    BadExtKeyUsagesHeader {
        /// Raw header value.
        header: String,
        /// Parser message.
        reason: String,
    },
    /// The `ExtKeyUsages` header is an empty array.
    #[error("extkeyusages header must name at least one usage")]
    NoExtKeyUsage,
    /// The `ExtKeyUsages` header names a usage we do not issue.
    #[error("extkeyusages value {0} is not supported (only 1 = serverAuth, 2 = clientAuth)")]
    UnsupportedExtKeyUsage(i64),
    /// `edgeCertSigningDuration` is not positive.
    #[error("edgeCertSigningDuration must be at least 1 day, got {0}")]
    BadValidity(i64),
    /// Signing failed.
    #[error("signing edge certificate failed: {0}")]
    Sign(String),
}

/// Extended key usages an edge may ask for, numbered like Go's
/// `x509.ExtKeyUsage` (the wire format of the `ExtKeyUsages` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtKeyUsage {
    /// `x509.ExtKeyUsageServerAuth` = 1.
    ServerAuth,
    /// `x509.ExtKeyUsageClientAuth` = 2.
    ClientAuth,
}

impl ExtKeyUsage {
    /// Go's integer for this usage.
    pub fn go_value(self) -> i64 {
        match self {
            Self::ServerAuth => 1,
            Self::ClientAuth => 2,
        }
    }

    /// Maps Go's integer; other usages (code signing, …) are not issued to edges.
    pub fn from_go_value(v: i64) -> Result<Self, CsrError> {
        match v {
            1 => Ok(Self::ServerAuth),
            2 => Ok(Self::ClientAuth),
            other => Err(CsrError::UnsupportedExtKeyUsage(other)),
        }
    }

    fn to_rcgen(self) -> ExtendedKeyUsagePurpose {
        match self {
            Self::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Self::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// Parses the optional `ExtKeyUsages` header (`[1,2]`); absent or blank means
/// clientAuth only, as upstream.
pub fn parse_ext_key_usages_header(header: Option<&str>) -> Result<Vec<ExtKeyUsage>, CsrError> {
    let raw = header.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Ok(vec![ExtKeyUsage::ClientAuth]);
    }
    let values: Vec<i64> =
        serde_json::from_str(raw).map_err(|e| CsrError::BadExtKeyUsagesHeader {
            header: raw.to_owned(),
            reason: e.to_string(),
        })?;
    if values.is_empty() {
        return Err(CsrError::NoExtKeyUsage);
    }
    let mut out = Vec::new();
    for v in values {
        let u = ExtKeyUsage::from_go_value(v)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

/// Converts `edgeCertSigningDuration` (days, as in the config) to a duration.
pub fn edge_cert_validity(days: i64) -> Result<Duration, CsrError> {
    let d = u64::try_from(days)
        .ok()
        .filter(|d| *d > 0)
        .ok_or(CsrError::BadValidity(days))?;
    Ok(Duration::from_secs(d.saturating_mul(24 * 3600)))
}

impl CertificateAuthority {
    /// Signs an edge CSR.
    ///
    /// * `csr_der`: the request body of `GET /edge.crt`;
    /// * `node_name`: the `NodeName` header — the issued subject is always
    ///   `CN=system:node:<node_name>, O=system:nodes`, whatever the CSR asks;
    /// * `usages`: from [`parse_ext_key_usages_header`];
    /// * `validity`: from [`edge_cert_validity`].
    ///
    /// The CSR must be self-signed with an ECDSA P-256 key. Its CN must be
    /// `system:node:<node_name>`, or empty/`kubeedge.io` (what pre-1.17
    /// edgecores send); any other CN is refused, so a token holder cannot
    /// request a certificate while claiming to be another node. Requested SANs
    /// and extensions are ignored on purpose: an edge with a bootstrap token
    /// must not obtain a serverAuth certificate for cloudcore's address.
    pub fn sign_edge_csr(
        &self,
        csr_der: &[u8],
        node_name: &str,
        usages: &[ExtKeyUsage],
        validity: Duration,
        now: SystemTime,
    ) -> Result<Vec<u8>, CsrError> {
        identity::validate_node_name(node_name).map_err(CsrError::NodeName)?;
        if usages.is_empty() {
            return Err(CsrError::NoExtKeyUsage);
        }
        let public_key = verified_p256_key(csr_der, node_name)?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, cert::dn_value(NODES_ORGANIZATION));
        dn.push(
            DnType::CommonName,
            cert::dn_value(&identity::node_common_name(node_name)),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.iter().map(|u| u.to_rcgen()).collect();
        params.use_authority_key_identifier_extension = true;
        params.not_before = cert::to_offset(now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now))
            .map_err(CsrError::Sign)?;
        params.not_after = cert::to_offset(now + validity).map_err(CsrError::Sign)?;
        params.serial_number = Some(cert::random_serial().map_err(CsrError::Sign)?);

        let issuer = self.issuer().map_err(CsrError::Sign)?;
        let cert = params
            .signed_by(&P256PublicKey(public_key), &issuer)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

/// Parses the CSR, checks key type, self-signature and CN; returns the public point.
fn verified_p256_key(csr_der: &[u8], node_name: &str) -> Result<Vec<u8>, CsrError> {
    if csr_der.is_empty() {
        return Err(CsrError::Malformed("empty request body".into()));
    }
    let csr = match X509CertificationRequest::from_der(csr_der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(CsrError::Malformed("trailing bytes after csr".into())),
        Err(e) => return Err(CsrError::Malformed(e.to_string())),
    };
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;

    // Key type first: it gives the most useful message for RSA/P-384 requests.
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => {}
            Some(c) => {
                return Err(CsrError::UnsupportedKey(format!(
                    "ec curve {}",
                    curve_name(&c.to_id_string())
                )));
            }
            None => {
                return Err(CsrError::UnsupportedKey(
                    "ec key without named curve".into(),
                ));
            }
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => 0,
        };
        return Err(CsrError::UnsupportedKey(format!("rsa ({bits} bits)")));
    } else {
        return Err(CsrError::UnsupportedKey(format!(
            "algorithm {}",
            alg.to_id_string()
        )));
    }
    let point = spki.subject_public_key.data.to_vec();
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(CsrError::UnsupportedKey(
            "p-256 point is not in uncompressed form".into(),
        ));
    }

    csr.verify_signature()
        .map_err(|e| CsrError::BadSignature(e.to_string()))?;

    let expected = identity::node_common_name(node_name);
    let found = info
        .subject
        .iter_common_name()
        .next()
        .map(|a| a.as_str().map(str::to_owned))
        .transpose()
        .map_err(|e| CsrError::Malformed(format!("unreadable common name: {e}")))?
        .unwrap_or_default();
    if !(found == expected || found.is_empty() || found == LEGACY_EDGE_CN) {
        return Err(CsrError::CommonNameMismatch {
            node: node_name.to_owned(),
            expected,
            found,
        });
    }
    Ok(point)
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.34" => "p-384".into(),
        "1.3.132.0.35" => "p-521".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_key_usage_header() {
        assert_eq!(
            parse_ext_key_usages_header(None).unwrap(),
            vec![ExtKeyUsage::ClientAuth]
        );
        assert_eq!(
            parse_ext_key_usages_header(Some(" ")).unwrap(),
            vec![ExtKeyUsage::ClientAuth]
        );
        assert_eq!(
            parse_ext_key_usages_header(Some("[1,2,2]")).unwrap(),
            vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
        );
        assert!(matches!(
            parse_ext_key_usages_header(Some("[]")),
            Err(CsrError::NoExtKeyUsage)
        ));
        assert!(matches!(
            parse_ext_key_usages_header(Some("[3]")),
            Err(CsrError::UnsupportedExtKeyUsage(3))
        ));
        assert!(matches!(
            parse_ext_key_usages_header(Some("clientAuth")),
            Err(CsrError::BadExtKeyUsagesHeader { .. })
        ));
        for u in [ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth] {
            assert_eq!(ExtKeyUsage::from_go_value(u.go_value()).unwrap(), u);
        }
    }

    #[test]
    fn validity_days() {
        assert_eq!(
            edge_cert_validity(365).unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert!(matches!(
            edge_cert_validity(0),
            Err(CsrError::BadValidity(0))
        ));
        assert!(matches!(
            edge_cert_validity(-1),
            Err(CsrError::BadValidity(-1))
        ));
    }
}
