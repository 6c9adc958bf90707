//! The embedded API server's `pods/{log,exec,attach,portforward}`, answered through the pod's
//! node's tunnel — what kube-apiserver does by proxying to the kubelet, without a network hop
//! from the API server to cloudcore and without iptables.
//!
//! The request becomes the kubelet request upstream's cloudstream sends (`/containerLogs/…`,
//! `/exec/<ns>/<pod>/<uid>/<container>?command=…`, `/portForward/<ns>/<pod>/<uid>`). Logs are
//! streamed back as the response body. For upgrades the edge's raw HTTP answer is parsed: a 101
//! is passed on with its headers and the connection becomes a byte relay; anything else becomes
//! a `Status` error.
//!
//! kubectl tries WebSocket streams first and falls back to SPDY when the upgrade is refused;
//! kube-apiserver translates WebSocket to SPDY for kubelets, we refuse WebSocket instead, so the
//! runtime's SPDY server on the edge speaks with kubectl end to end.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use ke_apiserver::ApiError;
use ke_apiserver::pods::BoxFuture;
use ke_stream::request::{ConnectRequest, KubeletRequest, StreamKind, encode_query, parse_query};
use ke_stream::{MessageType, Session, Tunnel};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::Tunnels;
use crate::peers::{ForwardedRequest, Holder};

/// How long the edge may take to answer an upgrade (it asks the runtime first).
const UPGRADE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a log response waits for the node's first bytes before its headers go out.
const FIRST_LOG_BYTES_WAIT: Duration = Duration::from_secs(2);
/// The most an answer's head may be.
const MAX_HEAD_BYTES: usize = 64 * 1024;

impl ke_apiserver::PodStreams for Tunnels {
    fn serve(&self, pod: Value, subresource: &str, request: Request) -> BoxFuture<Response> {
        let tunnels = self.clone();
        let subresource = subresource.to_owned();
        Box::pin(async move {
            match serve(&tunnels, &pod, &subresource, request).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            }
        })
    }
}

async fn serve(
    tunnels: &Tunnels,
    pod: &Value,
    subresource: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let text = |pointer: &str| {
        pod.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (namespace, name, uid, node) = (
        text("/metadata/namespace"),
        text("/metadata/name"),
        text("/metadata/uid"),
        text("/spec/nodeName"),
    );
    let kind = match subresource {
        "log" => StreamKind::Logs,
        "exec" => StreamKind::Exec,
        "attach" => StreamKind::Attach,
        "portforward" => StreamKind::PortForward,
        other => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("no such subresource {other:?}"),
            ));
        }
    };
    let query = parse_query(request.uri().query().unwrap_or_default());
    let container = match kind {
        StreamKind::PortForward => String::new(),
        _ => container_name(pod, &name, &query)?,
    };
    let upgrade = kind != StreamKind::Logs;
    if upgrade && is_websocket(request.headers()) {
        return Err(ApiError::bad_request(
            "WebSocket streams are not served here; use SPDY (kubectl falls back by itself)",
        ));
    }
    if upgrade && !request.headers().contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request(format!(
            "pods/{subresource} needs an upgrade (SPDY) request"
        )));
    }
    let tunnel = tunnels.get(&node);
    let kubelet = KubeletRequest {
        kind,
        namespace: namespace.clone(),
        pod: name.clone(),
        // Logs have no UID form on the kubelet; the others name the exact pod.
        uid: (kind != StreamKind::Logs && !uid.is_empty()).then_some(uid),
        container,
        query: Vec::new(),
    };
    let forwarded = encode_query(
        query
            .iter()
            .filter(|(key, _)| key != "container")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let connect = ConnectRequest {
        mess_id: 0,
        method: if upgrade {
            request.method().as_str().to_owned()
        } else {
            String::new()
        },
        header: go_header(request.headers()),
        path: kubelet.path(),
        raw_query: forwarded,
    };
    let Some(tunnel) = tunnel else {
        // Another cloudcore may hold it.
        if let Some(peers) = tunnels.peers()
            && let Holder::Peer(holder) = peers.holder(&node).await
        {
            let path_and_query = match connect.raw_query.as_str() {
                "" => connect.path.clone(),
                query => format!("{}?{query}", connect.path),
            };
            let forwarded = ForwardedRequest {
                method: request.method().as_str().to_owned(),
                path_and_query,
                header: connect.header.clone(),
                upgrade: upgrade.then(|| hyper::upgrade::on(&mut request)),
            };
            return peers.forward_request(&holder, &node, forwarded).await;
        }
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "node {node:?} is not connected to cloudcore (no stream tunnel): cannot reach pod {namespace}/{name}"
            ),
        ));
    };
    if upgrade {
        let on_upgrade = hyper::upgrade::on(&mut request);
        let message = match kind {
            StreamKind::Attach => MessageType::AttachConnect,
            // Port-forward goes as an exec connection (upstream has no type for it).
            _ => MessageType::ExecConnect,
        };
        let session = open(&tunnel, message, &connect, &node).await?;
        answer_upgrade(session, on_upgrade, &node).await
    } else {
        let session = open(&tunnel, MessageType::LogsConnect, &connect, &node).await?;
        stream_logs(session, &tunnel, &node).await
    }
}

async fn open(
    tunnel: &Tunnel,
    kind: MessageType,
    connect: &ConnectRequest,
    node: &str,
) -> Result<Session, ApiError> {
    tunnel
        .open_with(kind, |id| Bytes::from(connect.with_mess_id(id).to_json()))
        .await
        .map_err(|_| tunnel_lost(node))
}

