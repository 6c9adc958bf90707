//! edgestream (module `edgestream`): the edge's end of the stream tunnel. It dials cloudstream
//! (`wss://<edgeStream.server>/v1/kubeedge/connect`) with the node's edgehub certificate — the
//! identity the cloud already trusts, renewed with it — and serves the sessions the cloud opens:
//!
//! * logs ([`logs`]): read from the container's CRI log file;
//! * exec, attach, port-forward ([`relay`]): the runtime's streaming server, reached through
//!   CRI `Exec`/`Attach`/`PortForward`, bytes relayed untouched.
//!
//! Upstream relays every request to a kubelet HTTP server on `127.0.0.1:10350`; we answer the
//! same kubelet paths in-process, so there is no extra listener on the node. Redials as edgehub
//! does: within a second of a break, then with jittered exponential backoff.

pub mod containers;
pub mod logs;
pub mod relay;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ke_bus::{BoxFuture, Module, ModuleContext};
use ke_config::EdgeCoreConfig;
use ke_cri::CriClient;
use ke_edgehub::reconnect::ReconnectPolicy;
use ke_stream::request::{ConnectRequest, StreamKind};
use ke_stream::textframes::TextAsBinary;
use ke_stream::tunnel::{FRAMING_BINARY, Framing, HEADER_FRAMING};
use ke_stream::{Incoming, MessageType, Side, Tunnel};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const MODULE_NAME: &str = "edgestream";
pub const GROUP_NAME: &str = "edgestream";
/// A tunnel that lived this long resets the redial backoff.
const STABLE_TUNNEL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EdgeStreamSettings {
    pub node_name: String,
    /// Sent as `SessionInternalIP`; empty lets the cloud use the connection's address.
    pub node_ip: String,
    /// `host:port` of cloudstream's tunnel.
    pub server: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub runtime_endpoint: String,
    pub handshake_timeout: Duration,
    pub reconnect: ReconnectPolicy,
}

impl EdgeStreamSettings {
    /// The certificate is edgehub's (upstream's `tlsTunnel*` defaults name the same files): one
    /// identity per node, renewed in one place.
    pub fn from_config(config: &EdgeCoreConfig) -> EdgeStreamSettings {
        let stream = &config.modules.edge_stream;
        let hub = &config.modules.edge_hub;
        let edged = &config.modules.edged;
        EdgeStreamSettings {
            node_name: edged.hostname_override.clone(),
            node_ip: edged.node_ip.clone(),
            server: stream.server.clone(),
            ca_file: hub.tls_ca_file.clone().into(),
            cert_file: hub.tls_cert_file.clone().into(),
            key_file: hub.tls_private_key_file.clone().into(),
            runtime_endpoint: edged
                .tailored_kubelet_config
                .container_runtime_endpoint
                .clone(),
            handshake_timeout: Duration::from_secs(
                u64::try_from(stream.handshake_timeout).unwrap_or(30).max(1),
            ),
            reconnect: ReconnectPolicy::default(),
        }
    }
}

pub struct EdgeStream {
    settings: EdgeStreamSettings,
}

impl EdgeStream {
    pub fn new(settings: EdgeStreamSettings) -> EdgeStream {
        EdgeStream { settings }
    }
}

impl Module for EdgeStream {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let cri = tokio::select! {
                cri = connect_runtime(&self.settings.runtime_endpoint) => cri,
                () = ctx.cancelled() => return Ok(()),
            };
            let mut attempt = 0u32;
            loop {
                let dialed = tokio::select! {
                    dialed = tokio::time::timeout(self.settings.handshake_timeout, dial(&self.settings)) => dialed,
                    () = ctx.cancelled() => return Ok(()),
                };
                match dialed {
                    Ok(Ok((tunnel, incoming))) => {
                        tracing::info!(server = %self.settings.server, "stream tunnel connected");
                        let connected = tokio::time::Instant::now();
                        let reason = tokio::select! {
                            reason = serve(&tunnel, incoming, &cri) => reason,
                            () = ctx.cancelled() => {
                                tunnel.shutdown("edgecore is stopping");
                                return Ok(());
                            }
                        };
                        tracing::warn!(reason, "stream tunnel ended");
                        // Back to a quick redial only after a tunnel that lasted: a cloud that
                        // takes tunnels and drops them (or a second edge with this identity
                        // replacing ours) must not be redialled at the minimum delay forever.
                        if connected.elapsed() >= STABLE_TUNNEL {
                            attempt = 0;
                        }
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(server = %self.settings.server, error = format!("{err:#}"), "stream tunnel dial failed");
                    }
                    Err(_) => {
                        tracing::warn!(server = %self.settings.server, "stream tunnel dial timed out")
                    }
                }
                let delay = self.settings.reconnect.delay(attempt, fastrand::f64());
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.cancelled() => return Ok(()),
                }
            }
        })
    }
}

