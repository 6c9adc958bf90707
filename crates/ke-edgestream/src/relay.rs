//! exec, attach and port-forward: the runtime's streaming server does the protocol (SPDY,
//! remotecommand, port forwarding into the pod's network namespace), as it does for kubelet.
//! We ask CRI for the session's URL, send it the caller's upgrade request, and relay bytes both
//! ways untouched — so the 101 (or the error) the caller reads is the runtime's own.

use ke_cri::{CriClient, api};
use ke_stream::Session;
use ke_stream::request::{ConnectRequest, KubeletRequest, StreamKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::containers::{self, Refusal, call};

/// Headers that describe the hop to us, not the request; the rest goes to the runtime as sent.
const HOP_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "authorization",
];

pub async fn serve(
    cri: &CriClient,
    connect: &ConnectRequest,
    request: &KubeletRequest,
    mut session: Session,
) {
    let upstream = match open(cri, connect, request).await {
        Ok(upstream) => upstream,
        Err(refusal) => {
            tracing::debug!(path = %connect.path, error = %refusal, "stream refused");
            let _ = session.send(&http_error(&refusal)).await;
            return;
        }
    };
    let (mut from_runtime, mut to_runtime) = upstream.into_split();
    let sender = session.sender();
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_runtime.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let upstream = async move {
        while let Some(data) = session.recv().await {
            if to_runtime.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    // Either side ending ends the session (dropping it tells the cloud).
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
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
        if HOP_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
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
