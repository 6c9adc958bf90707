//! Edge side of the bootstrap: key pair and CSR (edgehub's CertManager).

use rcgen::{CertificateParams, DistinguishedName, DnType};

use crate::cert;
use crate::identity::{self, IdentityError, NODES_ORGANIZATION};
use crate::key::{EcKeyPair, KeyError};

/// Why the edge-side key or CSR could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The node name is invalid.
    #[error("node name: {0}")]
    NodeName(#[from] IdentityError),
    /// Key generation or parsing failed.
    #[error("edge private key: {0}")]
    Key(#[from] KeyError),
    /// CSR serialization failed.
    #[error("building csr failed: {0}")]
    Csr(String),
}

/// The edge's private key (written to `tlsPrivateKeyFile`).
#[derive(Clone, Debug)]
pub struct EdgeKeyPair(EcKeyPair);

impl EdgeKeyPair {
    /// A fresh P-256 key; upstream generates a new one for every request,
    /// including rotations.
    pub fn generate() -> Result<Self, EdgeError> {
        Ok(Self(EcKeyPair::generate()?))
    }

    /// Wraps an existing key (e.g. read back from `tlsPrivateKeyFile`).
    pub fn from_key(key: EcKeyPair) -> Self {
        Self(key)
    }

    /// The key pair.
    pub fn key(&self) -> &EcKeyPair {
        &self.0
    }

    /// SEC1 PEM (`EC PRIVATE KEY`), as upstream writes `edge.key`.
    pub fn key_pem(&self) -> String {
        self.0.to_sec1_pem()
    }

    /// DER PKCS#10 request with upstream's subject:
    /// `C=CN, ST=Zhejiang, L=Hangzhou, O=system:nodes, CN=system:node:<node>`
    /// (Go's attribute order and PrintableString encoding).
    pub fn build_csr(&self, node_name: &str) -> Result<Vec<u8>, EdgeError> {
        identity::validate_node_name(node_name)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, cert::dn_value("CN"));
        dn.push(DnType::StateOrProvinceName, cert::dn_value("Zhejiang"));
        dn.push(DnType::LocalityName, cert::dn_value("Hangzhou"));
        dn.push(DnType::OrganizationName, cert::dn_value(NODES_ORGANIZATION));
        dn.push(
            DnType::CommonName,
            cert::dn_value(&identity::node_common_name(node_name)),
        );
        params.distinguished_name = dn;
        let kp = self.0.rcgen_key_pair()?;
        let csr = params
            .serialize_request(&kp)
            .map_err(|e| EdgeError::Csr(e.to_string()))?;
        Ok(csr.der().to_vec())
    }
}

/// True when `cert_der` parses and its CN is `system:node:<node>` — the
/// condition upstream's EdgeHub uses to skip bootstrapping.
pub fn cert_matches_node(cert_der: &[u8], node: &str) -> bool {
    cert::cert_info(cert_der)
        .ok()
        .and_then(|i| i.common_name)
        .is_some_and(|cn| cn == identity::node_common_name(node))
}
