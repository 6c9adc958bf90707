//! A real cloudcore (embedded control plane) and real edgecores on loopback, configured from
//! their own `--defaultconfig` output, everything under one temporary directory.

#![allow(dead_code)] // each test binary uses part of this

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ke_testkit::config::{port_of, sandboxed, set, with_embedded_control_plane};
use ke_testkit::{Daemon, run_to_completion, sibling_binary};
use nix::sys::signal::Signal;
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(30);

/// The edgecore binary under test: this build's, or the one `KE_EDGECORE` names (how the
/// footprint benchmark measures the `release-edge` build that nodes run).
pub fn edgecore() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var_os("KE_EDGECORE")
            .map(|path| {
                std::fs::canonicalize(&path)
                    .unwrap_or_else(|e| panic!("KE_EDGECORE={}: {e}", path.to_string_lossy()))
            })
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgecore")))
    })
}

fn default_config(bin: &Path) -> String {
    let out = run_to_completion(bin, &["--defaultconfig"], WAIT);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

pub struct Cloud {
    pub dir: PathBuf,
    pub daemon: Option<Daemon>,
    config: PathBuf,
    ws_port: String,
    https_port: String,
    tunnel_port: String,
    stream_port: String,
    /// `commonConfig.monitorServer.bindAddress`.
    monitor: String,
}

/// `commonConfig.monitorServer.bindAddress` of a cloudcore config.
fn monitor_address(config: &str) -> String {
    config
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("monitorServer:"))
        .find_map(|l| l.trim_start().strip_prefix("bindAddress:"))
        .expect("monitorServer.bindAddress")
        .trim()
        .to_owned()
}

/// `cloudStream.<key>` of a cloudcore config.
fn cloud_stream_port(config: &str, key: &str) -> String {
    config
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cloudStream:"))
        .find_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("cloudStream.{key}"))
        .trim()
        .to_owned()
}

impl Cloud {
    pub fn start(dir: &Path) -> Cloud {
        let text = sandboxed(
            &with_embedded_control_plane(&default_config(&sibling_binary("cloudcore"))),
            dir,
        );
        let text = set(&text, &["advertiseAddress"], "[127.0.0.1]");
        // The metaserver's writes need it (off by default, as upstream).
        let text = set(&text, &["dynamicController", "enable"], "true");
        // kubectl logs/exec to edge pods, as keadm sets it up.
        let text = set(&text, &["cloudStream", "enable"], "true");
        let config = dir.join("cloudcore.yaml");
        std::fs::write(&config, &text).unwrap();
        let mut cloud = Cloud {
            dir: dir.to_owned(),
            daemon: None,
            config,
            ws_port: port_of(&text, "websocket"),
            tunnel_port: cloud_stream_port(&text, "tunnelPort"),
            stream_port: cloud_stream_port(&text, "streamPort"),
            monitor: monitor_address(&text),
            https_port: port_of(&text, "https"),
        };
        cloud.restart();
        cloud
    }

    /// A second cloudcore for the cluster `primary` runs: a client of its API server (the PKI
    /// comes from the cluster's Secrets), with cloudhub and cloudstream, in `dir`.
    pub fn start_replica(dir: &Path, primary: &Cloud) -> Cloud {
        let text = sandboxed(&default_config(&sibling_binary("cloudcore")), dir);
        let text = set(&text, &["advertiseAddress"], "[127.0.0.1]");
        let kubeconfig = primary
            .dir
            .join("var/lib/kubeedge/controlplane/admin.kubeconfig");
        let mut text = set(
            &text,
            &["kubeAPIConfig", "kubeConfig"],
            &kubeconfig.display().to_string(),
        );
        text = set(&text, &["cloudStream", "enable"], "true");
        // The primary's controllers serve the cluster; this one is here for its edges' links.
        for module in ["edgeController", "deviceController", "syncController"] {
            text = set(&text, &[module, "enable"], "false");
        }
        let config = dir.join("cloudcore.yaml");
        std::fs::write(&config, &text).unwrap();
        let mut cloud = Cloud {
            dir: primary.dir.clone(),
            daemon: None,
            config,
            ws_port: port_of(&text, "websocket"),
            https_port: port_of(&text, "https"),
            tunnel_port: cloud_stream_port(&text, "tunnelPort"),
            stream_port: cloud_stream_port(&text, "streamPort"),
            monitor: monitor_address(&text),
        };
        cloud.restart();
        cloud
    }

