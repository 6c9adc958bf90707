//! CA and server-certificate files: creation, reload, formats, permissions.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::SystemTime;

use ke_pki::persist::{self, BootstrapReason};
use ke_pki::{
    CertificateAuthority, EcKeyPair, EdgeKeyPair, ExtKeyUsage, Origin, PersistError,
    RegenerateReason, ServerCert, ServerCertSpec, cert_info, token,
};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn ca_is_created_once_and_reloaded_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca/rootCA.crt");
    let key = dir.path().join("ca/rootCA.key");

    let (created, origin) = CertificateAuthority::load_or_create(&cert, &key).unwrap();
    assert_eq!(origin, Origin::Created);
    let (loaded, origin) = CertificateAuthority::load_or_create(&cert, &key).unwrap();
    assert_eq!(origin, Origin::Loaded);
    assert_eq!(loaded.ca_der(), created.ca_der());
    assert_eq!(loaded.ca_key_der(), created.ca_key_der());

    // Upstream's file formats and permissions.
    let cert_text = fs::read_to_string(&cert).unwrap();
    let key_text = fs::read_to_string(&key).unwrap();
    assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(key_text.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    assert!(key_text.ends_with("-----END EC PRIVATE KEY-----\n"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);

    // The token HMAC key is the PEM body of the key file, exactly as upstream
    // reads it, so a token made before a restart still verifies after it.
    let tok = token::issue_token(&created, SystemTime::now(), token::token_validity(12));
    token::verify_token(&loaded, &tok, SystemTime::now()).unwrap();
}

#[test]
fn partial_ca_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("rootCA.crt");
    let key = dir.path().join("rootCA.key");
    fs::write(&key, "precious").unwrap();
    let err = CertificateAuthority::load_or_create(&cert, &key).unwrap_err();
    assert!(matches!(err, PersistError::IncompleteCa { .. }), "{err}");
    assert!(err.to_string().contains("rootCA.key"));
    assert_eq!(fs::read_to_string(&key).unwrap(), "precious");
}

#[test]
fn ca_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("rootCA.crt");
    let key = dir.path().join("rootCA.key");
    fs::write(&cert, "not a certificate").unwrap();
    fs::write(&key, "not a key").unwrap();
    let err = CertificateAuthority::load(&cert, &key).unwrap_err();
    assert!(matches!(err, PersistError::Cert { .. }));
    assert!(err.to_string().contains("rootCA.crt"), "{err}");

    // Key that belongs to another CA.
    let a = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let b = CertificateAuthority::generate(SystemTime::now()).unwrap();
    fs::write(&cert, a.ca_pem()).unwrap();
    fs::write(&key, b.ca_key_pem()).unwrap();
    let err = CertificateAuthority::load(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn pkcs8_ca_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("rootCA.crt");
    let key = dir.path().join("rootCA.key");
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    fs::write(&cert, ca.ca_pem()).unwrap();
    let pkcs8 = EcKeyPair::from_pem(&ca.ca_key_pem()).unwrap();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(pkcs8.pkcs8_der())
    };
    fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let loaded = CertificateAuthority::load(&cert, &key).unwrap();
    // Converted to the same SEC1 bytes the Go side would use.
    assert_eq!(loaded.ca_key_der(), ca.ca_key_der());
}

