//! Several cloudcores: a stream request must be served by the one holding the node's tunnel,
//! whichever one kube-apiserver's request reached.
//!
//! The holder announces itself on the Node (annotation [`HOLDER_ANNOTATION`] = its stream
//! server's `host:port`) when the tunnel connects, retrying until the API server takes it, and
//! withdraws the annotation when the tunnel ends if it still names this cloudcore. A
//! cloudcore that receives a `CONNECT` for a node it does not hold looks the annotation up and
//! forwards the `CONNECT` there, as a peer
//! (a client certificate from the cluster's KubeEdge CA, CN [`PEER_COMMON_NAME`]), marked so it
//! is never forwarded twice; then it relays bytes, and kube-apiserver's TLS session with "the
//! kubelet" runs end to end with the holder.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Body;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use ke_apiserver::ApiError;
use kube::api::{Api, Patch, PatchParams};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const HOLDER_ANNOTATION: &str = "cloudstream.kubeedge.io/server";
/// When the holder's tunnel connected. Every announcement changes it, so it always moves the
/// Node's resourceVersion, which is what [`Peers::withdraw`]'s precondition relies on.
pub const CONNECTED_ANNOTATION: &str = "cloudstream.kubeedge.io/connected-at";
const EDGE_ROLE_LABEL: &str = "node-role.kubernetes.io/edge";
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The CN of the certificate cloudcores present to each other.
pub const PEER_COMMON_NAME: &str = "kubeedge:cloudstream";
/// Marks a forwarded `CONNECT`: the receiver serves it or refuses it, never forwards it.
pub const HEADER_FORWARDED: &str = "X-Kubeedge-Rs-Forwarded";
/// How long the peer certificate lasts; issued again at every start.
const PEER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A pod stream request to pass to another cloudcore ([`Peers::forward_request`]).
pub(crate) struct ForwardedRequest {
    pub method: String,
    /// The kubelet path and query.
    pub path_and_query: String,
    pub header: std::collections::BTreeMap<String, Vec<String>>,
    /// The caller's connection, for an upgrade.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The answer of [`Peers::holder`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Another cloudcore, at this stream server address.
    Peer(String),
    /// An edge node, but no other cloudcore claims its tunnel (we did, or nobody has).
    Nobody,
    /// A node that is not an edge node: its kubelet is reached directly.
    CloudNode { kubelet_port: u16 },
    /// No node of the cluster: the stream server is no general proxy.
    NotANode,
}

/// This cloudcore among its peers.
#[derive(Clone)]
pub struct Peers {
    /// Our stream server, as the others reach it (`host:port`).
    me: String,
    nodes: Api<Node>,
    tls: Arc<rustls::ClientConfig>,
}

impl Peers {
    /// `me` is this cloudcore's stream server address for the others; the peer certificate is
    /// issued from `ca`, which every cloudcore of the cluster shares.
    pub fn new(
        me: String,
        client: kube::Client,
        ca: &ke_pki::CertificateAuthority,
    ) -> anyhow::Result<Peers> {
        let (cert, key) = ca
            .issue_user_client_cert(PEER_COMMON_NAME, &[], PEER_CERT_VALIDITY, SystemTime::now())
            .context("issue the cloudstream peer certificate")?;
        let tls = ke_pki::tls::client_config_mtls(ca.ca_der(), &cert, &key)?;
        Ok(Peers {
            me,
            nodes: Api::all(client),
            tls: Arc::new(tls),
        })
    }

    /// Records on the Node that its tunnel is here; retries (every 1 s, backing off to 30 s)
    /// until the API server takes it. Cancel it when the tunnel ends.
    pub(crate) async fn announce(&self, node: &str) {
        let connected = k8s_openapi::chrono::Utc::now()
            .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Nanos, true);
        let patch = serde_json::json!({"metadata": {"annotations": {
            HOLDER_ANNOTATION: self.me,
            CONNECTED_ANNOTATION: connected,
        }}});
        let mut wait = Duration::from_secs(1);
        while let Err(err) = self
            .nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(node, error = %err, ?wait, "could not record the stream tunnel's cloudcore; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Removes the annotations if they still name this cloudcore and `gone` still holds (the
    /// node may already be back, here or at another cloudcore, which then owns them): read,
    /// check, then a patch carrying the resourceVersion read, so an announcement in between
    /// fails it (409) and it is all done again. Best effort: a stale annotation only costs a
    /// forward that the old holder answers with 503.
    pub(crate) async fn withdraw(&self, node: &str, gone: impl Fn() -> bool) {
        let attempt = async {
            for _ in 0..3 {
                let current = self.nodes.get_opt(node).await?;
                let Some(current) = current else {
                    return Ok(());
                };
                let named = current
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HOLDER_ANNOTATION));
                if named != Some(&self.me) || !gone() {
                    return Ok(());
                }
                let patch = serde_json::json!({"metadata": {
                    "resourceVersion": current.metadata.resource_version,
                    "annotations": {HOLDER_ANNOTATION: null, CONNECTED_ANNOTATION: null},
                }});
                match self
                    .nodes
                    .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    other => return other.map(drop),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(node, error = %err, "could not withdraw the holder"),
            Err(_) => tracing::debug!(node, "withdrawing the holder timed out"),
        }
    }