    /// `host:port` of cloudstream's tunnel listener.
    pub fn tunnel_server(&self) -> String {
        format!("127.0.0.1:{}", self.tunnel_port)
    }

    pub fn restart(&mut self) {
        let mut daemon = Daemon::start(
            &sibling_binary("cloudcore"),
            &["--config", self.config.to_str().unwrap()],
        );
        daemon.wait_for_log("running; send SIGINT or SIGTERM", WAIT);
        self.daemon = Some(daemon);
    }

    /// Stops cloudcore cleanly and returns its log.
    pub fn stop(&mut self) -> String {
        let mut daemon = self.daemon.take().expect("cloudcore is running");
        let status = daemon.stop_with(Signal::SIGTERM, WAIT);
        let log = daemon.log();
        assert!(status.success(), "cloudcore exit {status}:\n{log}");
        log
    }

    /// cloudcore's Prometheus text (`/metrics` on the monitor address).
    pub fn metrics(&self) -> String {
        let out = run_to_completion(
            Path::new("/usr/bin/curl"),
            &["-sS", &format!("http://{}/metrics", self.monitor)],
            WAIT,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// cloudstream's kubelet API port (served when the stream CA exists).
    pub fn stream_port(&self) -> &str {
        &self.stream_port
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("etc/kubeedge/ca/token"))
            .expect("cloudcore wrote the join token")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let kubeconfig = self
            .dir
            .join("var/lib/kubeedge/controlplane/admin.kubeconfig");
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        run_to_completion(Path::new("/usr/bin/kubectl"), &all, WAIT)
    }

    /// `kubectl get ... -o json`, or `None` if it fails (not found yet).
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
    }

    /// Starts edgecore with `config` and waits until this cloud has its Node.
    pub fn start_registered_edge(&self, config: &Path, node: &str) -> Daemon {
        let edge = start_edge(config);
        eventually("the node registered", WAIT, || self.get(&["node", node]));
        edge
    }

    /// Starts four `kubectl create` processes that together create pods `p0`..`p<count-1>`
    /// bound to `node` (one kubectl creates sequentially; four keep the API server busy).
    pub fn start_creating_pods(&self, node: &str, count: usize) -> Vec<Child> {
        const CLIENTS: usize = 4;
        let kubeconfig = self
            .dir
            .join("var/lib/kubeedge/controlplane/admin.kubeconfig");
        (0..CLIENTS)
            .map(|client| {
                let mut manifest = String::new();
                for i in (client..count).step_by(CLIENTS) {
                    manifest.push_str(&format!(
                        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: default}}\n\
                         spec: {{nodeName: {node}, containers: [{{name: c, image: busybox}}]}}\n"
                    ));
                }
                let mut child = Command::new("/usr/bin/kubectl")
                    .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "create", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start kubectl");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(manifest.as_bytes())
                    .unwrap();
                child
            })
            .collect()
    }

    /// An edgecore config for `node` that joins this cloud, with `edits` applied
    /// (`(path, value)` as for [`set`]).
    /// Its files live in `dir`, apart from the cloud's (both default to
    /// `/etc/kubeedge/certs/server.crt`).
    pub fn edge_config(&self, dir: &Path, node: &str, edits: &[(&[&str], &str)]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let text = sandboxed(&default_config(edgecore()), dir);
        let text = set(
            &text,
            &["websocket", "server"],
            &format!("127.0.0.1:{}", self.ws_port),
        );
        let text = set(
            &text,
            &["httpServer"],
            &format!("https://127.0.0.1:{}", self.https_port),
        );
        let text = set(&text, &["token"], &self.token());
        let text = set(&text, &["edgeStream", "enable"], "true");
        let text = set(
            &text,
            &["edgeStream", "server"],
            &format!("127.0.0.1:{}", self.tunnel_port),
        );
        let mut text = set(&text, &["hostnameOverride"], node);
        // No container runtime unless a test gives one (`KE_CRI_ENDPOINT`): tests that bind
        // hundreds of pods to a node must not start them.
        text = set(
            &text,
            &["containerRuntimeEndpoint"],
            &format!("unix://{}/no-runtime.sock", dir.display()),
        );
        for (path, value) in edits {
            text = set(&text, path, value);
        }
        let path = dir.join("edgecore.yaml");
        std::fs::write(&path, &text).unwrap();
        path
    }

    /// Like [`Cloud::edge_config`], with the node's pods on the test environment's containerd.
    pub fn runtime_edge_config(
        &self,
        dir: &Path,
        node: &str,
        edits: &[(&[&str], &str)],
    ) -> PathBuf {
        let endpoint = testenv("KE_CRI_ENDPOINT");
        let mut all: Vec<(&[&str], &str)> = vec![(&["containerRuntimeEndpoint"], &endpoint)];
        all.extend_from_slice(edits);
        self.edge_config(dir, node, &all)
    }
}

