//! Certificates for the run, all under one directory: the cloud's CA and server certificate
//! (CloudHub creates those itself), and for the edges the CA, one shared key and one
//! certificate per node, signed directly with the CA rather than through 10,000 HTTP joins.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ke_pki::{CertificateAuthority, EcKeyPair, EdgeKeyPair, ExtKeyUsage, persist};

pub fn node_name(index: usize) -> String {
    format!("bench-{index:05}")
}

pub struct Layout {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    edge_ca: PathBuf,
    edge_key: PathBuf,
    /// One line per node: `<node> <base64 DER certificate>`.
    edge_certs: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            ca_cert: dir.join("ca/rootCA.crt"),
            ca_key: dir.join("ca/rootCA.key"),
            server_cert: dir.join("certs/server.crt"),
            server_key: dir.join("certs/server.key"),
            edge_ca: dir.join("edge/rootCA.crt"),
            edge_key: dir.join("edge/edge.key"),
            edge_certs: dir.join("edge/nodes.txt"),
        }
    }
}

/// Creates (or keeps, when a restarted cloud finds them) the edges' certificates for `nodes`
/// nodes. Returns how many were signed now.
pub fn prepare_edges(layout: &Layout, nodes: usize) -> anyhow::Result<usize> {
    let (ca, _) = CertificateAuthority::load_or_create(&layout.ca_cert, &layout.ca_key)
        .context("load or create the CA")?;
    if let Ok(existing) = std::fs::read_to_string(&layout.edge_certs)
        && existing.lines().count() >= nodes
        && layout.edge_key.exists()
    {
        return Ok(0);
    }
    persist::write_ca_cert(&layout.edge_ca, ca.ca_der()).context("write the edges' CA file")?;
    let key = EdgeKeyPair::generate().context("generate the shared edge key")?;
    persist::write_secret(&layout.edge_key, key.key_pem().as_bytes())
        .context("write the shared edge key")?;
    let now = SystemTime::now();
    let mut out = String::with_capacity(nodes * 700);
    for index in 0..nodes {
        let node = node_name(index);
        let csr = key
            .build_csr(&node)
            .with_context(|| format!("csr for {node}"))?;
        let cert = ca
            .sign_edge_csr(
                &csr,
                &node,
                &[ExtKeyUsage::ClientAuth],
                Duration::from_secs(30 * 86_400),
                now,
            )
            .with_context(|| format!("sign the certificate of {node}"))?;
        out.push_str(&node);
        out.push(' ');
        out.push_str(&B64.encode(cert));
        out.push('\n');
    }
    persist::write_secret(&layout.edge_certs, out.as_bytes())
        .context("write the edges' certificates")?;
    Ok(nodes)
}

/// What the edges process needs to dial: CA, the shared key, and per node its certificate.
pub struct EdgeMaterial {
    pub ca_der: Vec<u8>,
    pub key: EcKeyPair,
    pub certs: Vec<(String, Vec<u8>)>,
}

pub fn load_edges(layout: &Layout, nodes: usize) -> anyhow::Result<EdgeMaterial> {
    let ca_der = persist::read_cert_file(&layout.edge_ca).context("read the edges' CA")?;
    let key_pem = std::fs::read_to_string(&layout.edge_key)
        .with_context(|| format!("read {}", layout.edge_key.display()))?;
    let key = EcKeyPair::from_pem(&key_pem).context("parse the shared edge key")?;
    let text = std::fs::read_to_string(&layout.edge_certs)
        .with_context(|| format!("read {}", layout.edge_certs.display()))?;
    let certs = text
        .lines()
        .take(nodes)
        .map(|line| {
            let (node, cert) = line.split_once(' ').context("malformed nodes.txt line")?;
            Ok((
                node.to_owned(),
                B64.decode(cert).context("certificate base64")?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        certs.len() == nodes,
        "{} holds {} certificates, {nodes} asked for",
        layout.edge_certs.display(),
        certs.len()
    );
    Ok(EdgeMaterial { ca_der, key, certs })
}
