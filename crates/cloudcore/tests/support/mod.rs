//! What the cloudcore end-to-end tests share: the real `cloudcore` binary in embedded mode
//! (its own API server, scheduler and controllers) on loopback ports, the real kubectl against
//! it, and edge nodes made of the real edgehub library plus a stand-in metamanager that stores
//! what the cloud sends and acknowledges it, as upstream's metamanager does.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ke_bus::{BoxFuture, Bus, BusRuntime, Message, Module, ModuleContext};
use ke_edgehub::reconnect::ReconnectPolicy;
use ke_edgehub::{EdgeHub, EdgeHubSettings};
use ke_testkit::Daemon;
use serde_json::{Value, json};

/// Upper bound for a single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);
/// Upper bound for one kubectl run (the benchmark creates 800 pods in one).
const KUBECTL_DEADLINE: Duration = Duration::from_secs(300);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A cloudcore in embedded mode and the files it keeps.
pub struct Cloud {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub kubeconfig: PathBuf,
    pub websocket: SocketAddr,
    pub https: SocketAddr,
    /// Prometheus text on `/metrics`.
    pub monitor: SocketAddr,
    pub daemon: Option<Daemon>,
}

impl Cloud {
    /// Writes a config under `dir` and starts cloudcore with it.
    pub fn start(dir: &Path) -> Cloud {
        let websocket: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let monitor: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let defaults = ke_testkit::run_to_completion(&binary(), &["--defaultconfig"], WAIT);
        let mut config: serde_yaml::Value =
            serde_yaml::from_slice(&defaults.stdout).expect("default config");
        let set = |config: &mut serde_yaml::Value, path: &[&str], value: serde_yaml::Value| {
            let mut at = config;
            for key in &path[..path.len() - 1] {
                at = at
                    .get_mut(*key)
                    .unwrap_or_else(|| panic!("config has {key}"));
            }
            at[path[path.len() - 1]] = value;
        };
        let d = |p: &str| serde_yaml::Value::from(dir.join(p).display().to_string());
        set(
            &mut config,
            &["kubeAPIConfig", "embedded"],
            serde_yaml::to_value(json!({
                "dataDir": dir.join("controlplane"),
                "bindAddress": api.to_string(),
                "nodeMonitorGracePeriod": 40,
            }))
            .unwrap(),
        );
        set(
            &mut config,
            &["commonConfig", "monitorServer", "bindAddress"],
            monitor.to_string().into(),
        );
        for (key, file) in [
            ("tlsCAFile", "ca/rootCA.crt"),
            ("tlsCAKeyFile", "ca/rootCA.key"),
            ("tlsCertFile", "certs/server.crt"),
            ("tlsPrivateKeyFile", "certs/server.key"),
        ] {
            set(&mut config, &["modules", "cloudHub", key], d(file));
        }
        set(
            &mut config,
            &["modules", "cloudHub", "advertiseAddress"],
            serde_yaml::to_value(["127.0.0.1"]).unwrap(),
        );
        set(
            &mut config,
            &["modules", "cloudHub", "websocket", "address"],
            "127.0.0.1".into(),
        );
        set(
            &mut config,
            &["modules", "cloudHub", "websocket", "port"],
            websocket.port().into(),
        );
        set(
            &mut config,
            &["modules", "cloudHub", "https", "address"],
            "127.0.0.1".into(),
        );
        set(
            &mut config,
            &["modules", "cloudHub", "https", "port"],
            https.port().into(),
        );
        set(
            &mut config,
            &["modules", "cloudHub", "quic", "port"],
            free_port().into(),
        );
        let config_path = dir.join("cloudcore.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let mut cloud = Cloud {
            dir: dir.to_owned(),
            config: config_path,
            kubeconfig: dir.join("controlplane/admin.kubeconfig"),
            websocket,
            https,
            monitor,
            daemon: None,
        };
        cloud.restart();
        cloud
    }

    /// Starts cloudcore (again) with the same config and files.
    pub fn restart(&mut self) {
        let mut daemon = Daemon::start(&binary(), &["--config", self.config.to_str().unwrap()]);
        daemon.wait_for_log("running; send SIGINT or SIGTERM", WAIT);
        self.daemon = Some(daemon);
    }

