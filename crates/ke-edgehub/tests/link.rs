//! A real cloudhub and a real edgehub on loopback, each on its own module bus, exactly as the
//! cloudcore and edgecore binaries wire them: join with a token, connect over mTLS, messages
//! both ways, send_sync round trips, reliable delivery across a dropped connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ke_bus::{BoxFuture, Bus, BusRuntime, Message, Module, ModuleContext};
use ke_cloudhub::{CloudHub, CloudHubSettings, SessionPolicy};
use ke_delivery::QueueConfig;
use ke_edgehub::reconnect::ReconnectPolicy;
use ke_edgehub::{EdgeHub, EdgeHubSettings};
use serde_json::json;
use tokio::sync::mpsc;

const NODE: &str = "edge-1";
const WAIT: Duration = Duration::from_secs(10);

/// A module that hands every message it receives to the test.
struct Probe {
    name: &'static str,
    group: &'static str,
    seen: mpsc::UnboundedSender<Message>,
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
                let _ = self.seen.send(message);
            }
            Ok(())
        })
    }
}

fn probe(name: &'static str, group: &'static str) -> (Probe, mpsc::UnboundedReceiver<Message>) {
    let (seen, rx) = mpsc::unbounded_channel();
    (Probe { name, group, seen }, rx)
}

fn cloud_settings(dir: &Path, ws: SocketAddr, https: SocketAddr) -> CloudHubSettings {
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
        token_file: Some(dir.join("ca/token")),
        session: SessionPolicy {
            node_limit: 10,
            keepalive_timeout: Duration::from_secs(30),
            authorize_node_identity: true,
            authorization_debug: false,
            max_frame_bytes: 1 << 20,
        },
        queue: QueueConfig {
            initial_retry: Duration::from_millis(300),
            ..QueueConfig::default()
        },
    }
}

fn edge_settings(dir: &Path, cloud: &ke_cloudhub::Addresses, token: String) -> EdgeHubSettings {
    EdgeHubSettings {
        node_name: NODE.into(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
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

struct Cloud {
    runtime: BusRuntime,
    bus: Bus,
    controller: mpsc::UnboundedReceiver<Message>,
    addresses: ke_cloudhub::Addresses,
    token: String,
    metrics: std::sync::Arc<ke_cloudhub::Metrics>,
}

async fn start_cloud(settings: CloudHubSettings) -> Cloud {
    let mut runtime = BusRuntime::new();
    let bus = runtime.bus().clone();
    let hub = CloudHub::bind(settings, bus.clone())
        .await
        .expect("cloudhub binds");
    let addresses = hub.addresses();
    let token = hub.issue_join_token();
    let metrics = hub.metrics();
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
    }
}

struct Edge {
    runtime: BusRuntime,
    bus: Bus,
    meta: mpsc::UnboundedReceiver<Message>,
}

fn start_edge(settings: EdgeHubSettings) -> Edge {
    let mut runtime = BusRuntime::new();
    let bus = runtime.bus().clone();
    let (meta, seen) = probe("metamanager", "meta");
    runtime.register(EdgeHub::new(settings)).unwrap();
    runtime.register(meta).unwrap();
    runtime.start();
    Edge {
        runtime,
        bus,
        meta: seen,
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, what: &str) -> Message {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("probe alive")
}

/// Skips connection events and keeps what the test is waiting for.
async fn next_matching(
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

fn pod(rv: u64, uid: &str) -> Message {
    Message::new()
        .with_route(
            "edgecontroller",
            "resource",
            format!("node/{NODE}/default/pod/web"),
            "update",
        )
        .with_resource_version(rv.to_string())
        .with_content(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": uid, "resourceVersion": rv.to_string()}
        }))
}

fn is_pod(message: &Message) -> bool {
    message.router.resource.contains("/pod/")
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_connect_and_exchange_messages_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = start_cloud(cloud_settings(dir.path(), local(), local())).await;
    let settings = edge_settings(dir.path(), &cloud.addresses, cloud.token.clone());
    let mut edge = start_edge(settings.clone());

    // Joining: the edge got a certificate for its node, signed by the cloud's CA.
    let connected = next(&mut edge.meta, "cloud_connected").await;
    assert_eq!(connected.content, "cloud_connected");
    assert_eq!(connected.router.resource, "node/connection");
    let cert = ke_pki::persist::read_cert_file(&settings.cert_file).unwrap();
    let info = ke_pki::cert_info(&cert).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("system:node:edge-1"));
    let cloud_ca = ke_pki::persist::read_cert_file(&dir.path().join("ca/rootCA.crt")).unwrap();
    assert!(ke_pki::cert::is_signed_by(&cert, &cloud_ca));

    // Cloud → edge: an ACK-required pod update arrives in wire form; the edge ACKs it.
    cloud.bus.send("cloudhub", pod(7, "uid-1")).await.unwrap();
    let got = next_matching(&mut edge.meta, "pod update", is_pod).await;
    assert_eq!(got.router.resource, "default/pod/web");
    assert_eq!(got.header.resource_version, "7");
    edge.bus
        .send("websocket", Message::ack_for(&got))
        .await
        .unwrap();

    // Edge → cloud: a node patch reaches the controllers addressed to the node.
    let patch = Message::new()
        .with_route("edged", "meta", format!("null/nodepatch/{NODE}"), "patch")
        .with_content("{\"status\":{}}");
    edge.bus.send("websocket", patch.clone()).await.unwrap();
    let up = next_matching(&mut cloud.controller, "node patch", |m| {
        m.router.operation == "patch"
    })
    .await;
    assert_eq!(up.header.id, patch.header.id);
    assert_eq!(
        up.router.resource,
        format!("node/{NODE}/null/nodepatch/{NODE}")
    );
    assert_eq!(up.content, "{\"status\":{}}");

    // Edge send_sync → cloud controller → response back to the waiting edge module.
    let bus = cloud.bus.clone();
    let mut controller = cloud.controller;
    let responder = tokio::spawn(async move {
        let request =
            next_matching(&mut controller, "query", |m| m.router.operation == "query").await;
        let mut response = Message::response_to(
            &request,
            json!({"Object": {"data": {"k": "v"}}, "Err": null}),
        );
        // As upstream's edgecontroller answers (golden frames 05, 08): its own source, group
        // `resource`, which the edge dispatches as a reply.
        response.router.source = "edgecontroller".into();
        response.router.group = "resource".into();
        response.router.resource = format!("node/{NODE}/null/nodepatch/{NODE}");
        bus.send("cloudhub", response).await.unwrap();
        controller
    });
    let query =
        Message::new().with_route("edged", "meta", format!("null/nodepatch/{NODE}"), "query");
    let started = Instant::now();
    let reply = edge
        .bus
        .send_sync("websocket", query.clone(), WAIT)
        .await
        .expect("the cloud answers");
    let round_trip = started.elapsed();
    assert_eq!(reply.header.parent_id, query.header.id);
    assert_eq!(reply.content["Object"]["data"]["k"], "v");
    assert!(
        round_trip < Duration::from_secs(2),
        "send_sync took {round_trip:?}"
    );
    cloud.controller = responder.await.unwrap();

    // The ACK for the pod was counted by the cloud.
    let deadline = Instant::now() + WAIT;
    while !cloud
        .metrics
        .render()
        .contains("cloudhub_ack_latency_seconds_count 1\n")
    {
        assert!(Instant::now() < deadline, "{}", cloud.metrics.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cloud.metrics.connected_nodes(), 1);

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}
