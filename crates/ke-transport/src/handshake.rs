use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{Connection, TransportError};

pub const HEADER_NODE_ID: &str = "node_id";
pub const HEADER_PROJECT_ID: &str = "project_id";
pub const HEADER_CONNECTION_USE: &str = "connectionuse";
const CONNECTION_USE_MESSAGE: &str = "msg";

/// Who an edge says it is, from the upgrade headers. Whether to believe it is the caller's call:
/// cloudhub checks it against the client certificate's CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeIdentity {
    pub node_id: String,
    pub project_id: String,
}

/// A reason to refuse an upgrade, sent to the edge as the HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// The URL upstream's edgehub dials: `wss://<server>/<projectID>/<nodeName>/events`.
pub fn edge_url(server: &str, project_id: &str, node_id: &str) -> String {
    format!("wss://{server}/{project_id}/{node_id}/events")
}

/// tungstenite zero-fills its whole read buffer before every read, so its 128 KiB default would
/// be resident for every idle session (10,000 edges ≈ 1.3 GiB on the cloud). Our frames are
/// mostly well under 8 KiB; a bigger frame makes the buffer grow for that frame.
const READ_BUFFER_BYTES: usize = 8 * 1024;

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Server side: completes the WebSocket upgrade on an established (TLS) stream.
///
/// `admit` sees the identity from the headers before the upgrade is answered; returning a
/// [`Refusal`] answers with that HTTP status and reason instead of upgrading. A request without a
/// `node_id` header is refused with 400.
pub async fn accept<S, F>(
    stream: S,
    max_frame_bytes: usize,
    admit: F,
) -> Result<(EdgeIdentity, Connection<S>), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&EdgeIdentity) -> Result<(), Refusal> + Unpin,
{
    let mut identity = None;
    let mut refusal = None;
    // The callback's error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let header = |name: &str| {
            // http's HeaderMap lowercases names, which is what makes `Node_id` match.
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let claimed = EdgeIdentity {
            node_id: header(HEADER_NODE_ID),
            project_id: header(HEADER_PROJECT_ID),
        };
        let verdict = if claimed.node_id.is_empty() {
            Err(Refusal::new(400, "missing node_id header"))
        } else {
            admit(&claimed)
        };
        match verdict {
            Ok(()) => {
                identity = Some(claimed);
                Ok(response)
            }
            Err(refused) => {
                let body = refused.reason.clone();
                refusal = Some(refused.clone());
                Err(error_response(refused.status, body))
            }
        }
    };
    let result = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config(max_frame_bytes)),
    )
    .await;
    match (result, identity, refusal) {
        (Ok(ws), Some(identity), _) => Ok((identity, Connection::new(ws, max_frame_bytes))),
        (_, _, Some(refused)) => Err(TransportError::Refused {
            status: refused.status,
            reason: refused.reason,
        }),
        (Err(err), _, _) => Err(TransportError::Handshake(err)),
        (Ok(_), None, None) => Err(TransportError::InvalidRequest(
            "upgrade completed without an identity".into(),
        )),
    }
}

fn error_response(status: u16, reason: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    response
}

/// Edge side: upgrades an established (TLS) stream to the cloud, sending the identity headers.
pub async fn connect<S>(
    stream: S,
    url: &str,
    identity: &EdgeIdentity,
    max_frame_bytes: usize,
) -> Result<Connection<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url
        .into_client_request()
        .map_err(|e| TransportError::InvalidRequest(format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in [
        (HEADER_NODE_ID, identity.node_id.as_str()),
        (HEADER_PROJECT_ID, identity.project_id.as_str()),
        (HEADER_CONNECTION_USE, CONNECTION_USE_MESSAGE),
    ] {
        let value = HeaderValue::from_str(value)
            .map_err(|_| TransportError::InvalidRequest(format!("{name} value {value:?}")))?;
        headers.insert(name, value);
    }
    match tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(ws_config(max_frame_bytes)),
    )
    .await
    {
        Ok((ws, _response)) => Ok(Connection::new(ws, max_frame_bytes)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let reason = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            Err(TransportError::Refused { status, reason })
        }
        Err(err) => Err(TransportError::Handshake(err)),
    }
}