#[test]
fn server_cert_follows_advertise_address() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = CertificateAuthority::load_or_create(
        &dir.path().join("ca/rootCA.crt"),
        &dir.path().join("ca/rootCA.key"),
    )
    .unwrap();
    let cert = dir.path().join("certs/server.crt");
    let key = dir.path().join("certs/server.key");
    let spec = ServerCertSpec::from_config(
        &strings(&["192.0.2.1", "2001:db8::1"]),
        &strings(&["", "cloudcore.example.com"]),
    )
    .unwrap();

    let (first, origin) = ServerCert::load_or_create(&cert, &key, &ca, &spec).unwrap();
    assert_eq!(origin, Origin::Created);
    let info = cert_info(first.cert_der()).unwrap();
    assert_eq!(
        info.ip_sans,
        vec![
            "192.0.2.1".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(info.dns_sans, strings(&["cloudcore.example.com"]));
    assert!(info.server_auth);
    assert_eq!(mode(&key), 0o600);
    assert!(
        fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );

    let (again, origin) = ServerCert::load_or_create(&cert, &key, &ca, &spec).unwrap();
    assert_eq!(origin, Origin::Loaded);
    assert_eq!(again.cert_der(), first.cert_der());

    // The operator changes advertiseAddress: the old cert would fail the
    // edges' hostname check, so it is replaced.
    let moved = ServerCertSpec::from_config(&strings(&["198.51.100.7"]), &[]).unwrap();
    let (third, origin) = ServerCert::load_or_create(&cert, &key, &ca, &moved).unwrap();
    assert_eq!(
        origin,
        Origin::Regenerated(RegenerateReason::MissingSans(strings(&["198.51.100.7"])))
    );
    let ips = cert_info(third.cert_der()).unwrap().ip_sans;
    assert_eq!(
        ips,
        vec!["198.51.100.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        ServerCert::load(&cert, &key).unwrap().cert_der(),
        third.cert_der()
    );

    // A new CA also invalidates it.
    let other = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let (_, origin) = ServerCert::load_or_create(&cert, &key, &other, &moved).unwrap();
    assert_eq!(origin, Origin::Regenerated(RegenerateReason::NotIssuedByCa));

    // A garbage file is replaced too (it is derived material).
    fs::write(&cert, "garbage").unwrap();
    let (_, origin) = ServerCert::load_or_create(&cert, &key, &other, &moved).unwrap();
    assert!(matches!(
        origin,
        Origin::Regenerated(RegenerateReason::Unreadable(_))
    ));
}

#[test]
fn edge_files_and_bootstrap_decision() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca/rootCA.crt");
    let cert_file = dir.path().join("certs/server.crt");
    let key_file = dir.path().join("certs/server.key");
    let node = "edge-1";
    assert!(persist::edge_needs_bootstrap(&cert_file, &key_file, node));
    assert_eq!(
        persist::edge_bootstrap_reason(&cert_file, &key_file, node),
        Some(BootstrapReason::Missing)
    );

    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    persist::write_ca_cert(&ca_file, ca.ca_der()).unwrap();
    assert_eq!(persist::read_cert_file(&ca_file).unwrap(), ca.ca_der());

    let kp = EdgeKeyPair::generate().unwrap();
    let csr = kp.build_csr(node).unwrap();
    let cert = ca
        .sign_edge_csr(
            &csr,
            node,
            &[ExtKeyUsage::ClientAuth],
            ke_pki::edge_cert_validity(365).unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    persist::write_edge_cert_and_key(&cert_file, &key_file, &cert, &kp).unwrap();
    assert_eq!(mode(&key_file), 0o600);
    assert!(
        fs::read_to_string(&key_file)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let (cert_back, key_back) = persist::read_edge_cert_and_key(&cert_file, &key_file).unwrap();
    assert_eq!(cert_back, cert);
    assert_eq!(key_back.key().sec1_der(), kp.key().sec1_der());
    assert_eq!(
        persist::edge_bootstrap_reason(&cert_file, &key_file, node),
        None
    );

    // Renamed node: must bootstrap again.
    assert_eq!(
        persist::edge_bootstrap_reason(&cert_file, &key_file, "edge-2"),
        Some(BootstrapReason::WrongNode {
            found: Some("system:node:edge-1".into())
        })
    );
    // Key replaced without the certificate.
    fs::write(&key_file, EdgeKeyPair::generate().unwrap().key_pem()).unwrap();
    assert_eq!(
        persist::edge_bootstrap_reason(&cert_file, &key_file, node),
        Some(BootstrapReason::KeyMismatch)
    );
}
