//! In-memory TLS handshakes between the configurations cloudhub and edgehub use.

use std::sync::Arc;
use std::time::SystemTime;

use ke_pki::{
    CertificateAuthority, EdgeKeyPair, ExtKeyUsage, IdentityError, ServerCert, ServerCertSpec,
    edge_cert_validity, tls,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SERVER_IP: &str = "192.0.2.10";

struct Cloud {
    ca: CertificateAuthority,
    server: ServerCert,
}

fn cloud() -> Cloud {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let spec =
        ServerCertSpec::from_config(&[SERVER_IP.into()], &["cloudcore.example".into()]).unwrap();
    let server = ServerCert::issue(&ca, &spec, SystemTime::now()).unwrap();
    Cloud { ca, server }
}

fn edge_cert(ca: &CertificateAuthority, node: &str) -> (Vec<u8>, EdgeKeyPair) {
    let kp = EdgeKeyPair::generate().unwrap();
    let csr = kp.build_csr(node).unwrap();
    let der = ca
        .sign_edge_csr(
            &csr,
            node,
            &[ExtKeyUsage::ClientAuth],
            edge_cert_validity(365).unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    (der, kp)
}

/// Runs one handshake plus a ping/pong; returns the server-side peer CN
/// result, or the first error from either side.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    server_name: &str,
) -> Result<Result<String, IdentityError>, String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_string()).unwrap();

    let server_task = tokio::spawn(async move {
        let mut tls = acceptor
            .accept(s)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let cn = tls::peer_common_name(tls.get_ref().1.peer_certificates());
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        tls.write_all(b"pong")
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("server flush: {e}"))?;
        Ok::<_, String>(cn)
    });
    let client_result = async {
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| format!("client: {e}"))?;
        tls.write_all(b"ping")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("client flush: {e}"))?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_result = server_task.await.map_err(|e| e.to_string())?;
    match (server_result, client_result) {
        (Ok(cn), Ok(())) => Ok(cn),
        (s, c) => Err(format!("{:?} / {:?}", s.err(), c.err())),
    }
}

#[tokio::test]
async fn mtls_with_a_good_edge_cert() {
    let cloud = cloud();
    let (cert, kp) = edge_cert(&cloud.ca, "edge-1");
    let server = tls::server_config_mtls(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();
    let client = tls::client_config_mtls(cloud.ca.ca_der(), &cert, kp.key()).unwrap();
    let cn = handshake(server.clone(), client.clone(), SERVER_IP)
        .await
        .unwrap();
    assert_eq!(cn.unwrap(), "system:node:edge-1");
    // DNS SAN works as well.
    handshake(server, client, "cloudcore.example")
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn mtls_rejects_cert_from_another_ca() {
    let cloud = cloud();
    let rogue = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let (cert, kp) = edge_cert(&rogue, "edge-1");
    let server = tls::server_config_mtls(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();
    let client = tls::client_config_mtls(cloud.ca.ca_der(), &cert, kp.key()).unwrap();
    let err = handshake(server, client, SERVER_IP).await.unwrap_err();
    // Same issuer name as our CA, but the signature does not verify.
    assert!(err.contains("server: invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn mtls_requires_a_client_cert() {
    let cloud = cloud();
    let server = tls::server_config_mtls(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();
    let client = tls::client_config_ca_only(cloud.ca.ca_der()).unwrap();
    let err = handshake(server, client, SERVER_IP).await.unwrap_err();
    assert!(err.contains("server: peer sent no certificates"), "{err}");
}

#[tokio::test]
async fn edge_rejects_a_server_from_another_ca_or_name() {
    let cloud = cloud();
    let imposter = self::cloud();
    let server = tls::server_config_optional_client_cert(
        imposter.ca.ca_der(),
        imposter.server.cert_der(),
        imposter.server.key(),
    )
    .unwrap();
    let client = tls::client_config_ca_only(cloud.ca.ca_der()).unwrap();
    let err = handshake(server, client, SERVER_IP).await.unwrap_err();
    assert!(err.contains("client: invalid peer certificate"), "{err}");

    // Right CA, but an address not in the SANs.
    let server = tls::server_config_optional_client_cert(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();
    let client = tls::client_config_ca_only(cloud.ca.ca_der()).unwrap();
    let err = handshake(server, client, "198.51.100.1").await.unwrap_err();
    assert!(
        err.contains("not valid for name") && err.contains("198.51.100.1"),
        "{err}"
    );
}

#[tokio::test]
async fn https_endpoint_takes_token_clients_and_cert_clients() {
    let cloud = cloud();
    let server = tls::server_config_optional_client_cert(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();

    // Bootstrap: first /ca.crt without verification, then /edge.crt pinned to the CA.
    let fetch = tls::client_config_for_ca_fetch().unwrap();
    let cn = handshake(server.clone(), fetch, "any.name.at.all")
        .await
        .unwrap();
    assert_eq!(cn, Err(IdentityError::NoPeerCertificate));
    let pinned = tls::client_config_ca_only(cloud.ca.ca_der()).unwrap();
    handshake(server.clone(), pinned, SERVER_IP)
        .await
        .unwrap()
        .unwrap_err();

    // Rotation: presents the current cert, which the handler then authorizes.
    let (cert, kp) = edge_cert(&cloud.ca, "edge-7");
    let client = tls::client_config_mtls(cloud.ca.ca_der(), &cert, kp.key()).unwrap();
    let cn = handshake(server.clone(), client, SERVER_IP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cn, "system:node:edge-7");

    // A foreign cert is still refused when presented.
    let rogue = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let (cert, kp) = edge_cert(&rogue, "edge-7");
    let client = tls::client_config_mtls(cloud.ca.ca_der(), &cert, kp.key()).unwrap();
    let err = handshake(server, client, SERVER_IP).await.unwrap_err();
    assert!(err.contains("server: invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn tls12_only_peer_still_connects() {
    let cloud = cloud();
    let (cert, kp) = edge_cert(&cloud.ca, "edge-1");
    let server = tls::server_config_mtls(
        cloud.ca.ca_der(),
        cloud.server.cert_der(),
        cloud.server.key(),
    )
    .unwrap();
    let provider = tls::crypto_provider();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(cloud.ca.ca_der().to_vec().into()).unwrap();
            r
        })
        .with_client_auth_cert(vec![cert.into()], kp.key().rustls_private_key())
        .unwrap();
    handshake(server, client, SERVER_IP).await.unwrap().unwrap();
}

#[test]
fn node_authorization_from_peer_certs() {
    let cloud = cloud();
    let (cert, _) = edge_cert(&cloud.ca, "edge-1");
    let certs = [rustls::pki_types::CertificateDer::from(cert)];
    tls::authorize_peer_node(Some(&certs), "edge-1").unwrap();
    let err = tls::authorize_peer_node(Some(&certs), "edge-2").unwrap_err();
    assert!(matches!(err, IdentityError::SubjectMismatch { .. }));
    assert_eq!(
        tls::authorize_peer_node(None, "edge-1"),
        Err(IdentityError::NoPeerCertificate)
    );
    assert_eq!(
        tls::peer_common_name(Some(&[cloud.server.cert_der().to_vec().into()])).unwrap(),
        "KubeEdge"
    );
}
