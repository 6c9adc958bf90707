//! The control plane binary on loopback, the real kubectl against it, and fake nodes: a
//! stand-in kubelet (a kube-rs client) that registers nodes, renews their leases, runs every pod
//! bound to them at once (Running and Ready, or Succeeded for pods that do not restart) and
//! finishes their graceful deletion. A node can be taken "offline" to stop all of that.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use ke_testkit::Daemon;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    daemon: Option<Daemon>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = Cluster {
            dir,
            port,
            daemon: None,
        };
        c.restart();
        c
    }

    /// Starts (again) the control plane on the same data and port.
    pub fn restart(&mut self) {
        let bind = format!("127.0.0.1:{}", self.port);
        let mut d = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_ke-controlplane")),
            &[
                "--data-dir",
                self.dir.path().join("data").to_str().unwrap(),
                "--bind",
                &bind,
                "--insecure-http",
                "--node-monitor-grace-period",
                "3",
            ],
        );
        d.wait_for_log("serving plain http", WAIT);
        self.daemon = Some(d);
    }

    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop_with(Signal::SIGKILL, WAIT);
        }
    }

    pub fn client(&self) -> Client {
        Client::try_from(Config::new(
            format!("http://127.0.0.1:{}", self.port).parse().unwrap(),
        ))
        .unwrap()
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new("/usr/bin/kubectl");
        c.arg("-s")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .arg("--request-timeout=30s")
            .args(args)
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.dir.path().join("no-kubeconfig"))
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .expect("kubectl finishes")
            .unwrap()
    }

    /// Runs kubectl and insists on success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args).await;
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Fake nodes and the kubelet behind them.
#[derive(Clone)]
pub struct Kubelet {
    offline: Arc<Mutex<HashSet<String>>>,
    nodes: Arc<Vec<String>>,
}

impl Kubelet {
    /// Registers `nodes` (name → labels) and starts running their pods. It survives control
    /// plane restarts (the watches relist).
    pub async fn start(client: Client, nodes: &[(&str, &[(&str, &str)])]) -> Kubelet {
        let api: Api<Node> = Api::all(client.clone());
        for (name, labels) in nodes {
            let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {
                    "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now()}],
                    "nodeInfo": {"kubeletVersion": "v1.32.10-fake", "osImage": "test", "kernelVersion": "test",
                        "containerRuntimeVersion": "fake://1", "architecture": "amd64", "operatingSystem": "linux",
                        "bootID": "", "kubeProxyVersion": "", "machineID": "", "systemUUID": ""},
                },
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.unwrap();
        }
        let k = Kubelet {
            offline: Arc::default(),
            nodes: Arc::new(nodes.iter().map(|(n, _)| (*n).to_owned()).collect()),
        };
        tokio::spawn(k.clone().heartbeats(client.clone()));
        tokio::spawn(k.clone().pods(client));
        k
    }

    pub fn set_offline(&self, node: &str, offline: bool) {
        let mut set = self.offline.lock().unwrap();
        if offline {
            set.insert(node.to_owned());
        } else {
            set.remove(node);
        }
    }

    fn online(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n == node) && !self.offline.lock().unwrap().contains(node)
    }

    async fn heartbeats(self, client: Client) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(client);
        loop {
            for node in self.nodes.iter().filter(|n| self.online(n)) {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": node},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_now()},
                });
                let _ = leases
                    .patch(
                        node,
                        &PatchParams::apply("fake-kubelet").force(),
                        &Patch::Apply(lease),
                    )
                    .await;
                let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": now()}]}});
                let _ = nodes
                    .patch_status(node, &PatchParams::default(), &Patch::Strategic(status))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn pods(self, client: Client) {
        let all: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut ip = 1u32;
        // Pods of an offline node are revisited when it comes back.
        let mut parked: Vec<Pod> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            let pod = tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(p)) => p,
                    Some(Err(_)) => continue,
                    None => return,
                },
                _ = tick.tick() => {
                    let ready: Vec<Pod> = parked.iter().filter(|p| self.online(&node_of(p))).cloned().collect();
                    parked.retain(|p| !self.online(&node_of(p)));
                    for p in ready {
                        self.run_pod(&client, p, &mut ip).await;
                    }
                    continue;
                }
            };
            let node = node_of(&pod);
            if !self.nodes.contains(&node) {
                continue;
            }
            if !self.online(&node) {
                parked.push(pod);
                continue;
            }
            self.run_pod(&client, pod, &mut ip).await;
        }
    }

    async fn run_pod(&self, client: &Client, pod: Pod, ip: &mut u32) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Running" || phase == "Succeeded" || phase == "Failed" {
            return;
        }
        let restarts = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_default();
        let containers: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        *ip += 1;
        let pod_ip = format!("10.244.{}.{}", *ip / 250, *ip % 250 + 1);
        let status = if restarts == "Always" {
            json!({"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": now(),
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now()},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now()},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now()}],
                "containerStatuses": containers.iter().map(|c| json!({"name": c, "ready": true, "restartCount": 0,
                    "image": "", "imageID": "", "started": true, "state": {"running": {"startedAt": now()}}})).collect::<Vec<_>>()})
        } else {
            json!({"phase": "Succeeded", "podIP": pod_ip, "startTime": now(),
                "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now()}],
                "containerStatuses": containers.iter().map(|c| json!({"name": c, "ready": false, "restartCount": 0,
                    "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})).collect::<Vec<_>>()})
        };
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await;
    }
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

pub fn now() -> String {
    k8s_openapi::chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn micro_now() -> String {
    k8s_openapi::chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Polls `check` until it returns `Some`, for up to `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
