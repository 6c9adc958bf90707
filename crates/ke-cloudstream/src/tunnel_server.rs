//! The tunnel listener (`cloudStream.tunnelPort`, 10004): mTLS with edges' certificates, the
//! WebSocket upgrade on `/v1/kubeedge/connect`, and the node's identity checked.
//!
//! Authorization (upstream checks none): the node named in `SessionHostNameOverride` must be
//! the one the client certificate was issued to (`system:node:<name>`), so an edge can only
//! ever carry streams for itself.

use std::time::Duration;

use ke_stream::textframes::TextAsBinary;
use ke_stream::tunnel::{FRAMING_BINARY, Framing, HEADER_FRAMING};
use ke_stream::{Side, Tunnel};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::{Peers, Tunnels};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than any message we or upstream send (upstream truncates at 1 MiB).
const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Upstream's older edges spell the header this way.
const HEADER_HOSTNAME_OVERRIDE_OLD: &str = "SessionHostNameOveride";

pub(crate) async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    tunnels: Tunnels,
    peers: Option<Peers>,
    shutdown: CancellationToken,
) {
    while let Some((tcp, peer)) = crate::accept(&listener, &shutdown, "tunnel").await {
        let tls = tls.clone();
        let tunnels = tunnels.clone();
        let shutdown = shutdown.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, admit(tcp, tls)).await {
                Ok(Ok((node, internal_ip, tunnel))) => {
                    // The IP an edge states is logged, never used to route: it could claim
                    // another node's.
                    let internal_ip = internal_ip.unwrap_or_else(|| peer.ip().to_string());
                    tracing::info!(node, %peer, internal_ip, "stream tunnel connected");
                    tunnels.insert(&node, tunnel.clone());
                    let announcing = peers.clone().map(|peers| {
                        let node = node.clone();
                        tokio::spawn(async move { peers.announce(&node).await })
                    });
                    let reason = tokio::select! {
                        reason = tunnel.ended() => reason,
                        () = shutdown.cancelled() => {
                            tunnel.shutdown("cloudcore is stopping");
                            "cloudcore is stopping".to_owned()
                        }
                    };
                    if let Some(announcing) = announcing {
                        announcing.abort();
                    }
                    tunnels.remove(&node, &tunnel);
                    tracing::info!(node, reason, "stream tunnel ended");
                    if let Some(peers) = &peers {
                        // Unless the node is back already, on a new tunnel to us.
                        peers.withdraw(&node, || tunnels.get(&node).is_none()).await;
                    }
                }
                Ok(Err(reason)) => tracing::warn!(%peer, reason, "stream tunnel refused"),
                Err(_) => tracing::debug!(%peer, "stream tunnel handshake timed out"),
            }
        });
    }
}

/// TLS, then the upgrade; the node's name and its tunnel.
async fn admit(
    tcp: TcpStream,
    tls: TlsAcceptor,
) -> Result<(String, Option<String>, Tunnel), String> {
    let _ = tcp.set_nodelay(true);
    let stream = tls
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let common_name = ke_pki::tls::peer_common_name(stream.get_ref().1.peer_certificates())
        .map_err(|e| format!("client certificate: {e}"))?;
    let mut admitted = None;
    let mut internal_ip = None;
    let mut binary = false;
    #[allow(clippy::result_large_err)] // tungstenite's callback type
    let callback = |request: &Request, mut response: Response| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        if request.uri().path().trim_end_matches('/') != ke_stream::TUNNEL_PATH {
            return Err(refuse(StatusCode::NOT_FOUND, "not the tunnel path"));
        }
        let Some(node) = header(ke_stream::HEADER_HOSTNAME_OVERRIDE)
            .or_else(|| header(HEADER_HOSTNAME_OVERRIDE_OLD))
        else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "missing SessionHostNameOverride header",
            ));
        };
        if common_name != ke_pki::identity::node_common_name(node) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                &format!("certificate {common_name:?} does not belong to node {node:?}"),
            ));
        }
        if header(HEADER_FRAMING) == Some(FRAMING_BINARY) {
            binary = true;
            response
                .headers_mut()
                .insert(HEADER_FRAMING, HeaderValue::from_static(FRAMING_BINARY));
        }
        admitted = Some(node.to_owned());
        internal_ip = header(ke_stream::HEADER_INTERNAL_IP).map(str::to_owned);
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let stream = TextAsBinary::new(stream);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let node = admitted.ok_or("upgrade without a node")?;
    let framing = if binary {
        Framing::Binary
    } else {
        Framing::GoText
    };
    let (tunnel, _refused) = Tunnel::spawn(ws, Side::Cloud, framing);
    Ok((node, internal_ip, tunnel))
}

fn refuse(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = status;
    response
}
