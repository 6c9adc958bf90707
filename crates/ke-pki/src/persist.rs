//! Everything in this crate that touches the filesystem.
//!
//! Files are PEM as upstream writes them: certificates `CERTIFICATE`, keys
//! `EC PRIVATE KEY` (SEC1). Keys are created with mode 0600, certificates
//! 0644, parent directories as needed. Writes go to a temporary file in the
//! same directory and are renamed into place, so a crash never leaves a
//! half-written key behind.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ca::{CaError, CertificateAuthority};
use crate::cert::{self, CertError};
use crate::edge::{self, EdgeKeyPair};
use crate::key::{EcKeyPair, KeyError};
use crate::server_cert::{RegenerateReason, ServerCert, ServerCertError, ServerCertSpec};

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// A filesystem or content problem, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing a file (or creating its directory) failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid UTF-8 PEM text.
    #[error("{path} is not a text pem file")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A certificate file is unusable.
    #[error("certificate file {path}: {source}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CertError,
    },
    /// A key file is unusable.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// The CA files do not form a usable CA.
    #[error("ca files {cert} / {key}: {source}")]
    Ca {
        /// `tlsCAFile`.
        cert: PathBuf,
        /// `tlsCAKeyFile`.
        key: PathBuf,
        /// What is wrong.
        source: CaError,
    },
    /// Only one of the CA files exists. Creating a new CA would orphan every
    /// certificate issued so far, so this needs a human.
    #[error(
        "{present} exists but {missing} does not; refusing to create a new ca over a partial one"
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The server certificate could not be issued.
    #[error("server certificate {path}: {source}")]
    ServerCert {
        /// `tlsCertFile`.
        path: PathBuf,
        /// What went wrong.
        source: ServerCertError,
    },
}

/// Where the value returned by a `load_or_create` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from existing files.
    Loaded,
    /// No files existed; created and written.
    Created,
    /// Files existed but were unsuitable; replaced.
    Regenerated(RegenerateReason),
}

fn read_text(path: &Path) -> Result<String, PersistError> {
    let bytes = fs::read(path).map_err(|source| PersistError::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| PersistError::NotText {
        path: path.to_owned(),
    })
}

fn read_cert(path: &Path) -> Result<Vec<u8>, PersistError> {
    cert::cert_der_from_pem(&read_text(path)?).map_err(|source| PersistError::Cert {
        path: path.to_owned(),
        source,
    })
}

fn read_key(path: &Path) -> Result<EcKeyPair, PersistError> {
    EcKeyPair::from_pem(&read_text(path)?).map_err(|source| PersistError::Key {
        path: path.to_owned(),
        source,
    })
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        // The mode given to open() is filtered by the umask and ignored for a
        // pre-existing temp file; set it explicitly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn exists(path: &Path) -> Result<bool, PersistError> {
    path.try_exists().map_err(|source| PersistError::Read {
        path: path.to_owned(),
        source,
    })
}

impl CertificateAuthority {
    /// Reads `tlsCAFile` and `tlsCAKeyFile`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PersistError> {
        let cert_der = read_cert(cert_path)?;
        let key = read_key(key_path)?;
        Self::from_parts(cert_der, key).map_err(|source| PersistError::Ca {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        })
    }

    /// Writes the certificate (0644) and the SEC1 key (0600).
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), PersistError> {
        write_atomic(key_path, self.ca_key_pem().as_bytes(), KEY_MODE)?;
        write_atomic(cert_path, self.ca_pem().as_bytes(), CERT_MODE)
    }

    /// Loads the CA if both files exist, creates and saves a new one if
    /// neither does, and refuses if only one does.
    pub fn load_or_create(
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<(Self, Origin), PersistError> {
        match (exists(cert_path)?, exists(key_path)?) {
            (true, true) => Ok((Self::load(cert_path, key_path)?, Origin::Loaded)),
            (false, false) => {
                let ca = Self::generate(SystemTime::now()).map_err(|source| PersistError::Ca {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                    source,
                })?;
                ca.save(cert_path, key_path)?;
                Ok((ca, Origin::Created))
            }
            (true, false) => Err(PersistError::IncompleteCa {
                present: cert_path.to_owned(),
                missing: key_path.to_owned(),
            }),
            (false, true) => Err(PersistError::IncompleteCa {
                present: key_path.to_owned(),
                missing: cert_path.to_owned(),
            }),
        }
    }
}

