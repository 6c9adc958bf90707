//! KubeEdge-compatible PKI for cloudcore and edgecore.
//!
//! What it does (no network I/O; file I/O only in [`persist`]):
//!
//! * **CA** ([`CertificateAuthority`]): self-signed ECDSA P-256,
//!   `CN=KubeEdge` (upstream sets no O on the CA), ~100 years; loaded from / saved to `tlsCAFile` /
//!   `tlsCAKeyFile`.
//! * **Server certificate** ([`ServerCert`]): CN/O `KubeEdge`, SANs from
//!   `advertiseAddress` + `dnsNames`, reissued when they stop matching.
//! * **Edge CSR signing** ([`CertificateAuthority::sign_edge_csr`]): what
//!   cloudcore's `/edge.crt` does; the subject always comes from the node
//!   name.
//! * **User client certificates** ([`CertificateAuthority::issue_user_client_cert`]): for
//!   the embedded API server's admin kubeconfig.
//! * **Edge side** ([`EdgeKeyPair`], [`persist::edge_needs_bootstrap`]).
//! * **Join tokens** ([`token`]), **rotation timing** ([`rotation_deadline`]),
//!   and **rustls configurations** ([`tls`]) for both ends.
//!
//! # Byte-for-byte compatibility with upstream
//!
//! * Private keys are written as SEC1 PEM (`-----BEGIN EC PRIVATE KEY-----`),
//!   the same DER Go's `x509.MarshalECPrivateKey` produces for P-256
//!   (version, 32-byte scalar, `[0]` prime256v1, `[1]` public point). PKCS#8
//!   (`PRIVATE KEY`) is accepted on input. A SEC1 key that is loaded keeps its
//!   exact bytes, because the CA key's SEC1 DER is the join-token HMAC key.
//! * Join tokens are `hex(sha256(CA DER)).<JWT>`, the JWT being HS256 over
//!   `{"alg":"HS256","typ":"JWT"}` / `{"exp":N}` exactly as golang-jwt writes
//!   them, so tokens from a Go cloudcore verify here and vice versa.
//! * The edge CSR subject is upstream's `C=CN, ST=Zhejiang, L=Hangzhou,
//!   O=system:nodes, CN=system:node:<node>`, in Go's attribute order and
//!   string type (PrintableString). Certificates are PEM `CERTIFICATE`;
//!   `/ca.crt` and `/edge.crt` bodies are raw DER.
//!
//! # Why the first CA download is unverified
//!
//! A joining edge has no trust anchor yet, so it fetches `/ca.crt` with
//! [`tls::UnverifiedServerForCaFetch`]. That is safe only because the
//! downloaded certificate is then pinned: its SHA-256 must equal the first
//! segment of the join token ([`token::verify_ca_hash`]), which the operator
//! copied out of band. Every later connection (`/edge.crt`, the hub
//! WebSocket) verifies cloudcore against that CA.
//!
//! # Crypto provider
//!
//! *ring* only (rcgen, x509-parser and rustls are all built on it);
//! aws-lc-rs is deliberately not used.

mod ca;
pub mod cert;
mod csr;
mod edge;
pub mod identity;
mod key;
mod pem;
pub mod persist;
mod rotation;
mod server_cert;
pub mod tls;
pub mod token;
mod user_cert;

pub use ca::{CA_VALIDITY, CaError, CertificateAuthority};
pub use cert::{CertError, CertInfo, cert_info};
pub use csr::{
    CLOCK_SKEW_ALLOWANCE, CsrError, DEFAULT_EDGE_CERT_SIGNING_DAYS, ExtKeyUsage,
    edge_cert_validity, parse_ext_key_usages_header,
};
pub use edge::{EdgeError, EdgeKeyPair, cert_matches_node};
pub use identity::IdentityError;
pub use key::{EcKeyPair, KeyError};
pub use persist::{Origin, PersistError};
pub use rotation::rotation_deadline;
pub use server_cert::{
    RegenerateReason, SERVER_CERT_VALIDITY, ServerCert, ServerCertError, ServerCertSpec,
};
pub use tls::TlsConfigError;
pub use token::TokenError;
pub use user_cert::UserCertError;

/// Upstream's `constants.ProjectName`: the CA's CN and the server certificate's CN and O.
pub const PROJECT_NAME: &str = "KubeEdge";
