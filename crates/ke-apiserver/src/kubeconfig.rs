//! The PKI under `<data-dir>/pki/` and the admin kubeconfig: a CA, a serving certificate, and a
//! `kubernetes-admin` (`system:masters`) client certificate, the way kubeadm lays out
//! `admin.conf`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ke_pki::{CertificateAuthority, EcKeyPair, ServerCert, ServerCertSpec, cert};

pub const ADMIN_USER: &str = "kubernetes-admin";
pub const ADMIN_GROUP: &str = "system:masters";
const CLUSTER: &str = "kubeedge-rs";
/// kubeadm's client certificates last a year.
const ADMIN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("pki files: {0}")]
    Persist(#[from] ke_pki::PersistError),
    #[error("serving certificate names: {0}")]
    Names(#[from] ke_pki::ServerCertError),
    #[error("admin client certificate: {0}")]
    UserCert(#[from] ke_pki::UserCertError),
    #[error("tls configuration: {0}")]
    Tls(#[from] ke_pki::TlsConfigError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: ke_pki::PersistError,
    },
}

/// What serving needs.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: ServerCert,
}

impl Pki {
    /// Loads or creates the CA and the serving certificate (reissued when `ips`/`dns_names`
    /// are not all covered).
    pub fn load_or_create(
        data_dir: &Path,
        ips: &[IpAddr],
        dns_names: &[String],
    ) -> Result<Self, PkiError> {
        let dir = data_dir.join("pki");
        let (ca, _) =
            CertificateAuthority::load_or_create(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        let spec = ServerCertSpec::from_config(
            &ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            dns_names,
        )?;
        let (server, _) = ServerCert::load_or_create(
            &dir.join("apiserver.crt"),
            &dir.join("apiserver.key"),
            &ca,
            &spec,
        )?;
        Ok(Self { ca, server })
    }

    /// rustls config that verifies client certificates against our CA. A client without one
    /// completes the handshake but is refused by [`crate::serve::serve_tls`] with 401.
    pub fn tls_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        let mut cfg = ke_pki::tls::server_config_optional_client_cert(
            self.ca.ca_der(),
            self.server.cert_der(),
            self.server.key(),
        )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Issues a fresh admin client certificate and writes a kubeconfig for `server_url` (mode
    /// 0600: it is a credential).
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), PkiError> {
        let (der, key) = self.ca.issue_user_client_cert(
            ADMIN_USER,
            &[ADMIN_GROUP],
            ADMIN_CERT_VALIDITY,
            SystemTime::now(),
        )?;
        let text = render(server_url, self.ca.ca_der(), &der, &key);
        ke_pki::persist::write_secret(path, text.as_bytes()).map_err(|source| PkiError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

fn render(server_url: &str, ca_der: &[u8], cert_der: &[u8], key: &EcKeyPair) -> String {
    let b64 = |s: String| STANDARD.encode(s.as_bytes());
    let ca = b64(cert::cert_to_pem(ca_der));
    let crt = b64(cert::cert_to_pem(cert_der));
    let key = b64(key.to_sec1_pem());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER}
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: {ADMIN_USER}
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: {ADMIN_USER}@{CLUSTER}
  context:
    cluster: {CLUSTER}
    user: {ADMIN_USER}
current-context: {ADMIN_USER}@{CLUSTER}
"
    )
}
