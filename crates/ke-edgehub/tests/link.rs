//! A real cloudhub and a real edgehub on loopback, each on its own module bus, exactly as the
//! cloudcore and edgecore binaries wire them: join with a token, connect over mTLS, messages
//! both ways, send_sync round trips, reliable delivery across a dropped connection.

mod common;

use std::time::{Duration, Instant};

use ke_bus::Message;
use serde_json::json;

use common::{
    NODE, WAIT, cloud_settings, edge_settings, is_pod, local, next, next_matching, pod,
    start_cloud, start_edge,
};

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
