//! A real edgecore registers its node with a real cloudcore (embedded control plane) and keeps
//! it Ready; the edge database survives restarts and a bad one is a clear error.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::chrono::{self, Utc};
use kube::api::{Api, WatchEvent, WatchParams};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Cloud, WAIT, edgecore, eventually, start_edge};

const FAST_STATUS: (&[&str], &str) = (&["nodeStatusUpdateFrequency"], "1s");

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[test]
fn the_node_registers_turns_ready_and_keeps_reporting() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(&dir.path().join("edge"), "edge-a", &[FAST_STATUS]);
    let mut edge = start_edge(&config);

    let node = eventually("edge-a Ready in kubectl get nodes", WAIT, || {
        let node = cloud.get(&["node", "edge-a"])?;
        (condition(&node, "Ready")?["status"] == "True").then_some(node)
    });
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/edge"],
        ""
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "edge-a"
    );
    assert!(
        node["status"]["capacity"]["cpu"]
            .as_str()
            .is_some_and(|c| c != "0"),
        "{node:#}"
    );
    let out = cloud.kubectl(&["get", "nodes"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("edge-a") && l.contains(" Ready")),
        "{table}"
    );

    // Status and lease keep flowing.
    let heartbeat = |node: &Value| condition(node, "Ready").unwrap()["lastHeartbeatTime"].clone();
    let first_heartbeat = heartbeat(&node);
    let renew = || {
        cloud
            .get(&["lease", "-n", "kube-node-lease", "edge-a"])
            .map(|lease| lease["spec"]["renewTime"].clone())
    };
    let first_renew = eventually("the node lease", WAIT, renew);
    eventually("a newer heartbeat and lease renewal", WAIT, || {
        let node = cloud.get(&["node", "edge-a"])?;
        (heartbeat(&node) != first_heartbeat && renew()? != first_renew).then_some(())
    });

    // Offline restart of the edge: it starts from its database without the cloud, and its
    // status reports are kept.
    let last_version = cloud.get(&["node", "edge-a"]).unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let stopped_at = Utc::now();
    cloud.stop();
    let status = edge.stop_with(Signal::SIGKILL, WAIT);
    assert!(!status.success());
    // Apart by more than the heartbeat's one-second precision from the last report before.
    std::thread::sleep(Duration::from_secs(2));
    // Restarted with a long status period, it reports once at start (while offline) and then
    // only when it has registered again — so the two cannot be confused.
    let config = cloud.edge_config(
        &dir.path().join("edge"),
        "edge-a",
        &[(&["nodeStatusUpdateFrequency"], "1h")],
    );
    let mut edge = start_edge(&config);
    let offline_report_by = Utc::now() + chrono::Duration::seconds(2);
    std::thread::sleep(Duration::from_secs(4));
    let restarted_at = Utc::now();

    // The cloud returns: the status report made while it was away reaches the API server,
    // then a fresh one follows.
    cloud.restart();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let heartbeats = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(
            cloud
                .dir
                .join("var/lib/kubeedge/controlplane/admin.kubeconfig"),
        )
        .unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let nodes: Api<Node> = Api::all(kube::Client::try_from(config).unwrap());
        let params = WatchParams::default()
            .fields("metadata.name=edge-a")
            .timeout(25);
        let mut events = nodes.watch(&params, &last_version).await.unwrap().boxed();
        let mut heartbeats = Vec::new();
        while let Some(event) = events.next().await {
            let WatchEvent::Modified(node) = event.unwrap() else {
                continue;
            };
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"));
            if let Some(heartbeat) = ready.and_then(|c| c.last_heartbeat_time) {
                heartbeats.push(heartbeat.0);
                if heartbeat.0 > restarted_at + chrono::Duration::seconds(1) {
                    break;
                }
            }
        }
        heartbeats
    });
    let offline = |t: &&chrono::DateTime<Utc>| {
        **t > stopped_at + chrono::Duration::seconds(1) && **t <= offline_report_by
    };
    assert!(
        heartbeats.iter().any(|t| offline(&t)),
        "no heartbeat from the offline period ({stopped_at} .. {offline_report_by}) in {heartbeats:?}\n{}",
        edge.log()
    );
    assert!(
        heartbeats.last().is_some_and(|t| *t > restarted_at),
        "no fresh heartbeat after the return: {heartbeats:?}"
    );
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
}

#[test]
fn a_corrupt_or_busy_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(&dir.path().join("edge"), "edge-b", &[]);
    let database = dir.path().join("edge/var/lib/kubeedge/edgecore.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();

    std::fs::write(&database, vec![0x42; 16 * 1024]).unwrap();
    let out =
        ke_testkit::run_to_completion(edgecore(), &["--config", config.to_str().unwrap()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("edgecore.db") && stderr.contains("not a usable SQLite database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A second edgecore on the same database is refused while the first runs.
    std::fs::remove_file(&database).unwrap();
    let mut first = start_edge(&config);
    let out =
        ke_testkit::run_to_completion(edgecore(), &["--config", config.to_str().unwrap()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    let status = first.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", first.log());
}