impl ServerCert {
    /// Reads `tlsCertFile` and `tlsPrivateKeyFile`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PersistError> {
        let cert_der = read_cert(cert_path)?;
        let key = read_key(key_path)?;
        Self::from_parts(cert_der, key).map_err(|source| PersistError::ServerCert {
            path: cert_path.to_owned(),
            source,
        })
    }

    /// Writes the certificate (0644) and the SEC1 key (0600).
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), PersistError> {
        write_atomic(key_path, self.key().to_sec1_pem().as_bytes(), KEY_MODE)?;
        write_atomic(cert_path, self.cert_pem().as_bytes(), CERT_MODE)
    }

    /// Loads the server certificate, or issues and saves a new one when the
    /// files are missing, unreadable, not from `ca`, expired, or do not cover
    /// every configured address and DNS name.
    ///
    /// Unlike the CA, the server certificate is derived material, so replacing
    /// it is always safe; that is what fixes upstream's "certificate is valid
    /// for X, not Y" after `advertiseAddress` changes.
    pub fn load_or_create(
        cert_path: &Path,
        key_path: &Path,
        ca: &CertificateAuthority,
        spec: &ServerCertSpec,
    ) -> Result<(Self, Origin), PersistError> {
        let now = SystemTime::now();
        let origin = if exists(cert_path)? || exists(key_path)? {
            let current = match Self::load(cert_path, key_path) {
                Ok(sc) => sc.check(ca, spec, now).map(|()| sc),
                Err(PersistError::ServerCert {
                    source: ServerCertError::KeyMismatch,
                    ..
                }) => Err(RegenerateReason::KeyMismatch),
                // Permission problems need a human, not a silent overwrite.
                Err(e @ PersistError::Read { .. }) if exists(cert_path)? && exists(key_path)? => {
                    return Err(e);
                }
                Err(e) => Err(RegenerateReason::Unreadable(e.to_string())),
            };
            match current {
                Ok(sc) => return Ok((sc, Origin::Loaded)),
                Err(reason) => Origin::Regenerated(reason),
            }
        } else {
            Origin::Created
        };
        let sc = Self::issue(ca, spec, now).map_err(|source| PersistError::ServerCert {
            path: cert_path.to_owned(),
            source,
        })?;
        sc.save(cert_path, key_path)?;
        Ok((sc, origin))
    }
}

/// Writes the CA certificate the edge downloaded to `tlsCaFile` (PEM, 0644).
/// Writes a secret (e.g. a join token) atomically, readable by the owner only.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), PersistError> {
    write_atomic(path, contents, KEY_MODE)
}

pub fn write_ca_cert(path: &Path, ca_der: &[u8]) -> Result<(), PersistError> {
    write_atomic(path, cert::cert_to_pem(ca_der).as_bytes(), CERT_MODE)
}

/// Reads a PEM certificate file (e.g. `tlsCaFile`) and returns its DER.
pub fn read_cert_file(path: &Path) -> Result<Vec<u8>, PersistError> {
    read_cert(path)
}

/// Writes the edge certificate (PEM, 0644) and key (SEC1 PEM, 0600) to
/// `tlsCertFile` / `tlsPrivateKeyFile`. The key goes first so a crash in
/// between leaves a mismatched pair, which [`edge_bootstrap_reason`] reports,
/// rather than a new certificate next to an old key that looks valid.
pub fn write_edge_cert_and_key(
    cert_path: &Path,
    key_path: &Path,
    cert_der: &[u8],
    key: &EdgeKeyPair,
) -> Result<(), PersistError> {
    write_atomic(key_path, key.key_pem().as_bytes(), KEY_MODE)?;
    write_atomic(cert_path, cert::cert_to_pem(cert_der).as_bytes(), CERT_MODE)
}

/// Reads the edge certificate (DER) and key back.
pub fn read_edge_cert_and_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<u8>, EdgeKeyPair), PersistError> {
    Ok((
        read_cert(cert_path)?,
        EdgeKeyPair::from_key(read_key(key_path)?),
    ))
}

/// Why an edge has to (re-)bootstrap its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapReason {
    /// The certificate or key file does not exist.
    Missing,
    /// A file exists but cannot be read or parsed.
    Unreadable(String),
    /// The key does not belong to the certificate.
    KeyMismatch,
    /// The certificate's CN is not `system:node:<node>` (e.g. renamed node,
    /// or a pre-1.17 `kubeedge.io` certificate).
    WrongNode {
        /// CN found, if any.
        found: Option<String>,
    },
}

/// `None` when the local certificate and key are usable for `node`;
/// otherwise why the edge must bootstrap (upstream: cert missing or
/// CN ≠ `system:node:<node>`).
pub fn edge_bootstrap_reason(
    cert_path: &Path,
    key_path: &Path,
    node: &str,
) -> Option<BootstrapReason> {
    if !cert_path.exists() || !key_path.exists() {
        return Some(BootstrapReason::Missing);
    }
    let (cert_der, key) = match read_edge_cert_and_key(cert_path, key_path) {
        Ok(v) => v,
        Err(e) => return Some(BootstrapReason::Unreadable(e.to_string())),
    };
    match cert::public_key_bits(&cert_der) {
        Ok(bits) if bits == key.key().public_key_raw() => {}
        Ok(_) => return Some(BootstrapReason::KeyMismatch),
        Err(e) => return Some(BootstrapReason::Unreadable(e.to_string())),
    }
    if edge::cert_matches_node(&cert_der, node) {
        None
    } else {
        Some(BootstrapReason::WrongNode {
            found: cert::cert_info(&cert_der).ok().and_then(|i| i.common_name),
        })
    }
}

/// Shorthand for `edge_bootstrap_reason(..).is_some()`.
pub fn edge_needs_bootstrap(cert_path: &Path, key_path: &Path, node: &str) -> bool {
    edge_bootstrap_reason(cert_path, key_path, node).is_some()
}
