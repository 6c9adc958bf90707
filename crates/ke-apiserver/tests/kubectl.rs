//! The real, unmodified kubectl (`/usr/bin/kubectl`, v1.32) against the server over mutual TLS,
//! on a SQLite store in a temporary directory, with the admin kubeconfig the server writes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ke_apiserver::kubeconfig::Pki;
use ke_apiserver::storage::sqlite::{Durability, SqliteOptions, SqliteStorage};
use ke_apiserver::{ApiServer, ServerConfig, serve};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::process::Command;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    url: String,
}

async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open_with(
        dir.path().join("apiserver.db"),
        SqliteOptions {
            durability: Durability::Normal,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let server = ApiServer::new(storage, ServerConfig::default())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pki = Pki::load_or_create(
        dir.path(),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        &["localhost".to_owned()],
    )
    .unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let url = format!("https://{addr}");
    pki.write_admin_kubeconfig(&kubeconfig, &url).unwrap();
    let tls = pki.tls_config().unwrap();
    tokio::spawn(serve::serve_tls(
        listener,
        tls,
        server.router(),
        std::future::pending(),
    ));
    Cluster {
        dir,
        kubeconfig,
        url,
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        c
    }

    async fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut c = self.command(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl runs");
        if let Some(text) = stdin {
            use tokio::io::AsyncWriteExt as _;
            let mut si = child.stdin.take().unwrap();
            si.write_all(text.as_bytes()).await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes")
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, None).await
    }

    /// Runs and insists on success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_discovery_and_create() {
    let c = start().await;
    let v = c.ok(&["version"]).await;
    assert!(v.contains("Server Version: v1.32.10-kubeedge-rs"), "{v}");

    let r = c.ok(&["api-resources"]).await;
    for needle in [
        "configmaps",
        "cm",
        "deployments",
        "deploy",
        "apps/v1",
        "leases",
        "coordination.k8s.io/v1",
        "customresourcedefinitions",
        "crd,crds",
        "jobs",
        "batch/v1",
    ] {
        assert!(r.contains(needle), "{needle} missing from:\n{r}");
    }
    let ns = c.ok(&["get", "ns", "-o", "name"]).await;
    assert_eq!(
        ns.lines().collect::<Vec<_>>(),
        [
            "namespace/default",
            "namespace/kube-node-lease",
            "namespace/kube-public",
            "namespace/kube-system"
        ]
    );

    // `create namespace|configmap|secret` send protobuf bodies.
    assert!(
        c.ok(&["create", "namespace", "team"])
            .await
            .contains("namespace/team created")
    );
    c.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .await;
    c.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=p=s3cret",
    ])
    .await;
    let cm = c.json(&["-n", "team", "get", "cm", "cfg"]).await;
    assert_eq!(cm["data"]["a"], "1");
    assert_eq!(cm["data"]["b"], "2");
    assert_eq!(cm["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        cm["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(
        cm["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let secret = c.json(&["-n", "team", "get", "secret", "pw"]).await;
    assert_eq!(secret["data"]["p"], "czNjcmV0");
    assert_eq!(secret["type"], "Opaque");

    let o = c.run(&["-n", "team", "create", "configmap", "cfg"]).await;
    assert!(!o.ok && o.stderr.contains("already exists"), "{}", o.stderr);
    let o = c.run(&["-n", "nowhere", "get", "cm", "cfg"]).await;
    assert!(!o.ok && o.stderr.contains("NotFound"), "{}", o.stderr);

    // Listing by short name, label selection, all namespaces.
    let all = c.ok(&["get", "cm", "-A", "-o", "name"]).await;
    assert_eq!(all.trim(), "configmap/cfg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_label_annotate_patch_delete() {
    let c = start().await;
    let manifest = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: default\n  labels:\n    app: web\ndata:\n  key: {value}\n"
        )
    };
    let f = c.file("cm.yaml", &manifest("one"));
    let out = c.ok(&["apply", "-f", path(&f)]).await;
    assert!(out.contains("configmap/app created"), "{out}");
    let first = c.json(&["get", "cm", "app"]).await;
    c.file("cm.yaml", &manifest("two"));
    let out = c.ok(&["apply", "-f", path(&f)]).await;
    assert!(out.contains("configmap/app configured"), "{out}");
    let second = c.json(&["get", "cm", "app"]).await;
    assert_eq!(second["data"]["key"], "two");
    assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
    assert!(
        second["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap()
            .contains("two")
    );
    let out = c.ok(&["apply", "-f", path(&f)]).await;
    assert!(out.contains("unchanged"), "{out}");

    c.ok(&["label", "cm", "app", "tier=front"]).await;
    c.ok(&["annotate", "cm", "app", "owner=ops"]).await;
    c.ok(&[
        "patch",
        "cm",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"merged":"yes"}}"#,
    ])
    .await;
    c.ok(&[
        "patch",
        "cm",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/jp","value":"yes"}]"#,
    ])
    .await;
    c.ok(&["patch", "cm", "app", "-p", r#"{"data":{"smp":"yes"}}"#])
        .await;
    let v = c.json(&["get", "cm", "app"]).await;
    assert_eq!(v["metadata"]["labels"]["tier"], "front");
    assert_eq!(v["metadata"]["annotations"]["owner"], "ops");
    for k in ["merged", "jp", "smp"] {
        assert_eq!(v["data"][k], "yes", "{k}: {v}");
    }
    c.ok(&["label", "cm", "app", "tier-"]).await;
    let sel = c
        .ok(&["get", "cm", "-l", "app=web,!tier", "-o", "name"])
        .await;
    assert_eq!(sel.trim(), "configmap/app");
    let sel = c
        .ok(&["get", "cm", "-l", "app in (db)", "-o", "name"])
        .await;
    assert_eq!(sel.trim(), "");

    // A stale resourceVersion is a 409 Conflict.
    let mut stale = first.clone();
    stale["data"]["key"] = "stale".into();
    let o = c
        .run_stdin(&["replace", "-f", "-"], Some(&stale.to_string()))
        .await;
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains("Conflict") && o.stderr.contains("the object has been modified"),
        "{}",
        o.stderr
    );

    let out = c.ok(&["delete", "cm", "app"]).await;
    assert!(out.contains("configmap \"app\" deleted"), "{out}");
    let o = c.run(&["get", "cm", "app"]).await;
    assert!(!o.ok && o.stderr.contains("not found"), "{}", o.stderr);

    c.ok(&["create", "namespace", "gone"]).await;
    c.ok(&["-n", "gone", "create", "configmap", "x"]).await;
    c.ok(&["delete", "namespace", "gone"]).await;
    let o = c.run(&["get", "namespace", "gone"]).await;
    assert!(!o.ok, "{}", o.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_changes() {
    let c = start().await;
    c.ok(&["create", "configmap", "w", "--from-literal=a=1"])
        .await;
    let mut watch = c.command(&["get", "cm", "w", "-w", "--output-watch-events"]);
    watch
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = watch.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();

    // Wait until the watch printed the initial state, then change the object.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut changed = false;
    while !(seen.contains("MODIFIED") && seen.contains("DELETED")) {
        let n = tokio::time::timeout_at(deadline, stdout.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("watch output so far: {seen:?}"))
            .unwrap();
        assert!(n > 0, "watch ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("ADDED") && !changed {
            changed = true;
            c.ok(&[
                "patch",
                "cm",
                "w",
                "--type=merge",
                "-p",
                r#"{"data":{"a":"2"}}"#,
            ])
            .await;
            c.ok(&["delete", "cm", "w"]).await;
        }
    }
    let events: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|e| *e != "EVENT")
        .collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{seen}");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_is_refused() {
    let c = start().await;
    // The same cluster and CA, but no client certificate (a token, which we do not accept, so
    // that kubectl does not prompt for a password instead).
    let admin = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap()
        .to_owned();
    let anon = c.file(
        "anon.kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: anon\n  user:\n    token: not-a-credential\ncontexts:\n- name: anon\n  context:\n    cluster: c\n    user: anon\ncurrent-context: anon\n",
            c.url
        ),
    );
    let mut cmd = Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(&anon)
        .args(["get", "ns", "--request-timeout=10s"])
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG");
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // The admin kubeconfig still works.
    c.ok(&["get", "ns", "default"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_a_working_admin_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ke-apiserver"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "ns",
            "kube-system",
            "-o",
            "name",
            "--request-timeout=10s",
        ])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/kube-system",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("apiserver.db").exists());
    let _ = server.kill().await;
}

/// A CRD produced by upstream KubeEdge itself, installed and used the way a user does.
const DEVICE_CRD: &str = include_str!("golden/devices_v1beta1_device.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_install_custom_resources_and_cascading_delete() {
    let c = start().await;
    let crd = c.file("device-crd.yaml", DEVICE_CRD);
    c.ok(&["apply", "-f", path(&crd)]).await;
    c.ok(&[
        "wait",
        "--for=condition=established",
        "crd/devices.devices.kubeedge.io",
        "--timeout=10s",
    ])
    .await;
    let r = c
        .ok(&["api-resources", "--api-group=devices.kubeedge.io"])
        .await;
    assert!(
        r.contains("devices.kubeedge.io/v1beta1") && r.contains("Device"),
        "{r}"
    );
    let explain = c.ok(&["explain", "device.spec.nodeName"]).await;
    assert!(
        explain.contains("GROUP:      devices.kubeedge.io"),
        "{explain}"
    );

    let device = c.file(
        "device.yaml",
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: sensor-1\nspec:\n  deviceModelRef: {name: thermometer}\n  nodeName: edge-1\n",
    );
    c.ok(&["apply", "-f", path(&device)]).await;
    let table = c.ok(&["get", "devices"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE"], "{table}");
    assert!(table.contains("sensor-1"), "{table}");
    let got = c.json(&["get", "device", "sensor-1"]).await;
    assert_eq!(got["apiVersion"], "devices.kubeedge.io/v1beta1");
    assert_eq!(got["spec"]["nodeName"], "edge-1");

    // Custom resources take JSON merge patches, not strategic ones (as kube-apiserver).
    let o = c
        .run(&[
            "patch",
            "device",
            "sensor-1",
            "-p",
            r#"{"spec":{"nodeName":"edge-2"}}"#,
        ])
        .await;
    assert!(
        !o.ok && o.stderr.contains("strategic-merge-patch"),
        "{}",
        o.stderr
    );
    c.ok(&[
        "patch",
        "device",
        "sensor-1",
        "--type=merge",
        "-p",
        r#"{"spec":{"nodeName":"edge-2"}}"#,
    ])
    .await;
    assert_eq!(
        c.json(&["get", "device", "sensor-1"]).await["spec"]["nodeName"],
        "edge-2"
    );

    // The schema is enforced: an unknown field is refused in strict mode.
    let bad = c.file(
        "bad-device.yaml",
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: bad\nspec:\n  nodeNmae: edge-1\n",
    );
    let o = c.run(&["apply", "-f", path(&bad)]).await;
    assert!(
        !o.ok && o.stderr.contains(r#"unknown field "spec.nodeNmae""#),
        "{}",
        o.stderr
    );

    c.ok(&["delete", "crd", "devices.devices.kubeedge.io"])
        .await;
    let o = c.run(&["get", "devices"]).await;
    assert!(!o.ok, "{}", o.stdout);
    // Re-installing the CRD does not bring the old objects back.
    c.ok(&["apply", "-f", path(&crd)]).await;
    c.ok(&[
        "wait",
        "--for=condition=established",
        "crd/devices.devices.kubeedge.io",
        "--timeout=10s",
    ])
    .await;
    let o = c.run(&["get", "devices", "-o", "name"]).await;
    assert!(
        o.ok && o.stdout.trim().is_empty(),
        "{} {}",
        o.stdout,
        o.stderr
    );
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    ports: [{containerPort: 80}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_tables_describe_explain_edit() {
    let c = start().await;
    let typo = c.file("typo.yaml", &POD.replace("image:", "imagee:"));
    let o = c.run(&["apply", "-f", path(&typo)]).await;
    assert!(
        !o.ok
            && o.stderr
                .contains(r#"strict decoding error: unknown field "spec.containers[0].imagee""#),
        "{}",
        o.stderr
    );
    let o = c
        .run(&["apply", "--validate=warn", "-f", path(&typo)])
        .await;
    assert!(
        o.ok && o
            .stderr
            .contains(r#"Warning: unknown field "spec.containers[0].imagee""#),
        "{}",
        o.stderr
    );
    c.ok(&["delete", "pod", "web"]).await;
    let wrong = c.file(
        "wrong.yaml",
        &POD.replace("containerPort: 80", "containerPort: eighty"),
    );
    let o = c.run(&["apply", "-f", path(&wrong)]).await;
    assert!(
        !o.ok && o.stderr.contains("cannot be handled as a Pod"),
        "{}",
        o.stderr
    );

    let pod = c.file("pod.yaml", POD);
    c.ok(&["apply", "-f", path(&pod)]).await;
    let wide = c.ok(&["get", "pods", "-o", "wide"]).await;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    assert!(
        wide.lines().nth(1).unwrap().contains("0/1     Pending"),
        "{wide}"
    );
    // Server-side defaults are what describe prints.
    let describe = c.ok(&["describe", "pod", "web"]).await;
    for needle in [
        "Service Account:  default",
        "Port:         80/TCP",
        "QoS Class:        BestEffort",
        "node.kubernetes.io/not-ready:NoExecute",
    ] {
        assert!(describe.contains(needle), "{needle} missing:\n{describe}");
    }
    let explain = c.ok(&["explain", "pod.spec"]).await;
    assert!(
        explain.contains("FIELD: spec <PodSpec>")
            && explain.contains("containers\t<[]Container> -required-"),
        "{explain}"
    );

    let editor = c.file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/app: web/app: edited/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut edit = c.command(&["edit", "pod", "web"]);
    edit.env("KUBE_EDITOR", &editor);
    let out = edit.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.json(&["get", "pod", "web"]).await["metadata"]["labels"]["app"],
        "edited"
    );

    // Binding (what a scheduler does) fills spec.nodeName once; the NODE column shows it.
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"web"},"target":{"kind":"Node","name":"edge-1"}}"#;
    let bind = [
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/web/binding",
        "-f",
        "-",
    ];
    let o = c.run_stdin(&bind, Some(binding)).await;
    assert!(o.ok, "{}", o.stderr);
    let wide = c.ok(&["get", "pod", "web", "-o", "wide"]).await;
    assert!(wide.contains("edge-1"), "{wide}");
    let pod = c.json(&["get", "pod", "web"]).await;
    assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
    let o = c.run_stdin(&bind, Some(binding)).await;
    assert!(
        !o.ok && o.stderr.contains("already assigned to node"),
        "{}",
        o.stderr
    );
}

/// kubectl's typed clients send protobuf; every generator a user types first must work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_generators_send_protobuf() {
    let c = start().await;
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=0",
        "--port=80",
        "--",
        "sleep",
        "3600",
    ])
    .await;
    let d = c.json(&["get", "deploy", "web"]).await;
    assert_eq!(
        d["spec"]["replicas"], 0,
        "an explicit zero survives decoding: {d}"
    );
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_json::json!(["sleep", "3600"]));
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert!(
        container.get("stdin").is_none(),
        "omitempty zeros are dropped: {container}"
    );
    c.ok(&[
        "run",
        "one",
        "--image=busybox",
        "--env=A=1",
        "--labels=tier=edge",
        "--",
        "sleep",
        "10",
    ])
    .await;
    let p = c.json(&["get", "pod", "one"]).await;
    assert_eq!(p["metadata"]["labels"]["tier"], "edge");
    assert_eq!(p["spec"]["containers"][0]["env"][0]["value"], "1");
    c.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ])
    .await;
    assert_eq!(
        c.json(&["get", "job", "once"]).await["spec"]["template"]["spec"]["restartPolicy"],
        "Never"
    );

    // Services get a cluster IP and node ports; an apply that omits them keeps them.
    c.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"])
        .await;
    c.ok(&["expose", "deployment", "web", "--port=80"]).await;
    let np = c.json(&["get", "svc", "np"]).await;
    let ip = np["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.96."), "{np}");
    let node_port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{np}");
    let web = c.json(&["get", "svc", "web"]).await;
    assert_ne!(web["spec"]["clusterIP"], np["spec"]["clusterIP"]);
    let f = c.file(
        "np.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\nspec:\n  type: NodePort\n  selector: {app: np}\n  ports: [{name: 80-8080, port: 80, targetPort: 8080}]\n",
    );
    c.ok(&["apply", "-f", path(&f)]).await;
    let again = c.json(&["get", "svc", "np"]).await;
    assert_eq!(again["spec"]["clusterIP"], ip.as_str());
    assert_eq!(again["spec"]["ports"][0]["nodePort"], node_port);
    let table = c.ok(&["get", "svc", "np"]).await;
    assert!(table.contains(&format!("80:{node_port}/TCP")), "{table}");
}

