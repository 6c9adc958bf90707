//! cloudcore: the cloud side of kubeedge-rs. Talks to a Kubernetes API server as a client —
//! the embedded control plane it starts itself (`kubeAPIConfig.embedded`) or any cluster — and
//! to every edge node over one edge-initiated connection.
//!
//! Startup order matters: the API server comes first (everything is a client of it), then the
//! CRDs, the shared PKI and the sync records cloudhub's queues consult, then the modules.

mod crds;
mod kube_api;
mod pki_secrets;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ke_bus::BusRuntime;
use ke_cloudhub::{CloudHub, CloudHubSettings};
use ke_config::CloudCoreConfig;
use ke_daemon::Component;
use ke_synccontroller::{ObjectSyncStore, SyncController};

const COMPONENT: Component = Component {
    name: "cloudcore",
    about: "The cloud part of kubeedge-rs: serves edge nodes for a Kubernetes API server",
    default_config_path: "/etc/kubeedge/config/cloudcore.yaml",
    render_default_config: ke_config::render_default_cloudcore,
    render_min_config: ke_config::render_min_cloudcore,
};

fn main() -> ExitCode {
    ke_daemon::main(&COMPONENT, |config_path, host| async move {
        let mut config = CloudCoreConfig::load(&config_path, &host).context("load config")?;
        if config.adjust_for_node_limit() {
            tracing::info!(
                node_limit = config.modules.cloud_hub.node_limit,
                "raised kube API rate limits and edgecontroller workers to fit nodeLimit"
            );
        }
        tracing::info!(config = %config_path.display(), "config loaded");

        // Made before the API server, which hands pod streams to it.
        let tunnels = ke_cloudstream::Tunnels::new();
        let streams = config
            .modules
            .cloud_stream
            .enable
            .then(|| Arc::new(tunnels.clone()) as Arc<dyn ke_apiserver::PodStreams>);
        let api = kube_api::connect(&config.kube_api_config, streams).await?;
        let client = api.client.clone();
        crds::install(&client, Duration::from_secs(30))
            .await
            .context("install CRDs")?;
        let store = ObjectSyncStore::new(client.clone());
        let records = store.load().await.context("load sync records")?;
        tracing::info!(records, "sync records loaded");

        let mut runtime = BusRuntime::new();
        // cloudhub's edge-facing TLS, for cloudstream's tunnel (same certificate, same trust).
        let mut edge_tls = None;
        let mut ca = None;
        let enabled = config.enabled_modules();
        for module in &enabled {
            match *module {
                ke_cloudhub::MODULE_NAME => {
                    let settings = CloudHubSettings::from_config(&config)?;
                    pki_secrets::restore(&client, &settings).await?;
                    let hub = CloudHub::bind_with_store(
                        settings.clone(),
                        runtime.bus().clone(),
                        Box::new(store.clone()),
                    )
                    .await
                    .context("start cloudhub")?;
                    pki_secrets::publish(&client, &settings).await?;
                    tokio::spawn(pki_secrets::publish_join_tokens(
                        client.clone(),
                        hub.join_tokens(),
                    ));
                    let stats = store.stats();
                    hub.metrics()
                        .add_exporter(Box::new(move |out: &mut String| stats.render(out)));
                    let tunnels = tunnels.clone();
                    hub.metrics()
                        .add_exporter(Box::new(move |out: &mut String| tunnels.render(out)));
                    edge_tls = hub.edge_tls_config();
                    ca = Some(hub.ca());
                    runtime.register(hub)?;
                }
                ke_edgecontroller::MODULE_NAME => {
                    let settings = ke_edgecontroller::Settings {
                        cloudcore_id: config
                            .modules
                            .cloud_hub
                            .advertise_address
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                        ..Default::default()
                    };
                    runtime.register(ke_edgecontroller::EdgeController::new(
                        client.clone(),
                        settings,
                    ))?;
                }
                ke_edgecontroller::DYNAMIC_MODULE_NAME => {
                    runtime.register(ke_edgecontroller::DynamicController::new(client.clone()))?;
                }
                ke_synccontroller::MODULE_NAME => {
                    runtime.register(SyncController::new(
                        client.clone(),
                        store.clone(),
                        Default::default(),
                    ))?;
                }
                ke_cloudstream::MODULE_NAME => {
                    let tls = edge_tls
                        .clone()
                        .context("cloudStream needs cloudHub: the tunnel uses its certificate")?;
                    let stream = &config.modules.cloud_stream;
                    let ip: std::net::IpAddr = config
                        .modules
                        .cloud_hub
                        .websocket
                        .address
                        .parse()
                        .context("cloudHub.websocket.address")?;
                    let port =
                        u16::try_from(stream.tunnel_port).context("cloudStream.tunnelPort")?;
                    let hub = &config.modules.cloud_hub;
                    let ca = ca.clone().context("cloudStream needs cloudHub's CA")?;
                    let stream_server = ke_cloudstream::stream_server(
                        Path::new(&stream.tls_stream_ca_file),
                        Arc::clone(&ca),
                        Path::new(&hub.tls_cert_file),
                        Path::new(&hub.tls_private_key_file),
                    )?;
                    if stream_server.is_none() {
                        tracing::info!(
                            ca = %stream.tls_stream_ca_file,
                            "no stream CA, so no stream server (streamPort): the embedded API \
                             server needs none; for a real kube-apiserver put its kubelet client CA there"
                        );
                    }
                    let stream_port =
                        u16::try_from(stream.stream_port).context("cloudStream.streamPort")?;
                    // Other cloudcores find this one's tunnels through the Nodes.
                    let peers = match (&stream_server, hub.advertise_address.first()) {
                        (Some(_), Some(address)) => Some(ke_cloudstream::Peers::new(
                            format!("{address}:{stream_port}"),
                            client.clone(),
                            &ca,
                        )?),
                        _ => None,
                    };
                    if let Some(peers) = &peers {
                        tunnels.set_peers(peers.clone());
                    }
                    let module = ke_cloudstream::CloudStream::bind(
                        std::net::SocketAddr::new(ip, port),
                        tls,
                        stream_server
                            .map(|server| (std::net::SocketAddr::new(ip, stream_port), server)),
                        tunnels.clone(),
                        peers.clone(),
                    )
                    .await
                    .context("start cloudstream")?;
                    runtime.register(module)?;
                }
                ke_devicecontroller::MODULE_NAME => {
                    runtime.register(ke_devicecontroller::DeviceController::new(client.clone()))?;
                }
                other => tracing::warn!(
                    module = other,
                    "module is enabled in the config but not built yet; skipped"
                ),
            }
        }
        let result = ke_daemon::run_until_signal(runtime).await;
        if let Some(embedded) = api.embedded {
            embedded.shutdown().await;
        }
        result
    })
}
