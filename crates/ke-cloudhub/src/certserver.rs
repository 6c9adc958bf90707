//! The HTTPS server edges join through (default `:10002`), as upstream serves it:
//!
//! * `GET /ca.crt` — the CA certificate, DER. Fetched by a joining edge without verifying the
//!   server; the edge pins it against the hash in its token.
//! * `GET /edge.crt` — body: a CSR, DER (≤ 1 MiB). Authorized either by a client certificate from
//!   our CA whose subject names the node (rotation) or by `Authorization: Bearer <jwt>` from a
//!   join token. Header `NodeName` names the node; optional `ExtKeyUsages` is a JSON list of Go
//!   `x509.ExtKeyUsage` values. Answers the signed certificate, DER.
//! * `GET /node/{name}` — 200 if the node is known, 404 otherwise (keadm's "already joined?").

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ke_pki::CertificateAuthority;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Shared;

/// Upstream limits the CSR body to 1 MiB.
const MAX_CSR_BYTES: usize = 1 << 20;

pub(crate) struct CertServer {
    pub ca: Arc<CertificateAuthority>,
    pub edge_cert_validity: Duration,
    pub shared: Arc<Shared>,
}

impl CertServer {
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: TlsAcceptor,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) {
        while let Some((tcp, peer)) =
            crate::accept::next_connection(&listener, &shutdown, "https").await
        {
            let server = Arc::clone(&self);
            let acceptor = acceptor.clone();
            // The WebSocket port's limit, for the same reason: a silent client must not hold a
            // task and a file descriptor for long.
            let handshake_timeout = self.shared.policy.handshake_timeout;
            tasks.spawn(async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::info!(%peer, error = %err, "certificate server: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "certificate server: TLS handshake timed out");
                        return;
                    }
                };
                let peer_certs: Option<Vec<CertificateDer<'static>>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect());
                let service = hyper::service::service_fn(move |request| {
                    let server = Arc::clone(&server);
                    let peer_certs = peer_certs.clone();
                    async move { Ok::<_, Infallible>(server.handle(request, peer_certs.as_deref()).await) }
                });
                // Without a timer hyper silently ignores its header read timeout, and a client
                // that finishes TLS but never sends a request would keep the connection forever.
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(handshake_timeout)
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %err, "certificate server connection ended with an error");
                }
            });
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        match (request.method(), path.as_str()) {
            (&Method::GET, "/ca.crt") => der_response(self.ca.ca_der().to_vec()),
            (&Method::GET, "/edge.crt") => match self.sign(request, peer_certs).await {
                Ok(cert) => der_response(cert),
                Err((status, reason)) => {
                    tracing::info!(%status, %reason, "edge certificate request refused");
                    text_response(status, reason)
                }
            },
            (&Method::GET, p) if p.starts_with("/node/") => {
                let name = &p["/node/".len()..];
                if !name.is_empty() && self.shared.is_known_node(name) {
                    text_response(StatusCode::OK, format!("node {name} exists"))
                } else {
                    text_response(StatusCode::NOT_FOUND, format!("node {name} not found"))
                }
            }
            _ => text_response(StatusCode::NOT_FOUND, format!("no route for {path}")),
        }
    }

    async fn sign(
        &self,
        request: Request<Incoming>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Vec<u8>, (StatusCode, String)> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let node = header("NodeName").filter(|n| !n.is_empty()).ok_or((
            StatusCode::BAD_REQUEST,
            "missing NodeName header".to_owned(),
        ))?;
        let usages = ke_pki::parse_ext_key_usages_header(header("ExtKeyUsages").as_deref())
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let now = SystemTime::now();
        match (
            peer_certs.filter(|certs| !certs.is_empty()),
            header("Authorization"),
        ) {
            // Rotation: the TLS layer already verified the chain; the subject must name the node.
            (Some(certs), _) => ke_pki::identity::check_node_cert(&certs[0], &node, true)
                .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?,
            (None, Some(auth)) => {
                let token = auth.strip_prefix("Bearer ").ok_or((
                    StatusCode::UNAUTHORIZED,
                    "authorization is not a bearer token".to_owned(),
                ))?;
                ke_pki::token::verify_token(&self.ca, token.trim(), now)
                    .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
            }
            (None, None) => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "no client certificate and no bearer token".to_owned(),
                ));
            }
        }
        let body = Limited::new(request.into_body(), MAX_CSR_BYTES)
            .collect()
            .await
            .map_err(|e| {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("reading the CSR: {e}"),
                )
            })?
            .to_bytes();
        self.ca
            .sign_edge_csr(&body, &node, &usages, self.edge_cert_validity, now)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
    }
}

fn der_response(der: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(der)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

fn text_response(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}
