//! exec, attach and port-forward: the runtime's streaming server does the protocol (SPDY,
//! remotecommand, port forwarding into the pod's network namespace), as it does for kubelet.
//! We ask CRI for the session's URL, send it the caller's upgrade request, and relay bytes both
//! ways untouched — so the 101 (or the error) the caller reads is the runtime's own.

use ke_cri::{CriClient, api};
use ke_stream::Session;
use ke_stream::request::{ConnectRequest, KubeletRequest, StreamKind};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::containers::{self, Refusal, call};

pub async fn serve(
    cri: &CriClient,
    connect: &ConnectRequest,
    request: &KubeletRequest,
    session: Session,
) {
    let upstream = match open(cri, connect, request).await {
        Ok(upstream) => upstream,
        Err(refusal) => {
            tracing::debug!(path = %connect.path, error = %refusal, "stream refused");
            let _ = session.send(&http_error(&refusal)).await;
            return;
        }
    };
    ke_stream::relay(upstream, session).await;
}

/// Asks the runtime for the stream and sends it the request.
async fn open(
    cri: &CriClient,
    connect: &ConnectRequest,
    request: &KubeletRequest,
) -> Result<TcpStream, Refusal> {
    let url = stream_url(cri, request).await?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Refusal::runtime(format!("unsupported stream URL {url:?}")))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| Refusal::runtime(format!("streaming server {authority}: {e}")))?;
    let method = if connect.method.is_empty() {
        "POST"
    } else {
        &connect.method
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, values) in &connect.header {
        // What the cloud forwards is already this set; a Go cloud forwards everything.
        if !ke_stream::request::forwarded(name) {
            continue;
        }
        for value in values {
            if !value.contains(['\r', '\n']) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| Refusal::runtime(format!("streaming server {authority}: {e}")))?;
    Ok(tcp)
}

async fn stream_url(cri: &CriClient, request: &KubeletRequest) -> Result<String, Refusal> {
    let flag = |name| request.flag(name);
    match request.kind {
        StreamKind::Exec => {
            let cmd: Vec<String> = request
                .params("command")
                .into_iter()
                .map(str::to_owned)
                .collect();
            if cmd.is_empty() {
                return Err(Refusal::bad_request("you must specify at least 1 command"));
            }
            let container = containers::running_container(cri, request).await?;
            let response = call(cri.runtime().exec(api::ExecRequest {
                container_id: container.id,
                cmd,
                tty: flag("tty"),
                stdin: flag("stdin"),
                stdout: flag("stdout"),
                stderr: flag("stderr") && !flag("tty"),
            }))
            .await?;
            Ok(response.url)
        }
        StreamKind::Attach => {
            let container = containers::running_container(cri, request).await?;
            let response = call(cri.runtime().attach(api::AttachRequest {
                container_id: container.id,
                stdin: flag("stdin"),
                tty: flag("tty"),
                stdout: flag("stdout"),
                stderr: flag("stderr") && !flag("tty"),
            }))
            .await?;
            Ok(response.url)
        }
        StreamKind::PortForward => {
            let sandbox = containers::ready_sandbox(cri, request).await?;
            // With SPDY the ports come in the stream headers, not here.
            let port = request
                .params("port")
                .into_iter()
                .filter_map(|p| p.parse().ok())
                .collect();
            let response = call(cri.runtime().port_forward(api::PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port,
            }))
            .await?;
            Ok(response.url)
        }
        StreamKind::Logs => Err(Refusal::bad_request("logs are not an upgrade")),
    }
}

/// The error response kubelet would write (the caller parses it like any HTTP response).
pub fn http_error(refusal: &Refusal) -> Vec<u8> {
    let reason = match refusal.status {
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        refusal.status,
        refusal.message.len(),
        refusal.message
    )
    .into_bytes()
}
