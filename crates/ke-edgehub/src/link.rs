//! One connection's life: dial, then move messages both ways until the link breaks, the
//! certificate is due for rotation, or edgecore shuts down.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ke_bus::{Bus, ModuleContext};
use ke_message::Message;
use ke_message::constants::{content, group, operation, resource_type, source};
use ke_pki::persist;
use ke_transport::{Connection, EdgeIdentity, MessageSender};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::EdgeHubSettings;
use crate::dispatch::{Route, route_downstream};
use crate::rate::TokenBucket;

/// The TLS connection to the cloud.
pub type CloudStream = TlsStream<TcpStream>;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum LinkEnd {
    Shutdown,
    /// The certificate is due for renewal; reconnect with the new one.
    Rotate,
    Broken(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("websocket server {0:?} is not host:port")]
    BadServer(String),
    #[error("certificate files: {0}")]
    Files(#[from] ke_pki::PersistError),
    #[error("TLS setup: {0}")]
    Tls(#[from] ke_pki::TlsConfigError),
    #[error("connect to {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {server}: {source}")]
    Handshake {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Transport(#[from] ke_transport::TransportError),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// Opens the mTLS WebSocket to cloudhub.
pub(crate) async fn dial(settings: &EdgeHubSettings) -> Result<Connection<CloudStream>, DialError> {
    let handshake = settings.handshake_timeout;
    tokio::time::timeout(handshake, dial_inner(settings))
        .await
        .map_err(|_| DialError::Timeout(handshake))?
}

async fn dial_inner(settings: &EdgeHubSettings) -> Result<Connection<CloudStream>, DialError> {
    let server = &settings.websocket_server;
    let stream = connect_mtls(
        server,
        &settings.ca_file,
        &settings.cert_file,
        &settings.key_file,
    )
    .await?;
    let identity = EdgeIdentity {
        node_id: settings.node_name.clone(),
        project_id: settings.project_id.clone(),
    };
    let url = ke_transport::edge_url(server, &identity.project_id, &identity.node_id);
    Ok(ke_transport::connect(stream, &url, &identity, settings.max_frame_bytes).await?)
}

/// TCP and TLS to `server` (`host:port`) as this node: our CA trusted, the edge certificate
/// presented. Also the stream tunnel's dial (edgestream), with the same identity.
pub async fn connect_mtls(
    server: &str,
    ca_file: &std::path::Path,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<CloudStream, DialError> {
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| DialError::BadServer(server.to_owned()))?;
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| DialError::BadServer(server.to_owned()))?;
    let ca_der = persist::read_cert_file(ca_file)?;
    let (cert_der, key) = persist::read_edge_cert_and_key(cert_file, key_file)?;
    let tls = ke_pki::tls::client_config_mtls(&ca_der, &cert_der, key.key())?;

    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| DialError::Connect {
            server: server.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|source| DialError::Handshake {
            server: server.to_owned(),
            source,
        })
}

/// Runs an established connection until it ends.
pub(crate) async fn run(
    connection: Connection<CloudStream>,
    ctx: &mut ModuleContext,
    settings: &EdgeHubSettings,
) -> LinkEnd {
    let (mut writer, mut reader) = connection.split();
    let mut keepalive = tokio::time::interval(settings.heartbeat);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bucket = TokenBucket::new(settings.message_qps, settings.message_burst, Instant::now());
    let rotate_at = settings
        .rotate_certificates
        .then(|| crate::bootstrap::rotation_deadline(&settings.cert_file, fastrand::f64()))
        .flatten();

    let end = loop {
        tokio::select! {
            outgoing = ctx.recv() => {
                let Some(message) = outgoing else { break LinkEnd::Shutdown };
                // The limit is for what the edge originates. Answers to the cloud's own
                // messages (ACKs, query feedback) are exempt: limiting them would cap delivery
                // *to* the edge at messageQPS.
                let answer = !message.header.parent_id.is_empty();
                if !answer && let Err(wait) = bucket.try_take(Instant::now()) {
                    tokio::time::sleep(wait).await;
                    let _ = bucket.try_take(Instant::now());
                }
                if let Err(reason) = write(&mut writer, &message, settings.write_timeout).await {
                    fail_pending_request(ctx.bus(), &message, &reason);
                    break LinkEnd::Broken(reason);
                }
            }
            _ = keepalive.tick() => {
                let ping = Message::new()
                    .with_route(source::EDGE_HUB, group::RESOURCE, resource_type::NODE, operation::KEEPALIVE)
                    .with_content(content::KEEPALIVE_PING);
                if let Err(reason) = write(&mut writer, &ping, settings.write_timeout).await {
                    break LinkEnd::Broken(reason);
                }
            }
            incoming = reader.recv() => match incoming {
                Ok(Some(message)) => dispatch(ctx.bus(), message).await,
                Ok(None) => break LinkEnd::Broken("closed by the cloud".to_owned()),
                Err(err) => break LinkEnd::Broken(err.to_string()),
            },
            () = sleep_until(rotate_at) => break LinkEnd::Rotate,
        }
    };
    let (code, reason) = match &end {
        LinkEnd::Shutdown => (CloseCode::Away, "edgecore is shutting down"),
        LinkEnd::Rotate => (CloseCode::Normal, "rotating the edge certificate"),
        LinkEnd::Broken(_) => (CloseCode::Abnormal, ""),
    };
    if !matches!(end, LinkEnd::Broken(_)) {
        writer.close(code, reason).await;
    }
    drop(reader);
    end
}

async fn write(
    writer: &mut MessageSender<CloudStream>,
    message: &Message,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, writer.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("write timed out after {timeout:?}")),
    }
}

/// Delivers a cloud message on the edge bus.
async fn dispatch(bus: &Bus, message: Message) {
    let msg_id = message.header.id.clone();
    let delivered = match route_downstream(&message) {
        Route::Reply => {
            // A resource reply can come through the cloud's reliable queue (a query's answer):
            // if its requester gave up, metamanager still stores and ACKs it, or the cloud
            // would resend it forever.
            let late = (message.router.group == group::RESOURCE).then(|| message.clone());
            if bus.send_resp(message) {
                return;
            }
            match late {
                Some(late) => bus.send_to_group(group::META, late).await.map(|_| ()),
                None => {
                    tracing::debug!(%msg_id, "reply from the cloud arrived after its requester gave up");
                    return;
                }
            }
        }
        Route::Group(name) => bus.send_to_group(name, message).await.map(|_| ()),
        Route::Module(name) => bus.send(name, message).await,
        Route::Unroutable(reason) => {
            tracing::warn!(%msg_id, group = %message.router.group, reason, "cloud message dropped");
            return;
        }
    };
    if let Err(err) = delivered {
        tracing::debug!(%msg_id, error = %err, "no edge module took the cloud message");
    }
}

/// A module waiting in `send_sync` for a message that never left gets an error reply at once
/// instead of waiting out its timeout.
pub(crate) fn fail_pending_request(bus: &Bus, request: &Message, reason: &str) {
    if request.header.sync {
        let _ = bus.send_resp(Message::error_for(
            request,
            format!("not sent to the cloud: {reason}"),
        ));
    }
}

/// Tells the modules that care whether the cloud is reachable (upstream's `pubConnectInfo`).
pub(crate) async fn announce(bus: &Bus, connected: bool) {
    let status = if connected {
        content::CLOUD_CONNECTED
    } else {
        content::CLOUD_DISCONNECTED
    };
    for target in [group::TWIN, group::META, group::BUS, group::TASK_MANAGER] {
        if bus.group_members(target).is_none() {
            continue;
        }
        let event = Message::new()
            .with_route(
                "edgehub",
                target,
                resource_type::NODE_CONNECTION,
                operation::CONNECT,
            )
            .with_content(status);
        let _ = bus.send_to_group(target, event).await;
    }
}

async fn sleep_until(deadline: Option<SystemTime>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    let wait = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
}

impl std::fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkEnd::Shutdown => f.write_str("shutdown"),
            LinkEnd::Rotate => f.write_str("certificate rotation"),
            LinkEnd::Broken(reason) => write!(f, "link broken: {reason}"),
        }
    }
}