    /// What `host` (a CONNECT target's host: a node name or address) is, as the Nodes say.
    pub(crate) async fn holder(&self, host: &str) -> Holder {
        let found = match self.nodes.get_opt(host).await {
            Ok(Some(node)) => Some(node),
            Ok(None) => match self.node_with_address(host).await {
                Some(name) => self.nodes.get_opt(&name).await.ok().flatten(),
                None => None,
            },
            Err(err) => {
                tracing::debug!(host, error = %err, "node lookup failed");
                None
            }
        };
        let Some(found) = found else {
            return Holder::NotANode;
        };
        let edge = found
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EDGE_ROLE_LABEL));
        if !edge {
            let port = found
                .status
                .as_ref()
                .and_then(|s| s.daemon_endpoints.as_ref())
                .and_then(|d| d.kubelet_endpoint.as_ref())
                .map(|e| e.port)
                .filter(|&p| p > 0)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(DEFAULT_KUBELET_PORT);
            return Holder::CloudNode { kubelet_port: port };
        }
        match found
            .metadata
            .annotations
            .and_then(|a| a.get(HOLDER_ANNOTATION).cloned())
        {
            Some(holder) if holder != self.me => Holder::Peer(holder),
            _ => Holder::Nobody,
        }
    }

    /// The name of the one Node that has `address` among its status addresses (an edge reports
    /// its own, so an address two Nodes claim names neither). One LIST per call: addresses are
    /// looked up only when kube-apiserver prefers them to names.
    pub(crate) async fn node_with_address(&self, address: &str) -> Option<String> {
        let nodes = self.nodes.list(&Default::default()).await.ok()?;
        let mut claims = nodes.items.into_iter().filter(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|list| list.iter().any(|a| a.address == address))
        });
        match (claims.next(), claims.next()) {
            (Some(node), None) => node.metadata.name,
            _ => None,
        }
    }

    /// Forwards `CONNECT target` to `holder` and, once it agrees, relays `client` to it.
    pub(crate) async fn forward<S>(
        &self,
        mut client: S,
        target: &str,
        rest: &[u8],
        holder: &str,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let dialed = tokio::time::timeout(FORWARD_TIMEOUT, self.dial(holder))
            .await
            .map_err(|_| format!("cloudcore {holder} did not answer"))
            .and_then(|dialed| dialed);
        let mut peer = match dialed {
            Ok(peer) => peer,
            Err(reason) => {
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
                    reason.len()
                );
                let _ = client.write_all(answer.as_bytes()).await;
                return Err(reason);
            }
        };
        let head =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{HEADER_FORWARDED}: 1\r\n\r\n");
        peer.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // The answer's head, byte by byte so nothing of the tunnelled stream is read with it.
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 4096 {
                return Err(format!("cloudcore {holder}: oversized answer"));
            }
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(FORWARD_TIMEOUT, peer.read(&mut byte))
                .await
                .map_err(|_| format!("cloudcore {holder} did not answer"))?;
            match read {
                Ok(1) => answer.push(byte[0]),
                _ => return Err(format!("cloudcore {holder} closed the connection")),
            }
        }
        client.write_all(&answer).await.map_err(|e| e.to_string())?;
        // On 200 the tunnelled stream follows; on a refusal its body, then the holder closes.
        if answer.starts_with(b"HTTP/1.1 200") {
            peer.write_all(rest).await.map_err(|e| e.to_string())?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut peer)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Sends an API server's pod stream request, as the kubelet request `path_and_query` for
    /// `node`, to the cloudcore holding the node's tunnel, and answers with what it answers: a
    /// log body, an error, or a 101 after which both upgraded connections are joined.
    pub(crate) async fn forward_request(
        &self,
        holder: &str,
        node: &str,
        request: ForwardedRequest,
    ) -> Result<Response, ApiError> {
        let unavailable = |e: String| ApiError::new(503, "ServiceUnavailable", e);
        let io = tokio::time::timeout(FORWARD_TIMEOUT, self.dial(holder))
            .await
            .map_err(|_| unavailable(format!("cloudcore {holder} did not answer")))?
            .map_err(unavailable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| unavailable(format!("cloudcore {holder}: {e}")))?;
        tokio::spawn(connection.with_upgrades());
        let mut outgoing = http::Request::builder()
            .method(request.method.as_str())
            .uri(&request.path_and_query)
            .header(http::header::HOST, format!("{node}:10250"));
        for (name, values) in &request.header {
            for value in values {
                outgoing = outgoing.header(name, value);
            }
        }
        let outgoing = outgoing
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut answer = sender
            .send_request(outgoing)
            .await
            .map_err(|e| unavailable(format!("cloudcore {holder}: {e}")))?;
        let status = answer.status();
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            let Some(caller) = request.upgrade else {
                return Err(ApiError::internal("an upgrade answered a plain request"));
            };
            let theirs = hyper::upgrade::on(&mut answer);
            let mut response = Response::builder().status(status);
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            tokio::spawn(async move {
                if let (Ok(ours), Ok(theirs)) = tokio::join!(caller, theirs) {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(ours),
                        &mut TokioIo::new(theirs),
                    )
                    .await;
                }
            });
            return response
                .body(Body::empty())
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        if !status.is_success() {
            let body = http_body_util::BodyExt::collect(answer.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            return Err(match status.as_u16() {
                400 => ApiError::bad_request(body),
                404 => ApiError::new(404, "NotFound", body),
                _ => unavailable(body),
            });
        }
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Body::new(answer.into_body()))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    async fn dial(
        &self,
        holder: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let host = holder
            .rsplit_once(':')
            .map_or(holder, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(holder)
            .await
            .map_err(|e| format!("cloudcore {holder}: {e}"))?;
        TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("cloudcore {holder}: TLS: {e}"))
    }
}
