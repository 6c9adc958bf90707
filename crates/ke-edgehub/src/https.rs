//! The two HTTPS calls of certificate bootstrap, over hyper's HTTP/1 client on tokio-rustls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Certificates are small; anything bigger is not a certificate.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("reading the response from {url}: {reason}")]
    Body { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
}

/// `GET url` with `body` and `headers` over TLS configured by `tls`; returns the body of a 200.
pub(crate) async fn get(
    url: &str,
    tls: ClientConfig,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    tokio::time::timeout(timeout, get_inner(url, tls, headers, body))
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_owned(),
            timeout,
        })?
}

async fn get_inner(
    url: &str,
    tls: ClientConfig,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Bytes, HttpError> {
    let bad_url = |reason: &str| HttpError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad_url(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad_url("only https is supported"));
    }
    let host = uri.host().ok_or_else(|| bad_url("no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    // An IPv6 literal comes bracketed from `Uri::host`.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name = ServerName::try_from(bare_host.clone())
        .map_err(|_| bad_url("host is not a valid TLS name"))?;

    let tcp = TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|source| HttpError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|source| HttpError::Tls {
            url: url.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Request {
            url: url.to_owned(),
            source,
        })?;
    // The connection future drives the socket; it ends when `sender` is dropped.
    tokio::spawn(connection);

    let mut request = Request::get(uri.clone()).header(
        hyper::header::HOST,
        uri.authority().map(|a| a.as_str()).unwrap_or(host),
    );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| bad_url(&e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| HttpError::Request {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| HttpError::Body {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(HttpError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(&bytes).trim().to_owned(),
        });
    }
    Ok(bytes)
}
