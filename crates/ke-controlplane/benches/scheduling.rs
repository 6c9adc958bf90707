//! Scheduling throughput of the embedded control plane: 1,000 nodes, and pods created faster
//! than they can be placed, so the scheduler is the bottleneck; then a Deployment scaled from
//! 0 to 1,000 replicas, timed until every pod is bound (ReplicaSet controller + scheduler).
//!
//! In-process (the API server, the controllers and this driver in one process, no network),
//! durable SQLite. `cargo bench -p ke-controlplane --bench scheduling`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use ke_apiserver::storage::sqlite::SqliteStorage;
use ke_apiserver::{ApiServer, ServerConfig};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bound(pods: &Api<Pod>, selector: &str) -> usize {
    pods.list(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        })
        .count()
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nodes_n = env("KE_BENCH_NODES", 1000);
    let pods_n = env("KE_BENCH_PODS", 2000);
    let replicas = env("KE_BENCH_REPLICAS", 1000);
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SqliteStorage::open(dir.path().join("db.sqlite")).expect("open");
        let server = ApiServer::new(storage, ServerConfig::default()).await.expect("server");
        let client = ke_controlplane::in_process_client(&server);
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..nodes_n {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i:04}"), "labels": {"node-role.kubernetes.io/edge": ""}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    // A fresh heartbeat: node lifecycle would otherwise taint lease-less nodes
                    // unreachable before the run ends.
                    "conditions": [{"type": "Ready", "status": "True",
                        "lastHeartbeatTime": k8s_openapi::chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()}]},
            }))
            .expect("node");
            nodes.create(&PostParams::default(), &node).await.expect("create node");
        }
        let _loops = ke_controlplane::start_controllers(&server, Default::default());

        // Throughput: 2,000 pods posted by 8 clients at once.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let start = Instant::now();
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
        loop {
            if bound(&pods, "bench=burst").await == pods_n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_bound = start.elapsed();
        println!(
            "schedule  {pods_n} pods onto {nodes_n} nodes: created in {:.2} s, all bound after {:.2} s: {:.0} pods/s end to end",
            created.as_secs_f64(),
            all_bound.as_secs_f64(),
            pods_n as f64 / all_bound.as_secs_f64()
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
        let mut first_bind = None;
        let mut count = 0;
        while count < replicas && start.elapsed() < Duration::from_secs(120) {
            count = bound(&pods, "app=fleet").await;
            if count > 0 {
                first_bind.get_or_insert_with(|| start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let done = start.elapsed();
        println!(
            "scale     0 → {replicas} replicas: first pod bound after {:.2} s, all {} bound after {:.2} s",
            first_bind.unwrap_or_default().as_secs_f64(),
            count,
            done.as_secs_f64()
        );
    });
}
