//! Reading certificates: subject, validity, SANs, usages, issuer signature.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::pem;

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM text holds no `CERTIFICATE` block.
    #[error("certificate pem: {0}")]
    Pem(String),
    /// The DER is not an X.509 certificate.
    #[error("malformed certificate der: {0}")]
    Malformed(String),
}

/// What a user usually wants to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject CN (first one, if any).
    pub common_name: Option<String>,
    /// Subject O values, in order.
    pub organizations: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// IP address SANs.
    pub ip_sans: Vec<IpAddr>,
    /// DNS name SANs.
    pub dns_sans: Vec<String>,
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
    /// Extended key usage includes serverAuth.
    pub server_auth: bool,
    /// Extended key usage includes clientAuth.
    pub client_auth: bool,
}

impl CertInfo {
    /// Total lifetime (`not_after - not_before`), zero if inverted.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Parses a DER certificate and summarises it.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CertError> {
    let cert = parse(der)?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    let mut ip_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_sans.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        _ => (false, false),
    };
    Ok(CertInfo {
        common_name,
        organizations,
        not_before: unix_to_system(cert.validity().not_before.timestamp()),
        not_after: unix_to_system(cert.validity().not_after.timestamp()),
        ip_sans,
        dns_sans,
        is_ca: cert.is_ca(),
        server_auth,
        client_auth,
    })
}

/// PEM-encodes a DER certificate (`-----BEGIN CERTIFICATE-----`).
pub fn cert_to_pem(der: &[u8]) -> String {
    pem::encode(pem::CERTIFICATE, der)
}

/// Extracts the first `CERTIFICATE` block's DER from PEM text.
pub fn cert_der_from_pem(text: &str) -> Result<Vec<u8>, CertError> {
    let (_, der) =
        pem::decode_first(text, &[pem::CERTIFICATE]).map_err(|e| CertError::Pem(e.to_string()))?;
    parse(&der)?;
    Ok(der)
}

/// True when `cert_der` carries a valid signature made by `ca_der`'s key.
pub fn is_signed_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok(cert), Ok(ca)) = (parse(cert_der), parse(ca_der)) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::Malformed(
            "trailing bytes after certificate".into(),
        )),
        Err(e) => Err(CertError::Malformed(e.to_string())),
    }
}

/// The raw public key bits of a certificate (the uncompressed point for EC).
pub(crate) fn public_key_bits(der: &[u8]) -> Result<Vec<u8>, CertError> {
    Ok(parse(der)?.public_key().subject_public_key.data.to_vec())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

pub(crate) fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn system_to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(system_to_unix(t))
        .map_err(|e| format!("time out of range: {e}"))
}

/// A random, positive, 16-byte serial number. Upstream uses random serials for
/// leaf certificates too; deriving them from the public key (rcgen's default)
/// would repeat serials if a key were ever reused.
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "system rng failed".to_string())?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// A DN string as Go writes it: PrintableString when every character allows
/// it, UTF8String otherwise. Keeping Go's choice makes our subjects
/// byte-identical to upstream's.
pub(crate) fn dn_value(s: &str) -> rcgen::DnValue {
    match rcgen::string::PrintableString::try_from(s) {
        Ok(p) => rcgen::DnValue::PrintableString(p),
        Err(_) => rcgen::DnValue::Utf8String(s.to_owned()),
    }
}
