//! keadm as the README's quickstart uses it, with the real binaries and the real kubectl:
//! init → gettoken → join → a Deployment Running on the edge node → reset edge and cloud,
//! leaving nothing behind; and the one-line refusals of bad joins.
//!
//! keadm's daemons use their default ports (10000–10002, 6443, 10550, 1883, …), so this is the
//! only test that runs keadm, and it must not run next to another keadm install.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ke_testkit::{run_to_completion, sibling_binary};

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
    let kubeconfig = cloud.join("var/lib/kubeedge/controlplane/admin.kubeconfig");
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    run_to_completion(Path::new("/usr/bin/kubectl"), &all, WAIT)
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
    // The binaries keadm starts live next to it.
    let _ = (sibling_binary("cloudcore"), sibling_binary("edgecore"));
    let endpoint = std::env::var("KE_CRI_ENDPOINT")
        .expect("KE_CRI_ENDPOINT (eval \"$(scripts/testenv env)\")");
    let image = std::env::var("KE_BUSYBOX_IMAGE").expect("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let (cloud, edge) = (dir.path().join("cloud"), dir.path().join("edge"));

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
    let bad_token = keadm(
        &edge,
        &[
            "join",
            "-e",
            "127.0.0.1:10000",
            "-t",
            "nonsense",
            "-i",
            "kq-edge",
        ],
    );
    assert!(
        refusal(&bad_token).contains("token"),
        "{}",
        text(&bad_token)
    );
    let unreachable = keadm(
        &edge,
        &[
            "join",
            "-e",
            "127.0.0.1:1",
            "-t",
            &token,
            "-i",
            "kq-edge",
            "-s",
            "1",
        ],
    );
    assert!(
        refusal(&unreachable).contains("cannot reach cloudcore"),
        "{}",
        text(&unreachable)
    );
    let no_runtime = keadm(
        &edge,
        &[
            "join",
            "-e",
            "127.0.0.1:10000",
            "-t",
            &token,
            "-i",
            "kq-edge",
            "-p",
            "unix:///nonexistent/containerd.sock",
        ],
    );
    assert!(
        refusal(&no_runtime).contains("container runtime"),
        "{}",
        text(&no_runtime)
    );

    let out = keadm(
        &edge,
        &[
            "join",
            "-e",
            "127.0.0.1:10000",
            "-t",
            &token,
            "-i",
            "kq-edge",
            "-p",
            &endpoint,
            "-l",
            "site=lab",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("node kq-edge joined and is Ready"),
        "{}",
        text(&out)
    );
    let taken = keadm(
        &dir.path().join("other-edge"),
        &[
            "join",
            "-e",
            "127.0.0.1:10000",
            "-t",
            &token,
            "-i",
            "kq-edge",
            "-p",
            &endpoint,
        ],
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
