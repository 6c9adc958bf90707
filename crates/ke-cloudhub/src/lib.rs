//! CloudHub: cloudcore's side of the cloud–edge link (upstream module `cloudhub`).
//!
//! * [`certserver`]: the HTTPS server edges join through (`/ca.crt`, `/edge.crt`, `/node/{name}`).
//! * WebSocket server (`:10000`, mTLS): admits a node (client certificate from our CA, CN checked
//!   when authorization is on, `nodeLimit` refused with HTTP 503 and a reason), one session per
//!   node (a new connection replaces the old one), keepalive timeout, frame-size limit.
//! * Per node, a task owns a [`ke_delivery::NodeQueue`] — a window of in-flight ACK messages
//!   instead of upstream's stop-and-wait — and outlives the connection, so nothing ACK-required
//!   is lost across reconnects.
//! * Upstream messages go to the bus: responses complete ACKs or wake `send_sync` callers;
//!   everything else goes to the controllers with the resource addressed to the sending node.
//!
//! Cloud modules send to an edge by sending to the module named [`MODULE_NAME`] with a resource
//! `node/<node-id>/<ns>/<type>/<name>`.

mod accept;
mod certserver;
mod hub;
mod metrics;
mod node;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ke_bus::{BoxFuture, Bus, Module, ModuleContext, RestartPolicy};
use ke_config::CloudCoreConfig;
use ke_delivery::{MemorySyncStore, QueueConfig, SyncStore};
use ke_pki::{CertificateAuthority, ServerCert, ServerCertSpec};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hub::{SessionPolicy, destinations};
pub use metrics::{Exporter, Metrics};

use crate::certserver::CertServer;
use crate::hub::Shared;

pub const MODULE_NAME: &str = "cloudhub";
/// File name of the join token, in the CA's directory.
pub const TOKEN_FILE_NAME: &str = "token";
pub const GROUP_NAME: &str = "cloudhub";

/// Default for [`SessionPolicy::handshake_timeout`]: generous for TLS over a slow cellular or
/// satellite link, short enough that idle half-open connections cannot pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything CloudHub needs, taken from `cloudcore.yaml` by [`CloudHubSettings::from_config`]
/// or built directly in tests.
#[derive(Debug, Clone)]
pub struct CloudHubSettings {
    pub ca_cert_file: PathBuf,
    pub ca_key_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub advertise_address: Vec<String>,
    pub dns_names: Vec<String>,
    pub websocket_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// Prometheus text on `/metrics`; `None` serves nothing.
    pub monitor_addr: Option<SocketAddr>,
    pub edge_cert_validity: Duration,
    /// Join tokens are valid for twice this (upstream's `tokenRefreshDuration`).
    pub token_refresh: Duration,
    /// Where to keep the current join token (mode 0600), rewritten every `token_refresh`.
    /// Upstream keeps it in the Secret `kubeedge/tokensecret`; without an API server a file next
    /// to the CA serves `keadm gettoken` and scripts. `None` writes nothing.
    pub token_file: Option<PathBuf>,
    pub session: SessionPolicy,
    pub queue: QueueConfig,
}

impl CloudHubSettings {
    pub fn from_config(config: &CloudCoreConfig) -> anyhow::Result<CloudHubSettings> {
        let hub = &config.modules.cloud_hub;
        let addr = |address: &str, port: u32| -> anyhow::Result<SocketAddr> {
            let port = u16::try_from(port).with_context(|| format!("port {port}"))?;
            Ok(SocketAddr::new(
                address
                    .parse()
                    .with_context(|| format!("address {address:?}"))?,
                port,
            ))
        };
        let monitor = &config.common_config.monitor_server.bind_address;
        Ok(CloudHubSettings {
            token_file: Path::new(&hub.tls_ca_file)
                .parent()
                .map(|dir| dir.join(TOKEN_FILE_NAME)),
            ca_cert_file: hub.tls_ca_file.clone().into(),
            ca_key_file: hub.tls_ca_key_file.clone().into(),
            cert_file: hub.tls_cert_file.clone().into(),
            key_file: hub.tls_private_key_file.clone().into(),
            advertise_address: hub.advertise_address.clone(),
            dns_names: hub.dns_names.clone(),
            websocket_addr: addr(&hub.websocket.address, hub.websocket.port)?,
            https_addr: addr(&hub.https.address, hub.https.port)?,
            monitor_addr: if monitor.is_empty() {
                None
            } else {
                Some(
                    monitor
                        .parse()
                        .with_context(|| format!("monitorServer.bindAddress {monitor:?}"))?,
                )
            },
            edge_cert_validity: ke_pki::edge_cert_validity(hub.edge_cert_signing_duration)?,
            token_refresh: Duration::from_secs(
                3600 * u64::try_from(hub.token_refresh_duration).unwrap_or(0),
            ),
            session: SessionPolicy {
                node_limit: usize::try_from(hub.node_limit).unwrap_or(0),
                keepalive_timeout: Duration::from_secs(
                    u64::try_from(hub.keepalive_interval).unwrap_or(0),
                ),
                authorize_node_identity: hub.authorization.enable,
                authorization_debug: hub.authorization.debug,
                max_frame_bytes: ke_transport::DEFAULT_MAX_FRAME_BYTES,
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            },
            queue: QueueConfig::default(),
        })
    }
}