fn tunnel_lost(node: &str) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("the stream tunnel to node {node:?} closed"),
    )
}

/// The log body, from the edge's first bytes on (an error before them is a `Status`).
async fn stream_logs(
    mut session: Session,
    tunnel: &Tunnel,
    node: &str,
) -> Result<Response, ApiError> {
    // A refusal comes at once; a quiet followed log gets its headers after a moment, as a
    // client or proxy waiting for them may give up.
    let first = match tokio::time::timeout(FIRST_LOG_BYTES_WAIT, session.recv()).await {
        Ok(first) => first,
        Err(_) => Some(Bytes::new()),
    };
    if first.is_none() {
        if let Some(reason) = session.refusal() {
            return Err(ApiError::bad_request(reason.to_owned()));
        }
        if tunnel.is_ended() {
            return Err(tunnel_lost(node));
        }
    }
    let rest = futures_util::stream::unfold(session, |mut session| async move {
        session
            .recv()
            .await
            .map(|data| (Ok::<_, Infallible>(data), session))
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::iter(first.map(Ok::<_, Infallible>)),
        rest,
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}

/// Reads the edge's answer to an upgrade; a 101 is passed on and the connection relayed.
async fn answer_upgrade(
    mut session: Session,
    on_upgrade: hyper::upgrade::OnUpgrade,
    node: &str,
) -> Result<Response, ApiError> {
    let mut buffered = Vec::new();
    let head = loop {
        if let Some(head) = parse_head(&buffered)? {
            break head;
        }
        if buffered.len() > MAX_HEAD_BYTES {
            return Err(ApiError::new(
                502,
                "BadGateway",
                "the edge's answer has an oversized head",
            ));
        }
        match tokio::time::timeout(UPGRADE_ANSWER_TIMEOUT, session.recv()).await {
            Ok(Some(data)) => buffered.extend_from_slice(&data),
            Ok(None) => {
                return Err(match session.refusal() {
                    Some(reason) => ApiError::bad_request(reason.to_owned()),
                    None => tunnel_lost(node),
                });
            }
            Err(_) => {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!("node {node:?} did not answer within {UPGRADE_ANSWER_TIMEOUT:?}"),
                ));
            }
        }
    };
    let rest = buffered.split_off(head.length);
    if head.status != 101 {
        return Err(error_from_edge(head.status, rest, &mut session).await);
    }
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in &head.headers {
        response = response.header(name, value);
    }
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "stream upgrade failed");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        if io.write_all(&rest).await.is_ok() {
            ke_stream::relay(io, session).await;
        }
    });
    Ok(response.body(Body::empty()).unwrap_or_default())
}

/// The edge refused the upgrade (kubelet-style error response): its body as the message.
async fn error_from_edge(status: u16, mut body: Vec<u8>, session: &mut Session) -> ApiError {
    // The error body is short; take what arrives promptly.
    while body.len() < 4096 {
        match tokio::time::timeout(Duration::from_millis(500), session.recv()).await {
            Ok(Some(data)) => body.extend_from_slice(&data),
            _ => break,
        }
    }
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if message.is_empty() {
        format!("the node answered {status}")
    } else {
        message
    };
    match status {
        400 => ApiError::bad_request(message),
        404 => ApiError::new(404, "NotFound", message),
        _ => ApiError::new(500, "InternalError", message),
    }
}

struct Head {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    length: usize,
}

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(length)) => Ok(Some(Head {
            status: response.code.unwrap_or(500),
            headers: response
                .headers
                .iter()
                .filter_map(|h| {
                    Some((
                        HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                        HeaderValue::from_bytes(h.value).ok()?,
                    ))
                })
                .collect(),
            length,
        })),
        Err(err) => Err(ApiError::new(
            502,
            "BadGateway",
            format!("the edge's answer is not HTTP: {err}"),
        )),
    }
}

/// The container a request is for: the one named, or the pod's only container (as
/// kube-apiserver decides it).
fn container_name(
    pod: &Value,
    pod_name: &str,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    let names = |list: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let containers = names("containers");
    let requested = query
        .iter()
        .rev()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    match requested {
        Some(name) => {
            let known = containers.contains(&name)
                || names("initContainers").contains(&name)
                || names("ephemeralContainers").contains(&name);
            if known {
                Ok(name)
            } else {
                Err(ApiError::bad_request(format!(
                    "container {name} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The headers the node gets ([`ke_stream::request::forwarded`]) as Go's `http.Header`
/// (canonical names).
fn go_header(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if !ke_stream::request::forwarded(name.as_str()) {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        out.entry(canonical(name.as_str()))
            .or_default()
            .push(value.to_owned());
    }
    out
}

/// Go's `CanonicalMIMEHeaderKey`: `x-stream-protocol-version` → `X-Stream-Protocol-Version`.
pub(crate) fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "init"}]}});
        let q = |c: &str| vec![("container".to_owned(), c.to_owned())];
        assert_eq!(container_name(&one, "p", &[]).unwrap(), "app");
        assert_eq!(container_name(&two, "p", &q("init")).unwrap(), "init");
        assert_eq!(
            container_name(&two, "p", &[]).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            container_name(&one, "p", &q("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
    }

    #[test]
    fn heads_and_headers() {
        assert!(parse_head(b"HTTP/1.1 101 Switching").unwrap().is_none());
        let head = parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.headers.len(), head.length), (101, 1, 55));
        assert!(parse_head(b"\x00\x01garbage\r\n\r\n").is_err());
        assert_eq!(
            canonical("x-stream-protocol-version"),
            "X-Stream-Protocol-Version"
        );
    }
}
