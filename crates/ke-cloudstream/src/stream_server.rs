//! The stream server (`cloudStream.streamPort`, 10003): the kubelet API of every connected edge
//! node, for an API server that is not in this process — a real kube-apiserver.
//!
//! kube-apiserver reaches a node's kubelet at the node's address. Two ways lead here, neither
//! with iptables:
//!
//! * **HTTP CONNECT** (recommended): kube-apiserver's egress selector for `cluster` traffic with
//!   `proxyProtocol: HTTPConnect` pointed at this port sends `CONNECT <node address>:<port>`;
//!   for an edge node whose tunnel is here we answer 200 and serve the kubelet API over the TLS
//!   session kube-apiserver then starts inside. Any other destination (a cloud node) is
//!   forwarded as plain TCP, so the egress selector can cover the whole cluster.
//! * **Direct**: a request for `/containerLogs/…`, `/exec/…`, `/attach/…`, `/portForward/…`
//!   whose `Host` is the edge node's name or internal IP (upstream's DNAT route ends like this).
//!
//! Clients must present a certificate from the stream CA (`tlsStreamCAFile`, the CA that signed
//! kube-apiserver's `--kubelet-client-certificate`) — not an edge node's certificate.
//! Requests are served as upstream's cloudstream does: logs are a chunked body; for upgrades
//! the edge's raw answer (the runtime's 101 and the stream) is relayed untouched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ke_stream::MessageType;
use ke_stream::request::{ConnectRequest, KubeletRequest, StreamKind};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Tunnels;
use crate::peers::{HEADER_FORWARDED, Holder, PEER_COMMON_NAME, Peers};

const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const UPGRADE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_LOG_BYTES_WAIT: Duration = Duration::from_secs(2);
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    server: Arc<StreamServer>,
    tunnels: Tunnels,
    peers: Option<Peers>,
    shutdown: CancellationToken,
) {
    while let Some((tcp, peer)) = crate::accept(&listener, &shutdown, "stream server").await {
        let server = Arc::clone(&server);
        let tunnels = tunnels.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(tcp, &server, &tunnels, peers.as_ref()).await {
                tracing::debug!(%peer, reason, "stream server connection ended");
            }
        });
    }
}

/// The stream server's TLS and who may use it.
pub struct StreamServer {
    pub tls: TlsAcceptor,
    /// Our CA: of the certificates it signed only the other cloudcores' are let in (it also
    /// signs every edge node's).
    pub kubeedge_ca: Arc<ke_pki::CertificateAuthority>,
}

