//! CloudCore's own serving certificate (`tlsCertFile` / `tlsPrivateKeyFile`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType,
};

use crate::ca::CertificateAuthority;
use crate::cert::{self, CertError};
use crate::key::{EcKeyPair, KeyError};
use crate::{PROJECT_NAME, pem};

/// Validity of the server certificate: the same ~100 years upstream uses
/// (`year100` in `pre_server.go`). It is long because nothing rotates it; the
/// SAN check in [`ServerCert::check`] is what replaces it when the
/// configuration changes.
pub const SERVER_CERT_VALIDITY: Duration = crate::ca::CA_VALIDITY;

/// Why a server certificate could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ServerCertError {
    /// `advertiseAddress` is empty (upstream refuses to start too).
    #[error("advertiseAddress must list at least one ip address")]
    NoAdvertiseAddress,
    /// An `advertiseAddress` entry is not an IP address.
    #[error("advertiseAddress entry {0:?} is not an ip address")]
    InvalidAdvertiseAddress(String),
    /// A `dnsNames` entry is not usable as a DNS SAN.
    #[error("dnsNames entry {0:?} is not a valid dns name")]
    InvalidDnsName(String),
    /// Certificate parsing failed.
    #[error("server certificate: {0}")]
    Cert(#[from] CertError),
    /// Key parsing or generation failed.
    #[error("server private key: {0}")]
    Key(#[from] KeyError),
    /// The key does not belong to the certificate.
    #[error("server private key does not match the server certificate")]
    KeyMismatch,
    /// Signing failed.
    #[error("server certificate generation failed: {0}")]
    Generate(String),
}

/// The names the server certificate must carry, from cloudcore's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertSpec {
    /// `advertiseAddress` entries (IP SANs).
    pub ips: Vec<IpAddr>,
    /// Non-empty `dnsNames` entries (DNS SANs), lowercase.
    pub dns_names: Vec<String>,
}

impl ServerCertSpec {
    /// Builds the spec from `cloudHub.advertiseAddress` and `cloudHub.dnsNames`.
    /// Empty DNS entries are skipped (the default config has `dnsNames: [""]`).
    pub fn from_config(
        advertise_address: &[String],
        dns_names: &[String],
    ) -> Result<Self, ServerCertError> {
        let mut ips = Vec::new();
        for a in advertise_address {
            let ip: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| ServerCertError::InvalidAdvertiseAddress(a.clone()))?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(ServerCertError::NoAdvertiseAddress);
        }
        let mut names = Vec::new();
        for d in dns_names {
            let d = d.trim().to_ascii_lowercase();
            if d.is_empty() {
                continue;
            }
            if !valid_dns_name(&d) {
                return Err(ServerCertError::InvalidDnsName(d));
            }
            if !names.contains(&d) {
                names.push(d);
            }
        }
        Ok(Self {
            ips,
            dns_names: names,
        })
    }
}