/// CloudHub with its listeners bound and its certificates loaded or created. Register it on the
/// bus; it serves until shutdown.
pub struct CloudHub {
    ca: Arc<CertificateAuthority>,
    settings: CloudHubSettings,
    websocket: Option<(TcpListener, TlsAcceptor)>,
    https: Option<(TcpListener, TlsAcceptor)>,
    monitor: Option<TcpListener>,
    addresses: Addresses,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// The current join token: the first issued (and written) by `bind`, so it exists before
    /// the process says it runs, then reissued every `token_refresh`.
    join_token: tokio::sync::watch::Sender<String>,
}

/// Where CloudHub actually listens (useful when the config asked for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub websocket: SocketAddr,
    pub https: SocketAddr,
    pub monitor: Option<SocketAddr>,
}

impl CloudHub {
    /// Loads or creates the CA and server certificate, then binds every listener, so that
    /// configuration and port problems surface before the process reports it is running.
    pub async fn bind(settings: CloudHubSettings, bus: Bus) -> anyhow::Result<CloudHub> {
        Self::bind_with_store(settings, bus, Box::new(MemorySyncStore::new())).await
    }

    /// [`bind`](Self::bind) with a chosen store for acknowledged versions.
    pub async fn bind_with_store(
        settings: CloudHubSettings,
        bus: Bus,
        sync_store: Box<dyn SyncStore + Send>,
    ) -> anyhow::Result<CloudHub> {
        let (ca, origin) =
            CertificateAuthority::load_or_create(&settings.ca_cert_file, &settings.ca_key_file)?;
        tracing::info!(?origin, path = %settings.ca_cert_file.display(), "CA ready");
        let spec = ServerCertSpec::from_config(&settings.advertise_address, &settings.dns_names)?;
        let (server_cert, origin) =
            ServerCert::load_or_create(&settings.cert_file, &settings.key_file, &ca, &spec)?;
        tracing::info!(?origin, path = %settings.cert_file.display(), "server certificate ready");

        let mtls = ke_pki::tls::server_config_mtls(
            ca.ca_der(),
            server_cert.cert_der(),
            server_cert.key(),
        )?;
        let optional_client_cert = ke_pki::tls::server_config_optional_client_cert(
            ca.ca_der(),
            server_cert.cert_der(),
            server_cert.key(),
        )?;
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind the {what} listener on {addr}"))
        };
        let websocket = bind(settings.websocket_addr, "websocket").await?;
        let https = bind(settings.https_addr, "https").await?;
        let monitor = match settings.monitor_addr {
            Some(addr) => Some(bind(addr, "metrics").await?),
            None => None,
        };
        let addresses = Addresses {
            websocket: websocket.local_addr()?,
            https: https.local_addr()?,
            monitor: monitor.as_ref().map(TcpListener::local_addr).transpose()?,
        };
        tracing::info!(?addresses, "cloudhub listening");

        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let shared = Shared::new(
            bus,
            settings.session.clone(),
            settings.queue.clone(),
            sync_store,
            tasks.clone(),
            shutdown.clone(),
        );
        let ca = Arc::new(ca);
        let first_token = issue_and_write_token(&ca, &settings);
        Ok(CloudHub {
            ca,
            settings,
            websocket: Some((websocket, TlsAcceptor::from(Arc::new(mtls)))),
            https: Some((https, TlsAcceptor::from(Arc::new(optional_client_cert)))),
            monitor,
            addresses,
            shared,
            tasks,
            shutdown,
            join_token: tokio::sync::watch::Sender::new(first_token),
        })
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// The WebSocket server's mTLS config (our server certificate, edges' certificates required),
    /// for other edge-facing listeners such as cloudstream's tunnel.
    pub fn edge_tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.websocket
            .as_ref()
            .map(|(_, acceptor)| Arc::clone(acceptor.config()))
    }

    /// The CA (shared by every cloudcore of the cluster).
    pub fn ca(&self) -> Arc<CertificateAuthority> {
        Arc::clone(&self.ca)
    }

    /// A join token for `keadm join` / `edgeHub.token`, valid for twice the refresh duration.
    pub fn issue_join_token(&self) -> String {
        ke_pki::token::issue_token(&self.ca, SystemTime::now(), 2 * self.settings.token_refresh)
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        self.ca.ca_der()
    }

    /// Each join token as it is issued (the first by `bind`, then one every `token_refresh`),
    /// for whoever publishes it further (cloudcore: the Secret `kubeedge/tokensecret`).
    pub fn join_tokens(&self) -> tokio::sync::watch::Receiver<String> {
        self.join_token.subscribe()
    }

    fn start_token_refresh(&self) {
        let ca = Arc::clone(&self.ca);
        let settings = self.settings.clone();
        let shutdown = self.shutdown.clone();
        let current = self.join_token.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(token_refresh(&settings)) => {}
                    () = shutdown.cancelled() => return,
                }
                current.send_replace(issue_and_write_token(&ca, &settings));
            }
        });
    }

    fn start_servers(&mut self) {
        if let Some((listener, acceptor)) = self.websocket.take() {
            self.tasks.spawn(accept_edges(
                listener,
                acceptor,
                Arc::clone(&self.shared),
                self.tasks.clone(),
                self.shutdown.clone(),
            ));
        }
        if let Some((listener, acceptor)) = self.https.take() {
            let server = Arc::new(CertServer {
                ca: Arc::clone(&self.ca),
                edge_cert_validity: self.settings.edge_cert_validity,
                shared: Arc::clone(&self.shared),
            });
            self.tasks.spawn(server.serve(
                listener,
                acceptor,
                self.tasks.clone(),
                self.shutdown.clone(),
            ));
        }
        if let Some(listener) = self.monitor.take() {
            self.tasks.spawn(metrics::serve(
                listener,
                Arc::clone(&self.shared.metrics),
                self.shutdown.clone(),
            ));
        }
    }

    async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Module for CloudHub {
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
            self.start_servers();
            self.start_token_refresh();
            while let Some(message) = ctx.recv().await {
                self.shared.deliver(message).await;
            }
            self.stop().await;
            Ok(())
        })
    }
}