fn deployment(containers: &[(&str, &str)], replicas: u32, labels: bool) -> String {
    let mut y = String::from("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
    if labels {
        y.push_str("  labels: {tier: front}\n");
    }
    y.push_str(&format!(
        "spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n"
    ));
    for (name, image) in containers {
        y.push_str(&format!("      - {{name: {name}, image: \"{image}\"}}\n"));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_scale_and_set_image() {
    let c = start().await;
    let f = c.file("web.yaml", &deployment(&[("c", "busybox:1.36")], 2, true));
    let out = c.ok(&["apply", "--server-side", "-f", path(&f)]).await;
    assert!(out.contains("serverside-applied"), "{out}");
    let d = c
        .json(&["get", "deploy", "web", "--show-managed-fields"])
        .await;
    let mf = &d["metadata"]["managedFields"][0];
    assert_eq!(
        (mf["manager"].as_str(), mf["operation"].as_str()),
        (Some("kubectl"), Some("Apply"))
    );

    c.ok(&["scale", "deploy", "web", "--replicas=5"]).await;
    assert_eq!(
        c.json(&["get", "deploy", "web"]).await["spec"]["replicas"],
        5
    );
    let o = c.run(&["apply", "--server-side", "-f", path(&f)]).await;
    assert!(
        !o.ok
            && o.stderr.contains("Apply failed with 1 conflict")
            && o.stderr.contains(".spec.replicas"),
        "{}",
        o.stderr
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        path(&f),
    ])
    .await;
    assert_eq!(
        c.json(&["get", "deploy", "web"]).await["spec"]["replicas"],
        2
    );

    // A field the manager stops applying is removed.
    c.file("web.yaml", &deployment(&[("c", "busybox:1.36")], 2, false));
    c.ok(&["apply", "--server-side", "-f", path(&f)]).await;
    let d = c.json(&["get", "deploy", "web"]).await;
    assert!(d["metadata"].get("labels").is_none(), "{}", d["metadata"]);

    c.ok(&["set", "image", "deploy/web", "c=busybox:1.37"])
        .await;
    let d = c.json(&["get", "deploy", "web"]).await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
}

/// Client-side apply computes strategic patches from the OpenAPI extensions; removing a container
/// from the manifest must remove it from the object, keeping the others by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_merges_lists_by_key() {
    let c = start().await;
    let f = c.file(
        "web.yaml",
        &deployment(&[("a", "busybox:1"), ("b", "busybox:2")], 1, true),
    );
    c.ok(&["apply", "-f", path(&f)]).await;
    c.file("web.yaml", &deployment(&[("b", "busybox:3")], 1, true));
    c.ok(&["apply", "-f", path(&f)]).await;
    let d = c.json(&["get", "deploy", "web"]).await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["name"], "b");
    assert_eq!(containers[0]["image"], "busybox:3");
    // Server defaults on the remaining container survive the patch.
    assert_eq!(
        containers[0]["terminationMessagePath"],
        "/dev/termination-log"
    );
}
