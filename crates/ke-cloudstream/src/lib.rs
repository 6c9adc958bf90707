//! cloudstream (module `cloudStream`): cloudcore's end of the stream tunnel, so `kubectl
//! logs/exec/attach/port-forward` reach pods on edge nodes the cloud cannot dial.
//!
//! * [`tunnel_server`]: edges dial `wss://<cloudcore>:<tunnelPort>/v1/kubeedge/connect` with
//!   their edgehub certificate; the node named in the upgrade must be the certificate's.
//! * [`Tunnels`]: one live tunnel per node, a reconnect replacing the old one.
//! * [`pods`]: the embedded API server's pod stream subresources go straight to the node's
//!   tunnel (`ke_apiserver::PodStreams`) — no stream port, no iptables, and the request is
//!   served by the cloudcore that holds the tunnel because it is the same process.
//!
//! Not here yet: upstream's stream server (`streamPort`, 10003) through which a real
//! kube-apiserver reaches the tunnels.

pub mod pods;
mod registry;
mod tunnel_server;

use std::net::SocketAddr;
use std::sync::Arc;

use ke_bus::{BoxFuture, Module, ModuleContext};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use registry::Tunnels;

pub const MODULE_NAME: &str = "cloudStream";
pub const GROUP_NAME: &str = "cloudstream";

/// The tunnel listener, bound; register it on the bus to serve.
pub struct CloudStream {
    listener: Option<(TcpListener, TlsAcceptor)>,
    addr: SocketAddr,
    tunnels: Tunnels,
}

impl CloudStream {
    /// Binds `addr` with `tls` (cloudhub's edge-facing mTLS config), recording tunnels in
    /// `tunnels` (shared with the API server's pod streams).
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        tunnels: Tunnels,
    ) -> anyhow::Result<CloudStream> {
        let listener = tunnel_server::bind(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "stream tunnel listening");
        Ok(CloudStream {
            listener: Some((listener, tunnel_server::acceptor(tls))),
            addr,
            tunnels,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
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
            let Some((listener, tls)) = self.listener.take() else {
                anyhow::bail!("cloudstream's listener is gone (the module ran before)");
            };
            tunnel_server::serve(
                listener,
                tls,
                self.tunnels.clone(),
                ctx.cancellation_token(),
            )
            .await;
            Ok(())
        })
    }
}