fn token_refresh(settings: &CloudHubSettings) -> Duration {
    settings.token_refresh.max(Duration::from_secs(60))
}

/// A join token valid for two refresh periods, written to `token_file` if there is one.
fn issue_and_write_token(ca: &CertificateAuthority, settings: &CloudHubSettings) -> String {
    let token = ke_pki::token::issue_token(ca, SystemTime::now(), 2 * token_refresh(settings));
    if let Some(path) = &settings.token_file {
        match ke_pki::persist::write_secret(path, token.as_bytes()) {
            Ok(()) => tracing::info!(path = %path.display(), "join token written"),
            Err(err) => tracing::error!(error = %err, "cannot write the join token"),
        }
    }
    token
}

async fn accept_edges(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some((tcp, peer)) = accept::next_connection(&listener, &shutdown, "websocket").await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let upgrade = async {
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                let cert_cn =
                    ke_pki::tls::peer_common_name(tls.get_ref().1.peer_certificates()).ok();
                let stream: stream::EdgeStream = Box::new(tls);
                ke_transport::accept(stream, shared.policy.max_frame_bytes, |identity| {
                    shared.admit(identity, cert_cn.as_deref())
                })
                .await
                .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(shared.policy.handshake_timeout, upgrade).await {
                Ok(Ok((identity, connection))) => {
                    hub::run_session(shared, identity, connection).await;
                }
                Ok(Err(reason)) => tracing::info!(%peer, %reason, "edge connection refused"),
                Err(_) => tracing::info!(%peer, "edge did not complete the handshake in time"),
            }
        });
    }
}