    /// Kills cloudcore without letting it flush anything.
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop_with(nix::sys::signal::Signal::SIGKILL, WAIT);
        }
    }

    /// Stops cloudcore with SIGTERM (it flushes what it holds) and returns its log.
    pub fn stop(&mut self) -> String {
        let Some(mut daemon) = self.daemon.take() else {
            return String::new();
        };
        let status = daemon.stop_with(nix::sys::signal::Signal::SIGTERM, WAIT);
        let log = daemon.log();
        assert!(status.success(), "cloudcore exited with {status}:\n{log}");
        log
    }

    pub fn log(&mut self) -> String {
        self.daemon.as_mut().map(Daemon::log).unwrap_or_default()
    }

    /// The join token, once cloudhub has written it.
    pub fn token(&self) -> String {
        let until = Instant::now() + WAIT;
        loop {
            match std::fs::read_to_string(self.dir.join("ca/token")) {
                Ok(token) if !token.trim().is_empty() => return token.trim().to_owned(),
                _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                other => panic!("no join token file: {other:?}"),
            }
        }
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new("/usr/bin/kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .env("HOME", &self.dir)
            .kill_on_drop(true);
        tokio::time::timeout(KUBECTL_DEADLINE, command.output())
            .await
            .expect("kubectl finishes")
            .unwrap()
    }

    /// kubectl that must succeed; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn apply(&self, manifest: &str) {
        self.with_manifest("apply", manifest).await;
    }

    /// `kubectl create -f`: one POST per object, where apply reads each one first.
    pub async fn create(&self, manifest: &str) {
        self.with_manifest("create", manifest).await;
    }

    async fn with_manifest(&self, verb: &str, manifest: &str) {
        let path = self.dir.join(format!("manifest-{}.yaml", uuid_like()));
        std::fs::write(&path, manifest).unwrap();
        self.ok(&[verb, "-f", path.to_str().unwrap()]).await;
    }

    /// One counter from cloudcore's metrics endpoint.
    pub async fn metric(&self, name: &str) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.monitor)
            .await
            .expect("metrics endpoint");
        tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tcp.read_to_string(&mut body).await.unwrap();
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all).await).expect("kubectl json")
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloudcore"))
}

/// What an edge node has stored: wire resource (`<ns>/<type>/<name>`) → object, and every
/// message it received, in order. Kept by the test across the edge's reconnects, as
/// metamanager keeps its SQLite file.
#[derive(Default)]
pub struct EdgeStore {
    pub objects: BTreeMap<String, Value>,
    pub received: Vec<Message>,
    /// What reached the devicetwin module (membership updates, twin confirmations).
    pub twin: Vec<Message>,
    /// When each resource was last stored.
    pub arrivals: BTreeMap<String, Instant>,
}

impl EdgeStore {
    /// Stored objects of one type, by `<ns>/<name>`.
    pub fn of_type(&self, token: &str) -> BTreeMap<String, Value> {
        self.objects
            .iter()
            .filter_map(|(resource, object)| {
                let mut parts = resource.splitn(3, '/');
                let (ns, ty, name) = (parts.next()?, parts.next()?, parts.next()?);
                (ty == token).then(|| (format!("{ns}/{name}"), object.clone()))
            })
            .collect()
    }

    /// How many messages about `resource` arrived with `op`.
    pub fn count(&self, resource: &str, op: &str) -> usize {
        self.received
            .iter()
            .filter(|m| m.router.resource == resource && m.router.operation == op)
            .count()
    }
}

/// The stand-in metamanager: stores what the cloud sends and ACKs it after storing.
struct Meta {
    store: Arc<Mutex<EdgeStore>>,
}

impl Module for Meta {
    fn name(&self) -> &str {
        "metamanager"
    }
    fn group(&self) -> &str {
        "meta"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                let persisted = {
                    let mut store = self.store.lock().unwrap();
                    store.received.push(message.clone());
                    let resource = message.router.resource.clone();
                    match message.router.operation.as_str() {
                        "insert" | "update" => {
                            store.arrivals.insert(resource.clone(), Instant::now());
                            store.objects.insert(resource, message.content.clone());
                            true
                        }
                        "delete" => {
                            store.objects.remove(&resource);
                            true
                        }
                        _ => false,
                    }
                };
                if persisted {
                    let _ = ctx
                        .bus()
                        .send(ke_edgehub::MODULE_NAME, Message::ack_for(&message))
                        .await;
                }
            }
            Ok(())
        })
    }
}