async fn connection(
    tcp: TcpStream,
    server: &StreamServer,
    tunnels: &Tunnels,
    peers: Option<&Peers>,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let mut stream = tokio::time::timeout(HEAD_TIMEOUT, server.tls.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    if let Err(refused) = authorize(server, stream.get_ref().1.peer_certificates()) {
        let _ = respond(&mut stream, 403, &refused).await;
        return Err(refused);
    }
    let (head, rest) = read_head(&mut stream).await?;
    if head.method == "CONNECT" {
        return proxy(stream, head, rest, server, tunnels, peers).await;
    }
    let host = host_name(&head.host).to_owned();
    let Some(node) = node_named(&host, tunnels, peers).await else {
        let message = format!("{host:?} is not an edge node connected here");
        return respond(&mut stream, 503, &message).await;
    };
    serve_request(stream, head, rest, tunnels, &node).await
}

/// Only API servers and the other cloudcores open streams: a node's certificate (from any CA)
/// is refused, and of the certificates our CA signed only the peers' are accepted.
fn authorize(
    server: &StreamServer,
    certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Result<(), String> {
    let leaf = certificates
        .and_then(<[_]>::first)
        .ok_or("no client certificate")?;
    let info = ke_pki::cert_info(leaf).map_err(|e| e.to_string())?;
    let name = info.common_name.unwrap_or_default();
    if name.starts_with("system:node:") || info.organizations.iter().any(|o| o == "system:nodes") {
        return Err(format!("{name} is a node: nodes may not open streams"));
    }
    if server.kubeedge_ca.has_signed(leaf) && name != PEER_COMMON_NAME {
        return Err(format!("{name} may not open streams"));
    }
    Ok(())
}

/// The connected edge node `host` names here: by name, or by the address its Node lists (when
/// exactly one Node lists it: an edge reports its own addresses).
async fn node_named(host: &str, tunnels: &Tunnels, peers: Option<&Peers>) -> Option<String> {
    if tunnels.get(host).is_some() {
        return Some(host.to_owned());
    }
    let node = peers?.node_with_address(host).await?;
    tunnels.get(&node).is_some().then_some(node)
}

/// `CONNECT <host>:<port>`: an edge node whose tunnel is here is served here; one whose tunnel
/// another cloudcore holds goes to that one; a cloud node (a Node by that name or address) is
/// forwarded as TCP; anything else is refused — this is no open proxy.
async fn proxy<S>(
    mut client: S,
    head: Head,
    rest: Vec<u8>,
    server: &StreamServer,
    tunnels: &Tunnels,
    peers: Option<&Peers>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = head.path.clone();
    let host = host_name(&target).to_owned();
    if let Some(node) = node_named(&host, tunnels, peers).await {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        // kube-apiserver now speaks TLS to "the kubelet" inside the tunnel.
        let inner = Prefixed::new(rest, client);
        let mut inner = tokio::time::timeout(HEAD_TIMEOUT, server.tls.accept(inner))
            .await
            .map_err(|_| "inner TLS handshake timed out".to_owned())?
            .map_err(|e| format!("inner TLS handshake: {e}"))?;
        let (head, rest) = read_head(&mut inner).await?;
        return serve_request(inner, head, rest, tunnels, &node).await;
    }
    if head.headers.contains_key(HEADER_FORWARDED) {
        let message = format!("node {host:?} has no stream tunnel here");
        return respond(&mut client, 503, &message).await;
    }
    let holder = match peers {
        Some(peers) => peers.holder(&host).await,
        // Without the cluster's Nodes to check against, only our own tunnels are served.
        None => Holder::NotANode,
    };
    match (holder, peers) {
        (Holder::Peer(holder), Some(peers)) => {
            return peers.forward(client, &target, &rest, &holder).await;
        }
        (Holder::CloudNode { kubelet_port }, _) => {
            // A cloud node's kubelet, nothing else on it.
            if port_of(&target) != Some(kubelet_port) {
                let message = format!("only the kubelet port {kubelet_port} of {host:?}");
                return respond(&mut client, 403, &message).await;
            }
        }
        (Holder::Nobody | Holder::Peer(_), _) => {
            let message = format!("node {host:?} is not connected (no stream tunnel)");
            return respond(&mut client, 503, &message).await;
        }
        (Holder::NotANode, _) => {
            let message = format!("{host:?} is not a node of this cluster");
            return respond(&mut client, 403, &message).await;
        }
    }
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await;
    let mut upstream = match connected {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            let message = format!("{target}: {err}");
            return respond(&mut client, 502, &message).await;
        }
        Err(_) => {
            let message = format!("{target}: no connection within {CONNECT_TIMEOUT:?}");
            return respond(&mut client, 502, &message).await;
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    upstream.write_all(&rest).await.map_err(|e| e.to_string())?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One kubelet request for `node` (named or addressed by `node`).
async fn serve_request<S>(
    mut client: S,
    head: Head,
    rest: Vec<u8>,
    tunnels: &Tunnels,
    node: &str,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (path, raw_query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    let kubelet = match KubeletRequest::parse(path, raw_query) {
        Ok(kubelet) => kubelet,
        Err(err) => return respond(&mut client, 404, &err.to_string()).await,
    };
    let Some(tunnel) = tunnels.get(node) else {
        let message =
            format!("node {node:?} is not connected to this cloudcore (no stream tunnel)");
        return respond(&mut client, 503, &message).await;
    };
    let upgrade = kubelet.kind != StreamKind::Logs;
    let connect = ConnectRequest {
        mess_id: 0,
        method: if upgrade {
            head.method.clone()
        } else {
            String::new()
        },
        header: head.headers.clone(),
        path: path.to_owned(),
        raw_query: raw_query.to_owned(),
    };
    let kind = match kubelet.kind {
        StreamKind::Logs => MessageType::LogsConnect,
        StreamKind::Attach => MessageType::AttachConnect,
        StreamKind::Exec | StreamKind::PortForward => MessageType::ExecConnect,
    };
    let opened = tunnel
        .open_with(kind, |id| Bytes::from(connect.with_mess_id(id).to_json()))
        .await;
    let Ok(mut session) = opened else {
        return respond(&mut client, 503, "the stream tunnel closed").await;
    };
    if upgrade && !rest.is_empty() && session.send(&rest).await.is_err() {
        return respond(&mut client, 503, "the stream tunnel closed").await;
    }
    // Upgrades wait for the runtime's answer; a log's headers go out after its first bytes or
    // a moment of quiet (a followed log may stay quiet for long).
    let wait = if upgrade {
        UPGRADE_ANSWER_TIMEOUT
    } else {
        FIRST_LOG_BYTES_WAIT
    };
    let first = match tokio::time::timeout(wait, session.recv()).await {
        Ok(Some(first)) => Some(first),
        Ok(None) => {
            if let Some(reason) = session.refusal() {
                let reason = reason.to_owned();
                return respond(&mut client, 400, &reason).await;
            }
            if upgrade || tunnel.is_ended() {
                return respond(&mut client, 503, "the stream tunnel closed").await;
            }
            None // an empty log
        }
        Err(_) if upgrade => {
            return respond(&mut client, 504, "the node did not answer").await;
        }
        Err(_) => Some(bytes::Bytes::new()),
    };
    if upgrade {
        // The runtime's answer — its 101 and then the stream — goes to the client as it is.
        let first = first.unwrap_or_default();
        client.write_all(&first).await.map_err(|e| e.to_string())?;
        ke_stream::relay(client, session).await;
        return Ok(());
    }
    let io = |e: std::io::Error| e.to_string();
    let (mut from_client, mut client) = tokio::io::split(client);
    client
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await
        .map_err(io)?;
    let mut next = first;
    let mut probe = [0u8; 256];
    loop {
        if let Some(data) = next.take()
            && !data.is_empty()
        {
            // An empty chunk would be the end of the body.
            client
                .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await
                .map_err(io)?;
            client.write_all(&data).await.map_err(io)?;
            client.write_all(b"\r\n").await.map_err(io)?;
            client.flush().await.map_err(io)?;
        }
        tokio::select! {
            data = session.recv() => match data {
                Some(data) => next = Some(data),
                None => break,
            },
            // The client went away (a followed log is ended with it, not left polling).
            read = from_client.read(&mut probe) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
    client.write_all(b"0\r\n\r\n").await.map_err(io)?;
    client.flush().await.map_err(io)
}

async fn respond<S: AsyncWrite + Unpin>(
    client: &mut S,
    status: u16,
    message: &str,
) -> Result<(), String> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    client
        .write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}

/// The port of `host:port`.
fn port_of(authority: &str) -> Option<u16> {
    authority.rsplit_once(':')?.1.parse().ok()
}

/// `host:port` or `[v6]:port` → the host.
fn host_name(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[derive(Debug)]
struct Head {
    method: String,
    /// The request target: a path with query, or `host:port` for CONNECT.
    path: String,
    host: String,
    headers: std::collections::BTreeMap<String, Vec<String>>,
}

/// Reads a request head; the bytes after it are returned with it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Head, Vec<u8>), String> {
    let mut buffered = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffered) {
            Ok(httparse::Status::Complete(length)) => {
                let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                let mut host = String::new();
                for header in request.headers.iter() {
                    let value = String::from_utf8_lossy(header.value).into_owned();
                    if header.name.eq_ignore_ascii_case("host") {
                        host = value.clone();
                    }
                    if ke_stream::request::forwarded(header.name)
                        || header.name.eq_ignore_ascii_case(HEADER_FORWARDED)
                    {
                        map.entry(crate::pods::canonical(header.name))
                            .or_default()
                            .push(value);
                    }
                }
                let head = Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    path: request.path.unwrap_or_default().to_owned(),
                    host,
                    headers: map,
                };
                return Ok((head, buffered.split_off(length)));
            }
            Ok(httparse::Status::Partial) if buffered.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => return Err("request head too large".into()),
            Err(err) => return Err(format!("not an HTTP request: {err}")),
        }
        let n = tokio::time::timeout(HEAD_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| "no request within 30s".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a request".into());
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
}

/// A stream with some bytes already read off it put back in front.
struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heads_arrive_in_pieces_and_bad_ones_are_errors() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let request = b"CONNECT edge-1:10250 HTTP/1.1\r\nHost: edge-1:10250\r\nAuthorization: Bearer x\r\nX-Kubeedge-Rs-Forwarded: 1\r\n\r\nTLS";
        let writer = tokio::spawn(async move {
            for piece in request.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        let (head, rest) = read_head(&mut server).await.unwrap();
        let _client = writer.await.unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("CONNECT", "edge-1:10250")
        );
        assert_eq!(head.host, "edge-1:10250");
        assert_eq!(rest, b"TLS");
        // Credentials are not kept for the node; the forwarding mark is.
        assert!(!head.headers.contains_key("Authorization"));
        assert!(head.headers.contains_key(HEADER_FORWARDED));

        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"\x16\x03\x01garbage\r\n\r\n")
            .await
            .unwrap();
        assert!(read_head(&mut server).await.is_err());
        let (mut client, mut server) = tokio::io::duplex(256 * 1024);
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100 * 1024));
        client.write_all(endless.as_bytes()).await.unwrap();
        assert_eq!(
            read_head(&mut server).await.unwrap_err(),
            "request head too large"
        );
        drop(client);
        let (client, mut server) = tokio::io::duplex(16);
        drop(client);
        assert!(read_head(&mut server).await.is_err());
    }

    #[test]
    fn authorities() {
        assert_eq!(host_name("edge-1:10250"), "edge-1");
        assert_eq!(host_name("[fd00::1]:10250"), "fd00::1");
        assert_eq!(host_name("edge-1"), "edge-1");
        assert_eq!(port_of("10.0.0.5:10250"), Some(10250));
        assert_eq!(port_of("10.0.0.5"), None);
        assert_eq!(port_of("10.0.0.5:x"), None);
    }
}
