//! Getting and renewing the edge's certificate (upstream's CertManager).
//!
//! Join: fetch `/ca.crt` without verification, pin it against the hash in the join token, store
//! it; generate a P-256 key and CSR; `GET /edge.crt` with the CSR as the body, the token's JWT as
//! bearer and the node name in `NodeName`, verifying the server against the pinned CA; store the
//! certificate and key. Renewal does the same `/edge.crt` call authenticated by the current
//! certificate instead of a token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ke_pki::{EdgeKeyPair, persist};

use crate::EdgeHubSettings;
use crate::https::{self, HttpError};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "no certificate for node {node} at {cert} and no join token to get one (edgeHub.token)"
    )]
    NoToken { node: String, cert: String },
    #[error("join token: {0}")]
    Token(#[from] ke_pki::TokenError),
    #[error("downloaded CA does not match the join token: {0}")]
    CaPin(#[source] ke_pki::TokenError),
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("TLS setup: {0}")]
    Tls(#[from] ke_pki::TlsConfigError),
    #[error("key or CSR: {0}")]
    Key(#[from] ke_pki::EdgeError),
    #[error("certificate files: {0}")]
    Files(#[from] ke_pki::PersistError),
    #[error("the cloud returned a certificate that is not for node {node}")]
    WrongCertificate { node: String },
}

/// Whether cloudcore at `http_server` (`https://host:10002`) already has a node `node`
/// (`GET /node/<node>`: 200 yes, 404 no), as `keadm join` asks before joining. Unverified
/// TLS, like the CA fetch: nothing secret is sent or trusted.
pub async fn node_exists(http_server: &str, node: &str) -> Result<bool, BootstrapError> {
    let url = format!("{http_server}/node/{node}");
    let tls = ke_pki::tls::client_config_for_ca_fetch()?;
    match https::get(&url, tls, &[], Vec::new(), REQUEST_TIMEOUT).await {
        Ok(_) => Ok(true),
        Err(HttpError::Status { status, .. }) if status == hyper::StatusCode::NOT_FOUND => {
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether the edge has a usable certificate for its node name.
pub fn needs_join(settings: &EdgeHubSettings) -> bool {
    persist::edge_needs_bootstrap(&settings.cert_file, &settings.key_file, &settings.node_name)
}

/// Runs the join flow if the certificate is missing or names another node. Returns whether it
/// had to.
pub async fn ensure_certificate(settings: &EdgeHubSettings) -> Result<bool, BootstrapError> {
    if !needs_join(settings) {
        return Ok(false);
    }
    if settings.token.trim().is_empty() {
        return Err(BootstrapError::NoToken {
            node: settings.node_name.clone(),
            cert: settings.cert_file.display().to_string(),
        });
    }
    let (ca_hash, jwt) = ke_pki::token::split_token(settings.token.trim())?;
    let ca_der = https::get(
        &format!("{}/ca.crt", settings.http_server),
        ke_pki::tls::client_config_for_ca_fetch()?,
        &[],
        Vec::new(),
        REQUEST_TIMEOUT,
    )
    .await?;
    ke_pki::token::verify_ca_hash(&ca_der, ca_hash).map_err(BootstrapError::CaPin)?;
    persist::write_ca_cert(&settings.ca_file, &ca_der)?;
    tracing::info!(path = %settings.ca_file.display(), "CA downloaded and pinned by the join token");

    let tls = ke_pki::tls::client_config_ca_only(&ca_der)?;
    request_certificate(settings, tls, Some(jwt)).await?;
    Ok(true)
}

/// Renews the certificate with the current one as the credential (rotation).
pub async fn renew_certificate(settings: &EdgeHubSettings) -> Result<(), BootstrapError> {
    let ca_der = persist::read_cert_file(&settings.ca_file)?;
    let (cert_der, key) = persist::read_edge_cert_and_key(&settings.cert_file, &settings.key_file)?;
    let tls = ke_pki::tls::client_config_mtls(&ca_der, &cert_der, key.key())?;
    request_certificate(settings, tls, None).await
}

async fn request_certificate(
    settings: &EdgeHubSettings,
    tls: rustls::ClientConfig,
    bearer: Option<&str>,
) -> Result<(), BootstrapError> {
    let key = EdgeKeyPair::generate()?;
    let csr = key.build_csr(&settings.node_name)?;
    let mut headers = vec![("NodeName", settings.node_name.clone())];
    if let Some(jwt) = bearer {
        headers.push(("Authorization", format!("Bearer {jwt}")));
    }
    let cert_der = https::get(
        &format!("{}/edge.crt", settings.http_server),
        tls,
        &headers,
        csr,
        REQUEST_TIMEOUT,
    )
    .await?;
    if !ke_pki::cert_matches_node(&cert_der, &settings.node_name) {
        return Err(BootstrapError::WrongCertificate {
            node: settings.node_name.clone(),
        });
    }
    persist::write_edge_cert_and_key(&settings.cert_file, &settings.key_file, &cert_der, &key)?;
    tracing::info!(path = %settings.cert_file.display(), node = %settings.node_name, "edge certificate stored");
    Ok(())
}

/// When to renew the current certificate: 70–90 % into its lifetime (jittered), as upstream.
pub fn rotation_deadline(cert_file: &Path, jitter: f64) -> Option<SystemTime> {
    let der = persist::read_cert_file(cert_file).ok()?;
    let info = ke_pki::cert_info(&der).ok()?;
    Some(ke_pki::rotation_deadline(
        info.not_before,
        info.not_after,
        jitter,
    ))
}
