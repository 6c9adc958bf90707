//! rustls configurations for cloudhub and edgehub, on the *ring* provider.
//!
//! Mirrors upstream's `createTLSConfig`: TLS 1.2 minimum, and for TLS 1.2 only
//! the ECDHE-ECDSA AES-GCM / ChaCha20 suites (our keys are all P-256). TLS 1.3
//! suites stay enabled; Go negotiates TLS 1.3 with the same peers.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring as ring_provider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::cert;
use crate::identity::{self, IdentityError};
use crate::key::EcKeyPair;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA certificate cannot be used as a trust anchor.
    #[error("ca certificate is not a usable trust anchor: {0}")]
    BadCaCertificate(String),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the certificate/key or protocol settings.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The *ring* provider with upstream's cipher-suite list.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use ring_provider::cipher_suite as cs;
    let mut provider = ring_provider::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, TlsConfigError> {
    roots_of(&[ca_der])
}

fn roots_of(cas: &[&[u8]]) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for ca_der in cas {
        store
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| TlsConfigError::BadCaCertificate(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

fn server_config(
    ca_der: &[u8],
    cert_der: &[u8],
    key: &EcKeyPair,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsConfigError> {
    server_config_trusting(&[ca_der], cert_der, key, require_client_cert)
}

/// cloudstream's stream server: clients from any of `client_cas` (the cluster CA that signed
/// kube-apiserver's kubelet client certificate, and ours for the other cloudcores).
pub fn server_config_mtls_any_of(
    client_cas: &[&[u8]],
    server_cert_der: &[u8],
    server_key: &EcKeyPair,
) -> Result<ServerConfig, TlsConfigError> {
    server_config_trusting(client_cas, server_cert_der, server_key, true)
}

fn server_config_trusting(
    client_cas: &[&[u8]],
    cert_der: &[u8],
    key: &EcKeyPair,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsConfigError> {
    let provider = crypto_provider();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(roots_of(client_cas)?, provider.clone());
    if !require_client_cert {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            key.rustls_private_key(),
        )?)
}

/// CloudHub's WebSocket server (`:10000`): clients must present a
/// certificate chaining to our CA (`RequireAndVerifyClientCert`).
pub fn server_config_mtls(
    ca_der: &[u8],
    server_cert_der: &[u8],
    server_key: &EcKeyPair,
) -> Result<ServerConfig, TlsConfigError> {
    server_config(ca_der, server_cert_der, server_key, true)
}

/// CloudHub's HTTPS server (`:10002`): client certificates are optional
/// (bootstrapping edges have only a token) but, when presented, must chain
/// to our CA — the `/edge.crt` handler then checks the subject with
/// [`identity::check_node_cert`]. Upstream asks with `RequestClientCert` and
/// verifies in the handler; verifying during the handshake rejects the same
/// certificates, just earlier.
pub fn server_config_optional_client_cert(
    ca_der: &[u8],
    server_cert_der: &[u8],
    server_key: &EcKeyPair,
) -> Result<ServerConfig, TlsConfigError> {
    server_config(ca_der, server_cert_der, server_key, false)
}

/// EdgeHub's connection to CloudHub, and certificate rotation: trusts only
/// our CA and presents the edge certificate.
pub fn client_config_mtls(
    ca_der: &[u8],
    client_cert_der: &[u8],
    client_key: &EcKeyPair,
) -> Result<ClientConfig, TlsConfigError> {
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots(ca_der)?)
        .with_client_auth_cert(
            vec![CertificateDer::from(client_cert_der.to_vec())],
            client_key.rustls_private_key(),
        )?)
}

/// The bootstrap `GET /edge.crt`: trusts only our (hash-pinned) CA, no client
/// certificate (the request carries the bearer token instead).
pub fn client_config_ca_only(ca_der: &[u8]) -> Result<ClientConfig, TlsConfigError> {
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots(ca_der)?)
        .with_no_client_auth())
}

/// The very first `GET /ca.crt`, which cannot verify the server because the
/// edge does not have the CA yet. See [`UnverifiedServerForCaFetch`].
pub fn client_config_for_ca_fetch() -> Result<ClientConfig, TlsConfigError> {
    client_config_unverified()
}

/// HTTPS liveness, readiness and startup probes, which kubelet runs without verifying the
/// container's certificate (containers serve self-signed ones). A probe learns only a status
/// code, so a forged server can at worst fake a probe result of the pod it impersonates.
pub fn client_config_for_probes() -> Result<ClientConfig, TlsConfigError> {
    client_config_unverified()
}

fn client_config_unverified() -> Result<ClientConfig, TlsConfigError> {
    let provider = crypto_provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedServerForCaFetch { provider }))
        .with_no_client_auth())
}

/// Accepts any server certificate. Use **only** for downloading `/ca.crt` (and for probes, see
/// [`client_config_for_probes`]).
///
/// This is safe only because nothing received over that connection is
/// trusted as-is: the downloaded CA must hash to the first segment of the
/// join token ([`crate::token::verify_ca_hash`]) before it is written or used,
/// and every later connection verifies the server against that pinned CA. An
/// attacker in the middle can at worst make the bootstrap fail.
///
/// The handshake signature is still checked against the presented
/// certificate's key, so the peer at least holds the key it shows.
#[derive(Debug)]
pub struct UnverifiedServerForCaFetch {
    provider: Arc<CryptoProvider>,
}

impl UnverifiedServerForCaFetch {
    /// A verifier using our *ring* provider's signature algorithms.
    pub fn new() -> Self {
        Self {
            provider: crypto_provider(),
        }
    }
}

impl Default for UnverifiedServerForCaFetch {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for UnverifiedServerForCaFetch {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// CN of the peer's leaf certificate, from e.g.
/// `rustls::ServerConnection::peer_certificates()`.
pub fn peer_common_name(
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<String, IdentityError> {
    let leaf = peer_certificates
        .and_then(<[_]>::first)
        .ok_or(IdentityError::NoPeerCertificate)?;
    cert::cert_info(leaf)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?
        .common_name
        .ok_or(IdentityError::NoCommonName)
}

/// CloudHub's connection authorization: the (already chain-verified) peer
/// certificate's CN must be `system:node:<node_id>`, `node_id` being the
/// `node_id` upgrade header.
pub fn authorize_peer_node(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    node_id: &str,
) -> Result<(), IdentityError> {
    let cn = peer_common_name(peer_certificates)?;
    if cn == identity::node_common_name(node_id) {
        Ok(())
    } else {
        Err(IdentityError::SubjectMismatch {
            node: node_id.to_owned(),
            found_cn: cn,
            found_o: Vec::new(),
        })
    }
}