/// The port of `metaManager.metaServer.server` in an edgecore config.
pub fn metaserver_port(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("metaServer:"))
        .find(|l| l.trim_start().starts_with("server:"))
        .and_then(|l| l.rsplit(':').next())
        .expect("metaServer.server")
        .trim()
        .to_owned()
}

pub fn start_edge(config: &Path) -> Daemon {
    let mut edge = Daemon::start(edgecore(), &["--config", config.to_str().unwrap()]);
    edge.wait_for_log("running; send SIGINT or SIGTERM", WAIT);
    edge
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The test environment's value of `name` (`eval "$(scripts/testenv up)"` sets them).
pub fn testenv(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `eval \"$(scripts/testenv up)\"` first"))
}

/// The test environment's containerd, through CRI.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    client: ke_cri::CriClient,
}

impl Cri {
    /// The test environment's containerd (`KE_CRI_ENDPOINT`).
    pub fn testenv() -> Cri {
        Cri::connect(&testenv("KE_CRI_ENDPOINT"))
    }

    pub fn connect(endpoint: &str) -> Cri {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime
            .block_on(ke_cri::CriClient::connect(endpoint))
            .unwrap();
        Cri { runtime, client }
    }

    /// `cmd` run in `container` (an ID, with or without `containerd://`): exit code, stdout.
    pub fn exec(&self, container: &str, cmd: &[&str]) -> (i32, String) {
        let out = self
            .runtime
            .block_on(
                self.client
                    .runtime()
                    .exec_sync(ke_cri::api::ExecSyncRequest {
                        container_id: container.trim_start_matches("containerd://").to_owned(),
                        cmd: cmd.iter().map(|s| s.to_string()).collect(),
                        timeout: 10,
                    }),
            )
            .unwrap()
            .into_inner();
        (
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The sandboxes of pod `uid`, ready or not.
    pub fn sandboxes_of(&self, uid: &str) -> Vec<ke_cri::api::PodSandbox> {
        let sandboxes = self
            .runtime
            .block_on(
                self.client
                    .runtime()
                    .list_pod_sandbox(ke_cri::api::ListPodSandboxRequest { filter: None }),
            )
            .unwrap()
            .into_inner()
            .items;
        sandboxes
            .into_iter()
            .filter(|s| s.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid))
            .collect()
    }

    /// The running containers of pod `uid`, by ID.
    pub fn running_containers_of(&self, uid: &str) -> Vec<String> {
        let containers = self
            .runtime
            .block_on(
                self.client
                    .runtime()
                    .list_containers(ke_cri::api::ListContainersRequest { filter: None }),
            )
            .unwrap()
            .into_inner()
            .containers;
        containers
            .into_iter()
            .filter(|c| c.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid))
            .filter(|c| c.state == ke_cri::api::ContainerState::ContainerRunning as i32)
            .map(|c| c.id)
            .collect()
    }

    /// Stops pod `uid`'s sandbox and so its containers, as a reboot of the node would.
    pub fn stop_sandboxes_of(&self, uid: &str) {
        for sandbox in self.sandboxes_of(uid) {
            self.runtime
                .block_on(self.client.runtime().stop_pod_sandbox(
                    ke_cri::api::StopPodSandboxRequest {
                        pod_sandbox_id: sandbox.id,
                    },
                ))
                .unwrap();
        }
    }
}

/// Resident memory of process `pid`, in MiB (benchmarks).
pub fn rss_mib(pid: u32) -> f64 {
    let kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib as f64 / 1024.0
}

/// p50 and p99 of `samples` (benchmarks).
pub fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
