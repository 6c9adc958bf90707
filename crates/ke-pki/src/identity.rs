//! Edge node identity in certificates: `CN=system:node:<node>, O=system:nodes`.

use crate::cert;

/// Prefix of an edge certificate's CN.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// Organization of edge certificates.
pub const NODES_ORGANIZATION: &str = "system:nodes";
/// CN of certificates issued by KubeEdge before v1.17 (with O `KubeEdge`);
/// upstream still accepts them when an edge rotates its certificate.
pub const LEGACY_EDGE_CN: &str = "kubeedge.io";

/// Why a node name or a certificate's identity was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The node name is not a Kubernetes node name (DNS-1123 subdomain).
    #[error(
        "invalid node name {0:?}: must be a lowercase dns-1123 subdomain of at most 253 characters"
    )]
    InvalidNodeName(String),
    /// The peer presented no certificate.
    #[error("no peer certificate presented")]
    NoPeerCertificate,
    /// The certificate could not be parsed.
    #[error("peer certificate: {0}")]
    BadCertificate(String),
    /// The certificate has no subject CN.
    #[error("certificate has no common name")]
    NoCommonName,
    /// The certificate names another node (or is not a node certificate).
    #[error("certificate subject (cn {found_cn:?}, o {found_o:?}) does not match node {node:?}")]
    SubjectMismatch {
        /// Node the caller claimed to be.
        node: String,
        /// CN found in the certificate.
        found_cn: String,
        /// O values found in the certificate.
        found_o: Vec<String>,
    },
}

/// `system:node:<node>`.
pub fn node_common_name(node: &str) -> String {
    format!("{NODE_CN_PREFIX}{node}")
}

/// Checks that `node` is a valid Kubernetes node name.
///
/// It ends up in a certificate subject and in the `NodeName` header, so
/// anything a Kubernetes API server would not accept is refused early.
pub fn validate_node_name(node: &str) -> Result<(), IdentityError> {
    let ok = !node.is_empty()
        && node.len() <= 253
        && node.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidNodeName(node.to_owned()))
    }
}

/// Checks a (chain-verified) certificate's subject against a node name, as
/// upstream's `/edge.crt` handler does for rotation requests: O must be
/// `system:nodes` and CN `system:node:<node>`; with `accept_legacy`, the
/// pre-1.17 `O=KubeEdge, CN=kubeedge.io` certificates also pass.
pub fn check_node_cert(
    cert_der: &[u8],
    node: &str,
    accept_legacy: bool,
) -> Result<(), IdentityError> {
    let info =
        cert::cert_info(cert_der).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let cn = info
        .common_name
        .clone()
        .ok_or(IdentityError::NoCommonName)?;
    let first_o = info.organizations.first().map(String::as_str);
    if accept_legacy && first_o == Some(crate::PROJECT_NAME) && cn == LEGACY_EDGE_CN {
        return Ok(());
    }
    if first_o == Some(NODES_ORGANIZATION) && cn == node_common_name(node) {
        return Ok(());
    }
    Err(IdentityError::SubjectMismatch {
        node: node.to_owned(),
        found_cn: cn,
        found_o: info.organizations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["edge-1", "a", "node.example.com", "n0"] {
            assert_eq!(validate_node_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Edge",
            "-x",
            "x-",
            "a..b",
            "a_b",
            "a b",
            &"x".repeat(254),
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
        assert_eq!(node_common_name("e1"), "system:node:e1");
    }
}
