//! What the end-to-end tests share: a real cloudhub and a real edgehub, each on its own module
//! bus as the cloudcore and edgecore binaries wire them, with probe modules standing in for the
//! controllers and metamanager.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ke_bus::{BoxFuture, Bus, BusRuntime, Message, Module, ModuleContext};
use ke_cloudhub::{CloudHub, CloudHubSettings, SessionPolicy};
use ke_delivery::QueueConfig;
use ke_edgehub::reconnect::ReconnectPolicy;
use ke_edgehub::{EdgeHub, EdgeHubSettings};
use serde_json::json;
use tokio::sync::mpsc;

pub const NODE: &str = "edge-1";
pub const PROJECT: &str = "e632aba927ea4ac2b575ec1603d56f10";
/// Upper bound for any single wait; a test that needs longer has hung.
pub const WAIT: Duration = Duration::from_secs(10);

/// A module that hands every message it receives to the test. With `ack`, it also answers every
/// ACK-required cloud message the way metamanager does once it has persisted one.
pub struct Probe {
    name: &'static str,
    group: &'static str,
    seen: mpsc::UnboundedSender<Message>,
    ack: bool,
}

impl Module for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn group(&self) -> &str {
        self.group
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                if self.ack && !message.header.resource_version.is_empty() {
                    let _ = ctx
                        .bus()
                        .send(ke_edgehub::MODULE_NAME, Message::ack_for(&message))
                        .await;
                }
                let _ = self.seen.send(message);
            }
            Ok(())
        })
    }
}

pub fn probe(name: &'static str, group: &'static str) -> (Probe, mpsc::UnboundedReceiver<Message>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (
        Probe {
            name,
            group,
            seen,
            ack: false,
        },
        rx,
    )
}

pub fn cloud_settings(dir: &Path, ws: SocketAddr, https: SocketAddr) -> CloudHubSettings {
    CloudHubSettings {
        ca_cert_file: dir.join("ca/rootCA.crt"),
        ca_key_file: dir.join("ca/rootCA.key"),
        cert_file: dir.join("certs/server.crt"),
        key_file: dir.join("certs/server.key"),
        advertise_address: vec!["127.0.0.1".into()],
        dns_names: vec![],
        websocket_addr: ws,
        https_addr: https,
        monitor_addr: None,
        edge_cert_validity: Duration::from_secs(365 * 86_400),
        token_refresh: Duration::from_secs(12 * 3600),
        token_file: None,
        session: SessionPolicy {
            node_limit: 10,
            keepalive_timeout: Duration::from_secs(30),
            authorize_node_identity: true,
            authorization_debug: false,
            max_frame_bytes: 1 << 20,
            handshake_timeout: ke_cloudhub::DEFAULT_HANDSHAKE_TIMEOUT,
        },
        queue: QueueConfig {
            initial_retry: Duration::from_millis(300),
            ..QueueConfig::default()
        },
    }
}

pub fn edge_settings(dir: &Path, cloud: &ke_cloudhub::Addresses, token: String) -> EdgeHubSettings {
    EdgeHubSettings {
        node_name: NODE.into(),
        project_id: PROJECT.into(),
        websocket_server: cloud.websocket.to_string(),
        http_server: format!("https://{}", cloud.https),
        token,
        ca_file: dir.join("edge/ca/rootCA.crt"),
        cert_file: dir.join("edge/certs/server.crt"),
        key_file: dir.join("edge/certs/server.key"),
        heartbeat: Duration::from_secs(15),
        message_qps: 0.0,
        message_burst: 60,
        handshake_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        reconnect: ReconnectPolicy::default(),
        max_frame_bytes: 1 << 20,
        rotate_certificates: false,
    }
}

pub struct Cloud {
    pub runtime: BusRuntime,
    pub bus: Bus,
    pub controller: mpsc::UnboundedReceiver<Message>,
    pub addresses: ke_cloudhub::Addresses,
    pub token: String,
    pub metrics: std::sync::Arc<ke_cloudhub::Metrics>,
    pub ca_der: Vec<u8>,
}

pub async fn start_cloud(settings: CloudHubSettings) -> Cloud {
    let mut runtime = BusRuntime::new();
    let bus = runtime.bus().clone();
    let hub = CloudHub::bind(settings, bus.clone())
        .await
        .expect("cloudhub binds");
    let addresses = hub.addresses();
    let token = hub.issue_join_token();
    let metrics = hub.metrics();
    let ca_der = hub.ca_der().to_vec();
    let (controller, seen) = probe("edgecontroller", "edgecontroller");
    runtime.register(hub).unwrap();
    runtime.register(controller).unwrap();
    runtime.start();
    Cloud {
        runtime,
        bus,
        controller: seen,
        addresses,
        token,
        metrics,
        ca_der,
    }
}

pub struct Edge {
    pub runtime: BusRuntime,
    pub bus: Bus,
    pub meta: mpsc::UnboundedReceiver<Message>,
}

pub fn start_edge(settings: EdgeHubSettings) -> Edge {
    start_edge_with(settings, false)
}

/// An edge whose metamanager stand-in ACKs what it receives.
pub fn start_acking_edge(settings: EdgeHubSettings) -> Edge {
    start_edge_with(settings, true)
}

fn start_edge_with(settings: EdgeHubSettings, ack: bool) -> Edge {
    let mut runtime = BusRuntime::new();
    let bus = runtime.bus().clone();
    let (mut meta, seen) = probe("metamanager", "meta");
    meta.ack = ack;
    runtime.register(EdgeHub::new(settings)).unwrap();
    runtime.register(meta).unwrap();
    runtime.start();
    Edge {
        runtime,
        bus,
        meta: seen,
    }
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, what: &str) -> Message {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("probe alive")
}

/// Skips connection events and keeps what the test is waiting for.
pub async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<Message>,
    what: &str,
    keep: impl Fn(&Message) -> bool,
) -> Message {
    loop {
        let message = next(rx, what).await;
        if keep(&message) {
            return message;
        }
    }
}

/// An ACK-required pod update for `node`, as edgecontroller sends it to cloudhub.
pub fn pod_for(node: &str, name: &str, uid: &str, rv: u64) -> Message {
    Message::new()
        .with_route(
            "edgecontroller",
            "resource",
            format!("node/{node}/default/pod/{name}"),
            "update",
        )
        .with_resource_version(rv.to_string())
        .with_content(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": rv.to_string()}
        }))
}

pub fn pod(rv: u64, uid: &str) -> Message {
    pod_for(NODE, "web", uid, rv)
}

pub fn is_pod(message: &Message) -> bool {
    message.router.resource.contains("/pod/")
}

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}
