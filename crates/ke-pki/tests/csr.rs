//! Edge CSRs: built by the edge side, signed (or refused) by the CA.

use std::time::{Duration, SystemTime};

use ke_pki::{
    CertificateAuthority, CsrError, EdgeKeyPair, ExtKeyUsage, cert_info, cert_matches_node,
    edge_cert_validity, identity, parse_ext_key_usages_header,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer as _, X509Certificate};

const NODE: &str = "edge-1";

fn sign(ca: &CertificateAuthority, csr: &[u8], node: &str) -> Result<Vec<u8>, CsrError> {
    ca.sign_edge_csr(
        csr,
        node,
        &[ExtKeyUsage::ClientAuth],
        edge_cert_validity(365).unwrap(),
        SystemTime::now(),
    )
}

#[test]
fn csr_has_upstream_subject() {
    let csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    let (rest, req) = X509CertificationRequest::from_der(&csr).unwrap();
    assert!(rest.is_empty());
    req.verify_signature().unwrap();
    let subject = req.certification_request_info.subject.to_string();
    assert_eq!(
        subject,
        "C=CN, ST=Zhejiang, L=Hangzhou, O=system:nodes, CN=system:node:edge-1"
    );
    // Go writes these as PrintableString (tag 0x13).
    let cn = req
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .unwrap();
    assert_eq!(cn.attr_value().header.tag().0, 0x13);
}

#[test]
fn signed_cert_has_node_identity_and_chains_to_ca() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let kp = EdgeKeyPair::generate().unwrap();
    let csr = kp.build_csr(NODE).unwrap();
    let now = SystemTime::now();
    let usages = parse_ext_key_usages_header(None).unwrap();
    let der = ca
        .sign_edge_csr(&csr, NODE, &usages, edge_cert_validity(30).unwrap(), now)
        .unwrap();

    let info = cert_info(&der).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("system:node:edge-1"));
    assert_eq!(info.organizations, vec!["system:nodes".to_string()]);
    assert!(info.client_auth && !info.server_auth && !info.is_ca);
    let after = info.not_after.duration_since(now).unwrap().as_secs();
    assert!(after.abs_diff(30 * 86400) <= 1, "{after}");
    assert!(info.not_before <= now);
    assert!(cert_matches_node(&der, NODE));
    assert!(!cert_matches_node(&der, "edge-2"));

    // Chains to the CA (signature check with the CA's key) and carries the
    // key from the CSR.
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.ca_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        kp.key().public_key_raw()
    );
    assert!(ca.has_signed(&der));
    let other = CertificateAuthority::generate(SystemTime::now()).unwrap();
    assert!(!other.has_signed(&der));

    // /edge.crt rotation check: subject must match the NodeName header.
    identity::check_node_cert(&der, NODE, false).unwrap();
    assert!(identity::check_node_cert(&der, "edge-2", true).is_err());
}

#[test]
fn ext_key_usages_header_is_honoured() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    let usages = parse_ext_key_usages_header(Some("[1,2]")).unwrap();
    let der = ca
        .sign_edge_csr(
            &csr,
            NODE,
            &usages,
            Duration::from_secs(86400),
            SystemTime::now(),
        )
        .unwrap();
    let info = cert_info(&der).unwrap();
    assert!(info.server_auth && info.client_auth);
    // Still no SANs, whatever is asked for.
    assert!(info.ip_sans.is_empty() && info.dns_sans.is_empty());
}

#[test]
fn csr_for_another_node_is_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let csr = EdgeKeyPair::generate()
        .unwrap()
        .build_csr("edge-2")
        .unwrap();
    let err = sign(&ca, &csr, NODE).unwrap_err();
    match &err {
        CsrError::CommonNameMismatch {
            node,
            expected,
            found,
        } => {
            assert_eq!(node, NODE);
            assert_eq!(expected, "system:node:edge-1");
            assert_eq!(found, "system:node:edge-2");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("system:node:edge-2"));
}

#[test]
fn legacy_and_empty_cn_get_the_node_subject() {
    // Pre-1.17 edgecores send CN=kubeedge.io; the subject is taken from NodeName.
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    for cn in [Some("kubeedge.io"), None] {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let csr = params.serialize_request(&kp).unwrap();
        let der = sign(&ca, csr.der(), NODE).unwrap();
        assert!(cert_matches_node(&der, NODE));
    }
}

#[test]
fn invalid_node_name_is_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    assert!(matches!(sign(&ca, &csr, ""), Err(CsrError::NodeName(_))));
    assert!(matches!(
        sign(&ca, &csr, "Edge_1"),
        Err(CsrError::NodeName(_))
    ));
}

#[test]
fn garbage_is_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    for body in [&b""[..], b"hello", &[0x30, 0x82, 0xff, 0xff, 0x00]] {
        let err = sign(&ca, body, NODE).unwrap_err();
        assert!(matches!(err, CsrError::Malformed(_)), "{err:?}");
        assert!(err.to_string().starts_with("malformed csr"));
    }
    let mut csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    csr.push(0);
    assert!(matches!(sign(&ca, &csr, NODE), Err(CsrError::Malformed(_))));
}

#[test]
fn rsa_csr_is_rejected() {
    // Made with `openssl req -new -newkey rsa:2048` (ring cannot generate RSA keys).
    let pem = include_str!("fixtures/rsa2048.csr.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let err = sign(&ca, &der, NODE).unwrap_err();
    assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "unsupported csr key rsa (2048 bits): only ecdsa p-256 keys are accepted"
    );
}

#[test]
fn p384_and_ed25519_csrs_are_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:edge-1");

    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = params.serialize_request(&p384).unwrap();
    let err = sign(&ca, csr.der(), NODE).unwrap_err();
    assert!(err.to_string().contains("p-384"), "{err}");

    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = params.serialize_request(&ed).unwrap();
    let err = sign(&ca, csr.der(), NODE).unwrap_err();
    assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err:?}");
}

#[test]
fn csr_with_bad_signature_is_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let mut csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    // Change "Hangzhou" to "Hangzhoa": still valid DER, signature no longer matches.
    let pos = csr.windows(8).position(|w| w == b"Hangzhou").unwrap();
    csr[pos + 7] = b'a';
    let err = sign(&ca, &csr, NODE).unwrap_err();
    assert!(matches!(err, CsrError::BadSignature(_)), "{err:?}");
    assert!(err.to_string().starts_with("csr signature does not verify"));
}

#[test]
fn empty_usages_are_rejected() {
    let ca = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let csr = EdgeKeyPair::generate().unwrap().build_csr(NODE).unwrap();
    assert!(matches!(
        ca.sign_edge_csr(&csr, NODE, &[], Duration::from_secs(60), SystemTime::now()),
        Err(CsrError::NoExtKeyUsage)
    ));
}