/// The stand-in devicetwin: records what it is sent.
struct Twin {
    store: Arc<Mutex<EdgeStore>>,
}

impl Module for Twin {
    fn name(&self) -> &str {
        "twin"
    }
    fn group(&self) -> &str {
        "twin"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                self.store.lock().unwrap().twin.push(message);
            }
            Ok(())
        })
    }
}

/// An edge node: edgehub connected to the cloud, and stand-ins for metamanager and devicetwin.
pub struct Edge {
    pub node: String,
    pub bus: Bus,
    pub store: Arc<Mutex<EdgeStore>>,
    runtime: Option<BusRuntime>,
}

impl Edge {
    pub fn connect(cloud: &Cloud, node: &str, store: Arc<Mutex<EdgeStore>>) -> Edge {
        let dir = cloud.dir.join(format!("edge-{node}"));
        let settings = EdgeHubSettings {
            node_name: node.into(),
            project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
            websocket_server: cloud.websocket.to_string(),
            http_server: format!("https://{}", cloud.https),
            token: cloud.token(),
            ca_file: dir.join("ca/rootCA.crt"),
            cert_file: dir.join("certs/server.crt"),
            key_file: dir.join("certs/server.key"),
            heartbeat: Duration::from_secs(15),
            message_qps: 0.0,
            message_burst: 60,
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            reconnect: ReconnectPolicy::default(),
            max_frame_bytes: 8 << 20,
            rotate_certificates: false,
        };
        let mut runtime = BusRuntime::new();
        let bus = runtime.bus().clone();
        runtime.register(EdgeHub::new(settings)).unwrap();
        runtime
            .register(Meta {
                store: Arc::clone(&store),
            })
            .unwrap();
        runtime
            .register(Twin {
                store: Arc::clone(&store),
            })
            .unwrap();
        runtime.start();
        Edge {
            node: node.into(),
            bus,
            store,
            runtime: Some(runtime),
        }
    }

    /// Drops the connection (edgecore stopped or the link died).
    pub async fn disconnect(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Sends a request upstream as edged/metamanager would and waits for the cloud's answer
    /// (retrying while edgehub is still connecting). ACKs answers that came on the ACK queue.
    pub async fn request(&self, resource: &str, op: &str, content: Value) -> Message {
        let until = Instant::now() + WAIT;
        loop {
            let message = Message::new()
                .with_route("edged", "meta", resource, op)
                .with_content(content.clone());
            match self
                .bus
                .send_sync(ke_edgehub::MODULE_NAME, message, Duration::from_secs(10))
                .await
            {
                Ok(reply) if reply.router.operation != "error" => {
                    if !reply.header.resource_version.is_empty() {
                        let _ = self
                            .bus
                            .send(ke_edgehub::MODULE_NAME, Message::ack_for(&reply))
                            .await;
                    }
                    return reply;
                }
                Ok(_) | Err(_) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(reply) => panic!(
                    "{op} {resource}: the edge got an error: {:?}",
                    reply.content
                ),
                Err(err) => panic!("{op} {resource}: no answer: {err}"),
            }
        }
    }

    /// Sends a message upstream without waiting for an answer (devicetwin's reports: their
    /// confirmations come back to the twin module).
    pub async fn send(&self, message: Message) {
        self.bus
            .send(ke_edgehub::MODULE_NAME, message)
            .await
            .expect("edgehub takes it");
    }

    /// Registers the node as edged does on its first start.
    pub async fn register(&self) -> Message {
        let node = json!({
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "node-role.kubernetes.io/edge": "",
                    "node-role.kubernetes.io/agent": "",
                }
            },
            "spec": {},
            "status": {
                "capacity": {"cpu": "2", "memory": "2Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "2Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "EdgeReady"}]
            }
        });
        self.request(&format!("null/node/{}", self.node), "insert", node)
            .await
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `WAIT`.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
