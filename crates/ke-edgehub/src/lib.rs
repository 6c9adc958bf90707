//! EdgeHub: edgecore's link to the cloud (upstream module `websocket`, group `hub`).
//!
//! * [`bootstrap`]: join with a token (CA pinned by the token's hash, CSR signed by cloudhub)
//!   and certificate rotation at 70–90 % of its lifetime.
//! * The link: mTLS WebSocket to cloudhub with upstream's identity headers; a keepalive every
//!   `heartbeat` seconds; upstream's token-bucket limit on what the edge sends; downstream
//!   messages delivered to bus groups by upstream's rules ([`dispatch`]); `cloud_connected` /
//!   `cloud_disconnected` announced to the modules that care.
//! * Edge modules send to the cloud by sending to the module [`MODULE_NAME`]; a `send_sync`
//!   request is answered by the cloud's response (matched by `parent_msg_id`), or at once with an
//!   `error` reply while the cloud is unreachable — never left to time out silently.
//! * Reconnect ([`reconnect`]): first redial within a second of a break, then jittered
//!   exponential backoff, instead of upstream's fixed 30 s sleep.

pub mod bootstrap;
pub mod dispatch;
mod https;
mod link;
pub mod rate;
pub mod reconnect;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ke_bus::{BoxFuture, Module, ModuleContext, RestartPolicy};
use ke_config::EdgeCoreConfig;

pub use https::HttpError;
pub use link::{CloudStream, DialError, connect_mtls};

use crate::link::LinkEnd;
use crate::reconnect::ReconnectPolicy;

/// Upstream keeps the module name `websocket` even for QUIC; peers address it by that name.
pub const MODULE_NAME: &str = "websocket";
pub const GROUP_NAME: &str = "hub";

/// Everything EdgeHub needs, from `edgecore.yaml` via [`EdgeHubSettings::from_config`] or built
/// directly in tests.
#[derive(Debug, Clone)]
pub struct EdgeHubSettings {
    pub node_name: String,
    pub project_id: String,
    /// `host:port` of cloudhub's WebSocket server.
    pub websocket_server: String,
    /// `https://host:port` of cloudhub's certificate server.
    pub http_server: String,
    /// Join token; only needed while the edge has no certificate.
    pub token: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub heartbeat: Duration,
    pub message_qps: f64,
    pub message_burst: u32,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    pub reconnect: ReconnectPolicy,
    pub max_frame_bytes: usize,
    pub rotate_certificates: bool,
}

impl EdgeHubSettings {
    pub fn from_config(config: &EdgeCoreConfig) -> EdgeHubSettings {
        let hub = &config.modules.edge_hub;
        let seconds = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
        EdgeHubSettings {
            node_name: config.modules.edged.hostname_override.clone(),
            project_id: hub.project_id.clone(),
            websocket_server: hub.websocket.server.clone(),
            http_server: hub.http_server.trim_end_matches('/').to_owned(),
            token: hub.token.clone(),
            ca_file: hub.tls_ca_file.clone().into(),
            cert_file: hub.tls_cert_file.clone().into(),
            key_file: hub.tls_private_key_file.clone().into(),
            heartbeat: seconds(hub.heartbeat),
            message_qps: f64::from(hub.message_qps),
            message_burst: u32::try_from(hub.message_burst).unwrap_or(1),
            handshake_timeout: seconds(hub.websocket.handshake_timeout),
            write_timeout: seconds(hub.websocket.write_deadline),
            reconnect: ReconnectPolicy {
                max: hub
                    .reconnect_max_interval
                    .map_or(ReconnectPolicy::default().max, seconds),
                ..ReconnectPolicy::default()
            },
            max_frame_bytes: ke_transport::DEFAULT_MAX_FRAME_BYTES,
            rotate_certificates: hub.rotate_certificates,
        }
    }
}

pub struct EdgeHub {
    settings: EdgeHubSettings,
}

impl EdgeHub {
    pub fn new(settings: EdgeHubSettings) -> EdgeHub {
        EdgeHub { settings }
    }

    async fn run_link(&mut self, ctx: &mut ModuleContext) {
        // Redials since the last good connection; 0 means "the link just broke".
        let mut attempt: u32 = 1;
        loop {
            match self.connect_once(ctx).await {
                Some(LinkEnd::Shutdown) => return,
                Some(LinkEnd::Rotate) => {
                    if let Err(err) = bootstrap::renew_certificate(&self.settings).await {
                        tracing::error!(error = %err, "certificate renewal failed; keeping the current one");
                    }
                    attempt = 0;
                    continue;
                }
                Some(LinkEnd::Broken(reason)) => {
                    tracing::warn!(%reason, "cloud link lost");
                    attempt = 0;
                }
                None => {}
            }
            let delay = self.settings.reconnect.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            tracing::info!(?delay, attempt, "redialling the cloud");
            if !wait_offline(ctx, delay).await {
                return;
            }
        }
    }

    /// One attempt: certificates, dial, then the session. `None` if the attempt failed before
    /// a session existed.
    async fn connect_once(&mut self, ctx: &mut ModuleContext) -> Option<LinkEnd> {
        match bootstrap::ensure_certificate(&self.settings).await {
            Ok(true) => tracing::info!(node = %self.settings.node_name, "joined the cloud"),
            Ok(false) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot get an edge certificate");
                return None;
            }
        }
        let started = Instant::now();
        let connection = match link::dial(&self.settings).await {
            Ok(connection) => connection,
            Err(err) => {
                tracing::warn!(error = %err, server = %self.settings.websocket_server, "dial failed");
                return None;
            }
        };
        tracing::info!(server = %self.settings.websocket_server, took = ?started.elapsed(), "connected to the cloud");
        link::announce(ctx.bus(), true).await;
        let end = link::run(connection, ctx, &self.settings).await;
        link::announce(ctx.bus(), false).await;
        tracing::info!(%end, "cloud connection closed");
        Some(end)
    }
}

/// Sleeps `delay` while the cloud is unreachable, answering what modules send meanwhile.
/// Returns false when edgecore is shutting down.
async fn wait_offline(ctx: &mut ModuleContext, delay: Duration) -> bool {
    let wake = tokio::time::sleep(delay);
    tokio::pin!(wake);
    loop {
        tokio::select! {
            () = &mut wake => return true,
            message = ctx.recv() => match message {
                None => return false,
                Some(message) => {
                    link::fail_pending_request(ctx.bus(), &message, "the cloud is not connected");
                    tracing::debug!(msg_id = %message.header.id, "dropped while disconnected from the cloud");
                }
            },
        }
    }
}

impl Module for EdgeHub {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::on_failure()
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.run_link(ctx).await;
            Ok(())
        })
    }
}
