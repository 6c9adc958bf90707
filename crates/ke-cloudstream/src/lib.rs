//! cloudstream (module `cloudStream`): cloudcore's end of the stream tunnel, so `kubectl
//! logs/exec/attach/port-forward` reach pods on edge nodes the cloud cannot dial.
//!
//! * [`tunnel_server`]: edges dial `wss://<cloudcore>:<tunnelPort>/v1/kubeedge/connect` with
//!   their edgehub certificate; the node named in the upgrade must be the certificate's.
//! * [`Tunnels`]: one live tunnel per node, a reconnect replacing the old one.
//! * [`pods`]: the embedded API server's pod stream subresources go straight to the node's
//!   tunnel (`ke_apiserver::PodStreams`) — no stream port, no iptables, and the request is
//!   served by the cloudcore that holds the tunnel because it is the same process.
//! * [`stream_server`]: the kubelet API of the connected nodes on `streamPort` for a real
//!   kube-apiserver (HTTP CONNECT through its egress selector, or direct), served when the
//!   stream CA (`tlsStreamCAFile`) — the CA of kube-apiserver's kubelet client certificate —
//!   exists.
//! * [`peers`]: with several cloudcores, the one holding a node's tunnel says so on the Node;
//!   the others forward that node's `CONNECT`s to it.

pub mod peers;
pub mod pods;
mod registry;
mod stream_server;
mod tunnel_server;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use ke_bus::{BoxFuture, Module, ModuleContext};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use peers::Peers;
pub use registry::Tunnels;
pub use stream_server::StreamServer;

pub const MODULE_NAME: &str = "cloudStream";
pub const GROUP_NAME: &str = "cloudstream";

/// The listeners, bound; register it on the bus to serve.
pub struct CloudStream {
    tunnel: Option<(TcpListener, TlsAcceptor)>,
    stream: Option<(TcpListener, Arc<StreamServer>)>,
    tunnels: Tunnels,
    peers: Option<Peers>,
}

impl CloudStream {
    /// Binds the tunnel listener on `tunnel_addr` with `edge_tls` (cloudhub's edge-facing mTLS
    /// config) and, when given, the stream server; tunnels are recorded in `tunnels` (shared
    /// with the API server's pod streams) and, with `peers`, announced to the other cloudcores.
    pub async fn bind(
        tunnel_addr: SocketAddr,
        edge_tls: Arc<rustls::ServerConfig>,
        stream: Option<(SocketAddr, StreamServer)>,
        tunnels: Tunnels,
        peers: Option<Peers>,
    ) -> anyhow::Result<CloudStream> {
        let tunnel = Some((
            bind(tunnel_addr, "stream tunnel").await?,
            TlsAcceptor::from(edge_tls),
        ));
        let stream = match stream {
            Some((addr, server)) => Some((bind(addr, "stream server").await?, Arc::new(server))),
            None => None,
        };
        Ok(CloudStream {
            tunnel,
            stream,
            tunnels,
            peers,
        })
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. Accept errors
/// (out of descriptors, mostly) are logged and waited out rather than ending the listener.
async fn accept(
    listener: &TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(err) => {
                    tracing::warn!(error = %err, "{what} accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = shutdown.cancelled() => return None,
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the {what} listener on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
}

/// The stream server: clients verified against the stream CA (`ca_file`) or, for the other
/// cloudcores, our CA; it serves cloudhub's certificate (`cert_file`/`key_file`, from our CA,
/// which the peers and kube-apiserver's egress `caBundle` trust — upstream's `tlsStreamCert*`
/// are not read). `None` when the stream CA does not exist: nothing outside this process needs
/// the kubelet API then (the embedded API server calls the tunnels directly).
pub fn stream_server(
    ca_file: &Path,
    kubeedge_ca: Arc<ke_pki::CertificateAuthority>,
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<Option<StreamServer>> {
    if !ca_file.exists() {
        return Ok(None);
    }
    let ca = ke_pki::persist::read_cert_file(ca_file)
        .with_context(|| format!("tlsStreamCAFile {}", ca_file.display()))?;
    let (cert, key) = ke_pki::persist::read_edge_cert_and_key(cert_file, key_file)
        .with_context(|| format!("stream server certificate {}", cert_file.display()))?;
    let config =
        ke_pki::tls::server_config_mtls_any_of(&[&ca, kubeedge_ca.ca_der()], &cert, key.key())?;
    Ok(Some(StreamServer {
        tls: TlsAcceptor::from(Arc::new(config)),
        kubeedge_ca,
    }))
}

impl Module for CloudStream {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some((listener, tls)) = self.tunnel.take() else {
                anyhow::bail!("cloudstream's listeners are gone (the module ran before)");
            };
            let shutdown = ctx.cancellation_token();
            let stream = self.stream.take().map(|(listener, server)| {
                tokio::spawn(stream_server::serve(
                    listener,
                    server,
                    self.tunnels.clone(),
                    self.peers.clone(),
                    shutdown.clone(),
                ))
            });
            tunnel_server::serve(
                listener,
                tls,
                self.tunnels.clone(),
                self.peers.clone(),
                shutdown,
            )
            .await;
            if let Some(stream) = stream {
                let _ = stream.await;
            }
            Ok(())
        })
    }
}
