//! Scheduling throughput of the embedded control plane: 1,000 nodes, and pods created faster
//! than they can be placed, so the scheduler is the bottleneck; then a Deployment scaled from
//! 0 to 1,000 replicas, timed until every pod is bound (ReplicaSet controller + scheduler).
//!
//! In-process (the API server, the controllers and this driver in one process, no network),
//! durable SQLite. `cargo bench -p ke-controlplane --bench scheduling`
//! (`KE_BENCH_NODES`, `KE_BENCH_PODS`, `KE_BENCH_REPLICAS` change the sizes).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use ke_apiserver::storage::sqlite::SqliteStorage;
use ke_apiserver::{ApiServer, ServerConfig};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until `n` pods matching `selector` are bound, by watching (polling with LISTs would
/// cost the server more than the scheduling being measured). Returns when the first and the
/// last were seen bound, counted from `since`, and how many were.
async fn all_bound(
    pods: Api<Pod>,
    selector: &str,
    n: usize,
    since: Instant,
) -> (Duration, Duration, usize) {
    let mut watch = pods
        .watch(&WatchParams::default().labels(selector), "0")
        .await
        .expect("watch")
        .boxed();
    let mut bound = HashSet::new();
    let mut first = None;
    while bound.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))) => {
                if p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty())
                {
                    first.get_or_insert_with(|| since.elapsed());
                    bound.insert(p.metadata.name.unwrap_or_default());
                }
            }
            Ok(Some(Ok(_))) => {}
            other => {
                eprintln!("watch ended early: {other:?}");
                break;
            }
        }
    }
    (first.unwrap_or_default(), since.elapsed(), bound.len())
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let nodes_n = env("KE_BENCH_NODES", 1000);
    let pods_n = env("KE_BENCH_PODS", 2000);
    let replicas = env("KE_BENCH_REPLICAS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SqliteStorage::open(dir.path().join("db.sqlite")).expect("open");
        let server = ApiServer::new(storage, ServerConfig::default()).await.expect("server");
        let client = ke_controlplane::in_process_client(&server);
        let nodes: Api<Node> = Api::all(client.clone());
        let heartbeat = k8s_openapi::chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        for i in 0..nodes_n {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i:04}"), "labels": {"node-role.kubernetes.io/edge": ""}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    // A fresh heartbeat: node lifecycle would otherwise taint lease-less nodes
                    // unreachable before the run ends.
                    "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]},
            }))
            .expect("node");
            nodes.create(&PostParams::default(), &node).await.expect("create node");
        }
        let _loops = ke_controlplane::start_controllers(&server, Default::default());

        // Throughput: the pods posted by 8 clients at once.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let start = Instant::now();
        let waiter = tokio::spawn(all_bound(pods.clone(), "bench=burst", pods_n, start));
        let mut tasks = Vec::new();
        for w in 0..8 {
            let pods = pods.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..pods_n).step_by(8) {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("burst-{i:05}"), "labels": {"bench": "burst"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                    }))
                    .expect("pod");
                    pods.create(&PostParams::default(), &pod).await.expect("create pod");
                }
            }));
        }
        for t in tasks {
            t.await.expect("creator");
        }
        let created = start.elapsed();
        let (_, done, count) = waiter.await.expect("waiter");
        println!(
            "schedule  {count} of {pods_n} pods onto {nodes_n} nodes: created in {:.2} s, all bound after {:.2} s: {:.0} pods/s",
            created.as_secs_f64(),
            done.as_secs_f64(),
            count as f64 / done.as_secs_f64()
        );

        // kubectl scale --replicas=1000 → every pod bound.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "fleet"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "fleet"}},
                "template": {"metadata": {"labels": {"app": "fleet"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        }))
        .expect("deployment");
        deployments.create(&PostParams::default(), &d).await.expect("create deployment");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        deployments
            .patch("fleet", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .expect("scale");
        let (first, done, count) = all_bound(pods.clone(), "app=fleet", replicas, start).await;
        println!(
            "scale     0 → {replicas} replicas: first pod bound after {:.2} s, {count} bound after {:.2} s",
            first.as_secs_f64(),
            done.as_secs_f64()
        );
    });
}
