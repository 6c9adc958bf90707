//! Client certificates for Kubernetes users (`CN` = user name, `O` = groups), as kubeadm issues
//! `kubernetes-admin` for `admin.conf`. Used by the embedded API server for its admin kubeconfig;
//! edge nodes never get these (their certificates come from [`CertificateAuthority::sign_edge_csr`]).

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
};

use crate::ca::CertificateAuthority;
use crate::cert;
use crate::csr::CLOCK_SKEW_ALLOWANCE;
use crate::key::{EcKeyPair, KeyError};

/// Why a user client certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum UserCertError {
    /// The user name is empty.
    #[error("user client certificate needs a non-empty user name")]
    EmptyUser,
    /// Key generation failed.
    #[error("user client certificate key: {0}")]
    Key(#[from] KeyError),
    /// Signing failed.
    #[error("signing user client certificate failed: {0}")]
    Sign(String),
}

impl CertificateAuthority {
    /// Issues a clientAuth-only certificate with a fresh P-256 key for Kubernetes user `user` in
    /// `groups` (e.g. `kubernetes-admin` in `system:masters`). Returns the DER and the key.
    pub fn issue_user_client_cert(
        &self,
        user: &str,
        groups: &[&str],
        validity: Duration,
        now: SystemTime,
    ) -> Result<(Vec<u8>, EcKeyPair), UserCertError> {
        if user.is_empty() {
            return Err(UserCertError::EmptyUser);
        }
        let key = EcKeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, cert::dn_value(g));
        }
        dn.push(DnType::CommonName, cert::dn_value(user));
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = cert::to_offset(now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now))
            .map_err(UserCertError::Sign)?;
        params.not_after = cert::to_offset(now + validity).map_err(UserCertError::Sign)?;
        params.serial_number = Some(cert::random_serial().map_err(UserCertError::Sign)?);
        let issuer = self.issuer().map_err(UserCertError::Sign)?;
        let kp = key.rcgen_key_pair()?;
        let cert = params
            .signed_by(&kp, &issuer)
            .map_err(|e| UserCertError::Sign(e.to_string()))?;
        Ok((cert.der().to_vec(), key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_cert_has_user_and_groups() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate(now).unwrap();
        let day = Duration::from_secs(86_400);
        let (der, key) = ca
            .issue_user_client_cert("kubernetes-admin", &["system:masters"], day, now)
            .unwrap();
        let info = cert::cert_info(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("kubernetes-admin"));
        assert_eq!(info.organizations, vec!["system:masters".to_string()]);
        assert!(info.client_auth && !info.server_auth && !info.is_ca);
        assert!(ca.has_signed(&der));
        assert_eq!(cert::public_key_bits(&der).unwrap(), key.public_key_raw());
        assert!(matches!(
            ca.issue_user_client_cert("", &[], day, now),
            Err(UserCertError::EmptyUser)
        ));
    }
}