fn valid_dns_name(d: &str) -> bool {
    // Wildcards are allowed only as a whole left-most label.
    let d = d.strip_prefix("*.").unwrap_or(d);
    d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Why an existing server certificate has to be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegenerateReason {
    /// It was not signed by the current CA (e.g. the CA was recreated).
    NotIssuedByCa,
    /// It has expired or is not yet valid.
    OutsideValidity,
    /// Some configured addresses or names are not in its SANs — upstream's
    /// "x509: certificate is valid for A, not B" join failure.
    MissingSans(Vec<String>),
    /// The key file does not match the certificate.
    KeyMismatch,
    /// The files could not be parsed.
    Unreadable(String),
}

impl std::fmt::Display for RegenerateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotIssuedByCa => f.write_str("not signed by the current ca"),
            Self::OutsideValidity => f.write_str("expired or not yet valid"),
            Self::MissingSans(m) => write!(f, "sans do not cover {}", m.join(", ")),
            Self::KeyMismatch => f.write_str("key does not match certificate"),
            Self::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// CloudCore's server certificate and key.
#[derive(Clone, Debug)]
pub struct ServerCert {
    cert_der: Vec<u8>,
    key: EcKeyPair,
}

impl ServerCert {
    /// Issues a new server certificate: CN and O `KubeEdge`, SANs from `spec`,
    /// extended key usage serverAuth (as upstream), valid from `now` for
    /// [`SERVER_CERT_VALIDITY`].
    pub fn issue(
        ca: &CertificateAuthority,
        spec: &ServerCertSpec,
        now: SystemTime,
    ) -> Result<Self, ServerCertError> {
        let key = EcKeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, cert::dn_value(PROJECT_NAME));
        dn.push(DnType::CommonName, cert::dn_value(PROJECT_NAME));
        params.distinguished_name = dn;
        for d in &spec.dns_names {
            let name = d
                .clone()
                .try_into()
                .map_err(|_| ServerCertError::InvalidDnsName(d.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = cert::to_offset(now).map_err(ServerCertError::Generate)?;
        params.not_after =
            cert::to_offset(now + SERVER_CERT_VALIDITY).map_err(ServerCertError::Generate)?;
        params.serial_number = Some(cert::random_serial().map_err(ServerCertError::Generate)?);
        let issuer = ca.issuer().map_err(ServerCertError::Generate)?;
        let kp = key.rcgen_key_pair()?;
        let cert = params
            .signed_by(&kp, &issuer)
            .map_err(|e| ServerCertError::Generate(e.to_string()))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// Wraps an existing certificate and key, checking that they belong together.
    pub fn from_parts(cert_der: Vec<u8>, key: EcKeyPair) -> Result<Self, ServerCertError> {
        if cert::public_key_bits(&cert_der)? != key.public_key_raw() {
            return Err(ServerCertError::KeyMismatch);
        }
        Ok(Self { cert_der, key })
    }

    /// Loads from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, ServerCertError> {
        let cert_der = cert::cert_der_from_pem(cert_pem)?;
        let key = EcKeyPair::from_pem(key_pem)?;
        Self::from_parts(cert_der, key)
    }

    /// Certificate DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Certificate PEM.
    pub fn cert_pem(&self) -> String {
        pem::encode(pem::CERTIFICATE, &self.cert_der)
    }

    /// The key pair.
    pub fn key(&self) -> &EcKeyPair {
        &self.key
    }

    /// Checks that this certificate still fits `ca` and `spec` at `now`.
    pub fn check(
        &self,
        ca: &CertificateAuthority,
        spec: &ServerCertSpec,
        now: SystemTime,
    ) -> Result<(), RegenerateReason> {
        if !ca.has_signed(&self.cert_der) {
            return Err(RegenerateReason::NotIssuedByCa);
        }
        let info = cert::cert_info(&self.cert_der)
            .map_err(|e| RegenerateReason::Unreadable(e.to_string()))?;
        if now < info.not_before || now >= info.not_after {
            return Err(RegenerateReason::OutsideValidity);
        }
        let mut missing: Vec<String> = spec
            .ips
            .iter()
            .filter(|ip| !info.ip_sans.contains(ip))
            .map(ToString::to_string)
            .collect();
        missing.extend(
            spec.dns_names
                .iter()
                .filter(|d| !info.dns_sans.iter().any(|s| s.eq_ignore_ascii_case(d)))
                .cloned(),
        );
        if !missing.is_empty() {
            return Err(RegenerateReason::MissingSans(missing));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn spec_from_config() {
        let spec = ServerCertSpec::from_config(
            &s(&["10.0.0.1", " ::1 ", "10.0.0.1"]),
            &s(&["", "CloudCore.Example.com"]),
        )
        .unwrap();
        assert_eq!(spec.ips.len(), 2);
        assert_eq!(spec.dns_names, s(&["cloudcore.example.com"]));
        assert!(matches!(
            ServerCertSpec::from_config(&[], &[]),
            Err(ServerCertError::NoAdvertiseAddress)
        ));
        assert!(matches!(
            ServerCertSpec::from_config(&s(&["cloud.example"]), &[]),
            Err(ServerCertError::InvalidAdvertiseAddress(_))
        ));
        assert!(matches!(
            ServerCertSpec::from_config(&s(&["1.2.3.4"]), &s(&["bad name"])),
            Err(ServerCertError::InvalidDnsName(_))
        ));
    }

    #[test]
    fn issued_cert_carries_sans_and_detects_changes() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate(now).unwrap();
        let spec =
            ServerCertSpec::from_config(&s(&["192.0.2.10"]), &s(&["cloud.example.com"])).unwrap();
        let sc = ServerCert::issue(&ca, &spec, now).unwrap();
        let info = cert::cert_info(sc.cert_der()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("KubeEdge"));
        assert_eq!(info.organizations, s(&["KubeEdge"]));
        assert_eq!(info.ip_sans, spec.ips);
        assert_eq!(info.dns_sans, spec.dns_names);
        assert!(info.server_auth && !info.is_ca);
        assert!(ca.has_signed(sc.cert_der()));
        // A leaf whose subject equals its issuer's looks self-signed to
        // OpenSSL-based clients, which then refuse it.
        assert_ne!(
            cert::parse(sc.cert_der()).unwrap().subject().as_raw(),
            cert::parse(ca.ca_der()).unwrap().subject().as_raw()
        );
        assert_eq!(sc.check(&ca, &spec, now), Ok(()));

        let moved = ServerCertSpec::from_config(&s(&["192.0.2.99"]), &[]).unwrap();
        assert_eq!(
            sc.check(&ca, &moved, now),
            Err(RegenerateReason::MissingSans(s(&["192.0.2.99"])))
        );
        let other_ca = CertificateAuthority::generate(now).unwrap();
        assert_eq!(
            sc.check(&other_ca, &spec, now),
            Err(RegenerateReason::NotIssuedByCa)
        );
        assert_eq!(
            sc.check(
                &ca,
                &spec,
                now + SERVER_CERT_VALIDITY + Duration::from_secs(10)
            ),
            Err(RegenerateReason::OutsideValidity)
        );
    }
}
