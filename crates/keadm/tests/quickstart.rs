//! keadm as the README's quickstart uses it, with the real binaries and the real kubectl:
//! init → gettoken → join → a Deployment Running on the edge node → reset edge and cloud,
//! leaving nothing behind; the same with `keadm init --kube-config` against an existing
//! cluster (a `ke-controlplane`); and the one-line refusals of bad joins.
//!
//! keadm's daemons use their default ports (10000–10002, 6443, 10550, 1883, …), so the tests
//! that install take turns (`ONE_INSTALL`), and must not run next to another keadm install.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ke_testkit::{Daemon, run_to_completion, sibling_binary};

static ONE_INSTALL: Mutex<()> = Mutex::new(());

/// `keadm reset` of what a test installed, also when it fails, so that the next test finds the
/// ports free and fails for its own reasons, if any.
struct Installed(Vec<(PathBuf, &'static str)>);

impl Drop for Installed {
    fn drop(&mut self) {
        for (root, side) in &self.0 {
            let _ = keadm(root, &["reset", side]);
        }
    }
}

const WAIT: Duration = Duration::from_secs(240);

fn keadm(root: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    run_to_completion(Path::new(env!("CARGO_BIN_EXE_keadm")), &all, WAIT)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn kubectl(cloud: &Path, args: &[&str]) -> Output {
    kubectl_with(
        &cloud.join("var/lib/kubeedge/controlplane/admin.kubeconfig"),
        args,
    )
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    run_to_completion(Path::new("/usr/bin/kubectl"), &all, WAIT)
}

/// `keadm join -e <cloud> -t <token> -i <node>` and the other flags given.
fn join(root: &Path, cloud: &str, token: &str, node: &str, flags: &[&str]) -> Output {
    let mut args = vec!["join", "-e", cloud, "-t", token, "-i", node];
    args.extend_from_slice(flags);
    keadm(root, &args)
}

/// The one `error:` line of a failed keadm run.
fn refusal(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal: {}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_owned()
}

fn processes_under(root: &Path) -> Vec<String> {
    let needle = root.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn init_join_deploy_and_reset_leave_the_machine_clean() {
    let _turn = ONE_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    // The binaries keadm starts live next to it.
    let _ = (sibling_binary("cloudcore"), sibling_binary("edgecore"));
    let endpoint = std::env::var("KE_CRI_ENDPOINT")
        .expect("KE_CRI_ENDPOINT (eval \"$(scripts/testenv env)\")");
    let image = std::env::var("KE_BUSYBOX_IMAGE").expect("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let (cloud, edge) = (dir.path().join("cloud"), dir.path().join("edge"));
    let _installed = Installed(vec![(edge.clone(), "edge"), (cloud.clone(), "cloud")]);

    let out = keadm(&cloud, &["init", "--advertise-address", "127.0.0.1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("keadm join --cloudcore-ipport"),
        "{}",
        text(&out)
    );
    // Idempotent.
    let again = keadm(&cloud, &["init"]);
    assert!(
        again.status.success() && text(&again).contains("already running"),
        "{}",
        text(&again)
    );
    let out = keadm(&cloud, &["gettoken"]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // Bad joins are refused in one line.
    let bad_token = join(&edge, "127.0.0.1:10000", "nonsense", "kq-edge", &[]);
    assert!(
        refusal(&bad_token).contains("token"),
        "{}",
        text(&bad_token)
    );
    let unreachable = join(&edge, "127.0.0.1:1", &token, "kq-edge", &["-s", "1"]);
    assert!(
        refusal(&unreachable).contains("cannot reach cloudcore"),
        "{}",
        text(&unreachable)
    );
    let no_runtime = join(
        &edge,
        "127.0.0.1:10000",
        &token,
        "kq-edge",
        &["-p", "unix:///nonexistent/containerd.sock"],
    );
    assert!(
        refusal(&no_runtime).contains("container runtime"),
        "{}",
        text(&no_runtime)
    );

    let out = join(
        &edge,
        "127.0.0.1:10000",
        &token,
        "kq-edge",
        &["-p", &endpoint, "-l", "site=lab"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("node kq-edge joined and is Ready"),
        "{}",
        text(&out)
    );
    let taken = join(
        &dir.path().join("other-edge"),
        "127.0.0.1:10000",
        &token,
        "kq-edge",
        &["-p", &endpoint],
    );
    assert!(
        refusal(&taken).contains("already exists"),
        "{}",
        text(&taken)
    );
    for root in [&cloud, &edge] {
        let check = keadm(root, &["debug", "check"]);
        assert!(check.status.success(), "{}", text(&check));
        assert!(!text(&check).contains("FAIL"), "{}", text(&check));
    }
    assert!(text(&keadm(&edge, &["debug", "check"])).contains("kq-edge is Ready"));
    let labels = kubectl(
        &cloud,
        &[
            "get",
            "node",
            "kq-edge",
            "-o",
            "jsonpath={.metadata.labels.site}",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&labels.stdout), "lab");

    let manifest = dir.path().join("demo.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: demo, namespace: default}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    \
         metadata: {{labels: {{app: demo}}}}\n    spec:\n      nodeName: kq-edge\n      \
         containers:\n      - {{name: demo, image: {image}, imagePullPolicy: IfNotPresent, \
         command: [sleep, '3600']}}\n"
        ),
    )
    .unwrap();
    let out = kubectl(&cloud, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(
        &cloud,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/demo",
            "--timeout=180s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let node = keadm(&edge, &["debug", "diagnose", "node"]);
    assert!(node.status.success(), "{}", text(&node));
    assert!(text(&node).contains("Ready"), "{}", text(&node));
    let pods = kubectl(
        &cloud,
        &[
            "get",
            "pods",
            "-l",
            "app=demo",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let pod = String::from_utf8(pods.stdout).unwrap();
    let diagnosis = keadm(&edge, &["debug", "diagnose", "pod", &pod]);
    assert!(diagnosis.status.success(), "{}", text(&diagnosis));
    assert!(
        text(&diagnosis).contains("container demo: running"),
        "{}",
        text(&diagnosis)
    );
    let missing = keadm(&edge, &["debug", "diagnose", "pod", "no-such-pod"]);
    assert!(
        refusal(&missing).contains("has no pod"),
        "{}",
        text(&missing)
    );

    let out = keadm(&edge, &["reset", "edge"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("pod sandboxes") && !said.contains("removed 0 "),
        "{said}"
    );
    let out = keadm(&cloud, &["reset", "cloud"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        processes_under(dir.path()),
        Vec::<String>::new(),
        "processes left behind"
    );
    let nothing = keadm(&edge, &["debug", "check"]);
    assert!(
        refusal(&nothing).contains("nothing installed"),
        "{}",
        text(&nothing)
    );
    for root in [&cloud, &edge] {
        for gone in ["etc/kubeedge", "var/lib/kubeedge", "var/log/kubeedge"] {
            assert!(
                !root.join(gone).exists(),
                "{} left behind",
                root.join(gone).display()
            );
        }
    }
}

#[test]
fn every_command_explains_itself() {
    for command in [
        &["--help"][..],
        &["init", "--help"],
        &["gettoken", "--help"],
        &["join", "--help"],
        &["reset", "--help"],
        &["debug", "check", "--help"],
        &["debug", "diagnose", "pod", "--help"],
    ] {
        let out = run_to_completion(Path::new(env!("CARGO_BIN_EXE_keadm")), command, WAIT);
        assert!(out.status.success(), "keadm {command:?}: {}", text(&out));
    }
    let out = run_to_completion(Path::new(env!("CARGO_BIN_EXE_keadm")), &["join"], WAIT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "join without its required flags is a usage error"
    );
}

#[test]
fn init_with_an_existing_cluster_and_the_token_from_its_secret() {
    let _turn = ONE_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = (sibling_binary("cloudcore"), sibling_binary("edgecore"));
    let endpoint = std::env::var("KE_CRI_ENDPOINT")
        .expect("KE_CRI_ENDPOINT (eval \"$(scripts/testenv env)\")");
    let dir = tempfile::tempdir().unwrap();
    let (cloud, edge) = (dir.path().join("cloud"), dir.path().join("edge"));
    let _installed = Installed(vec![(edge.clone(), "edge"), (cloud.clone(), "cloud")]);
    let cluster_dir = dir.path().join("cluster");
    let mut cluster = Daemon::start(
        &sibling_binary("ke-controlplane"),
        &[
            "--data-dir",
            cluster_dir.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
    );
    let kubeconfig = cluster_dir.join("admin.kubeconfig");
    let deadline = Instant::now() + WAIT;
    while !kubectl_with(&kubeconfig, &["get", "namespaces"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the cluster never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = keadm(
        &cloud,
        &[
            "init",
            "--advertise-address",
            "127.0.0.1",
            "--kube-config",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !cloud.join("var/lib/kubeedge/controlplane").exists(),
        "no embedded control plane with --kube-config"
    );
    // cloudcore installed its CRDs into the cluster.
    let crd = kubectl_with(&kubeconfig, &["get", "crd", "devices.devices.kubeedge.io"]);
    assert!(crd.status.success(), "{}", text(&crd));
    // The token as upstream's keadm reads it, from the cluster, is the one cloudcore wrote.
    let from_secret = keadm(
        &cloud,
        &["gettoken", "--kube-config", kubeconfig.to_str().unwrap()],
    );
    assert!(from_secret.status.success(), "{}", text(&from_secret));
    let token = String::from_utf8(from_secret.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let local = keadm(&cloud, &["gettoken"]);
    assert!(local.status.success(), "{}", text(&local));
    assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), token);
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "clusters: [").unwrap();
    let refused = keadm(
        &cloud,
        &["gettoken", "--kube-config", garbage.to_str().unwrap()],
    );
    assert!(
        refusal(&refused).contains("read kubeconfig"),
        "{}",
        text(&refused)
    );

    let out = join(
        &edge,
        "127.0.0.1:10000",
        &token,
        "kc-edge",
        &["-p", &endpoint],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("node kc-edge joined and is Ready"),
        "{}",
        text(&out)
    );
    let ready = kubectl_with(
        &kubeconfig,
        &[
            "get",
            "node",
            "kc-edge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&ready.stdout),
        "True",
        "{}",
        text(&ready)
    );

    for side in ["edge", "cloud"] {
        let root = if side == "edge" { &edge } else { &cloud };
        let out = keadm(root, &["reset", side]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        processes_under(&cloud)
            .into_iter()
            .chain(processes_under(&edge))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "processes left behind"
    );
    // The cluster is not keadm's: it still runs, with what cloudcore stored in it.
    let secret = kubectl_with(
        &kubeconfig,
        &["get", "secret", "-n", "kubeedge", "tokensecret"],
    );
    assert!(secret.status.success(), "{}", text(&secret));
    cluster.stop_with(nix::sys::signal::Signal::SIGTERM, WAIT);
}
