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

use std::time::Duration;

use bytes::Bytes;
use ke_stream::MessageType;
use ke_stream::request::{ConnectRequest, KubeletRequest, StreamKind};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Tunnels;
use crate::peers::{HEADER_FORWARDED, Holder, Peers};

const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    tunnels: Tunnels,
    peers: Option<Peers>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "stream server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let tls = tls.clone();
        let tunnels = tunnels.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(tcp, &tls, &tunnels, peers.as_ref()).await {
                tracing::debug!(%peer, reason, "stream server connection ended");
            }
        });
    }
}

async fn connection(
    tcp: TcpStream,
    tls: &TlsAcceptor,
    tunnels: &Tunnels,
    peers: Option<&Peers>,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(HEAD_TIMEOUT, tls.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    authorize(stream.get_ref().1.peer_certificates())?;
    let mut stream = stream;
    let (head, rest) = read_head(&mut stream).await?;
    if head.method == "CONNECT" {
        return proxy(stream, head, rest, tls, tunnels, peers).await;
    }
    let node = host_name(&head.host).to_owned();
    serve_request(stream, head, rest, tunnels, &node).await
}

/// Only API servers (and other cloudcores) open streams: an edge node's certificate is
/// refused.
fn authorize(certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Result<(), String> {
    let name = ke_pki::tls::peer_common_name(certificates).map_err(|e| e.to_string())?;
    if name.starts_with("system:node:") {
        return Err(format!("{name} may not open streams"));
    }
    Ok(())
}

/// `CONNECT <host>:<port>`: an edge node whose tunnel is here is served here; one whose tunnel
/// another cloudcore holds goes to that one; any other destination (a cloud node) is forwarded
/// as TCP.
async fn proxy<S>(
    mut client: S,
    head: Head,
    rest: Vec<u8>,
    tls: &TlsAcceptor,
    tunnels: &Tunnels,
    peers: Option<&Peers>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = head.path.clone();
    let host = host_name(&target).to_owned();
    if let Some(node) = tunnels.node_for(&host) {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        // kube-apiserver now speaks TLS to "the kubelet" inside the tunnel.
        let inner = Prefixed::new(rest, client);
        let mut inner = tokio::time::timeout(HEAD_TIMEOUT, tls.accept(inner))
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
    if let Some(peers) = peers {
        match peers.holder(&host).await {
            Holder::Peer(holder) => return peers.forward(client, &target, &rest, &holder).await,
            Holder::Nobody => {
                let message = format!("node {host:?} is not connected (no stream tunnel)");
                return respond(&mut client, 503, &message).await;
            }
            Holder::NoSuchNode => {}
        }
    }
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(upstream) => upstream,
        Err(err) => {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return Err(format!("forward to {target}: {err}"));
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
    let Some(tunnel) = tunnels.node_for(node).and_then(|n| tunnels.get(&n)) else {
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
    let first = session.recv().await;
    let Some(first) = first else {
        let (status, reason) = match session.refusal() {
            Some(reason) => (400, reason.to_owned()),
            None => (503, "the stream tunnel closed".to_owned()),
        };
        return respond(&mut client, status, &reason).await;
    };
    if upgrade {
        // The runtime's answer — its 101 and then the stream — goes to the client as it is.
        client.write_all(&first).await.map_err(|e| e.to_string())?;
        ke_stream::relay(client, session).await;
        return Ok(());
    }
    let io = |e: std::io::Error| e.to_string();
    client
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .map_err(io)?;
    let mut next = Some(first);
    while let Some(data) = next {
        client
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await
            .map_err(io)?;
        client.write_all(&data).await.map_err(io)?;
        client.write_all(b"\r\n").await.map_err(io)?;
        client.flush().await.map_err(io)?;
        next = session.recv().await;
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
        404 => "Not Found",
        503 => "Service Unavailable",
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