/// The runtime, redialled until it answers (edged says loudly when it does not).
async fn connect_runtime(endpoint: &str) -> Arc<CriClient> {
    loop {
        match CriClient::connect(endpoint).await {
            Ok(cri) => return Arc::new(cri),
            Err(err) => {
                tracing::debug!(error = %err, "edgestream waits for the container runtime");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Serves the tunnel's sessions until it ends; the reason it ended.
async fn serve(
    tunnel: &Tunnel,
    mut incoming: tokio::sync::mpsc::Receiver<Incoming>,
    cri: &Arc<CriClient>,
) -> String {
    loop {
        tokio::select! {
            next = incoming.recv() => {
                let Some(next) = next else { return tunnel.ended().await };
                tokio::spawn(serve_session(Arc::clone(cri), next));
            }
            reason = tunnel.ended() => return reason,
        }
    }
}

async fn serve_session(cri: Arc<CriClient>, incoming: Incoming) {
    let Incoming {
        kind,
        request,
        session,
    } = incoming;
    let connect = match ConnectRequest::from_json(&request) {
        Ok(connect) => connect,
        Err(err) => return session.refuse(&err.to_string()),
    };
    let kubelet = match connect.kubelet() {
        Ok(kubelet) => kubelet,
        Err(err) => return session.refuse(&err.to_string()),
    };
    tracing::debug!(?kind, path = %connect.path, "stream session");
    match (kind, kubelet.kind) {
        (MessageType::LogsConnect, StreamKind::Logs) => {
            if let Err(refusal) = logs::serve(&cri, &kubelet, &session).await {
                session.refuse(&refusal.message);
            }
        }
        // Port-forward travels as an exec connection: upstream has no type for it, and its
        // edges serve whatever kubelet path an upgrade names.
        (MessageType::ExecConnect | MessageType::AttachConnect, _) => {
            relay::serve(&cri, &connect, &kubelet, session).await;
        }
        (kind, path) => session.refuse(&format!("{kind:?} cannot serve a {path:?} request")),
    }
}

type TunnelParts = (Tunnel, tokio::sync::mpsc::Receiver<Incoming>);

async fn dial(settings: &EdgeStreamSettings) -> anyhow::Result<TunnelParts> {
    let server = &settings.server;
    let stream = ke_edgehub::connect_mtls(
        server,
        &settings.ca_file,
        &settings.cert_file,
        &settings.key_file,
    )
    .await?;
    let stream = TextAsBinary::new(stream);
    let mut request = format!("wss://{server}{}", ke_stream::TUNNEL_PATH).into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        ke_stream::HEADER_HOSTNAME_OVERRIDE,
        HeaderValue::from_str(&settings.node_name).context("node name")?,
    );
    headers.insert(
        ke_stream::HEADER_INTERNAL_IP,
        HeaderValue::from_str(&settings.node_ip).context("node IP")?,
    );
    headers.insert(HEADER_FRAMING, HeaderValue::from_static(FRAMING_BINARY));
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .context("tunnel upgrade")?;
    let binary = response
        .headers()
        .get(HEADER_FRAMING)
        .is_some_and(|v| v == FRAMING_BINARY);
    let framing = if binary {
        Framing::Binary
    } else {
        Framing::GoText
    };
    Ok(Tunnel::spawn(ws, Side::Edge, framing))
}
