//! `kubectl logs` to an edge pod, on loopback: release cloudcore (embedded control plane) and
//! edgecore, the test environment's containerd, a pod that has written 1,000 log lines.
//!
//! `eval "$(scripts/testenv up)" && cargo build --release -p cloudcore -p edgecore &&
//! cargo bench -p edgecore --bench streams` prints, p50/p99 over 50 requests each:
//! 1. first byte of `GET pods/<pod>/log?tailLines=10` over HTTPS (a kube-rs client kept open):
//!    API server → cloudstream → tunnel → edgestream → CRI log file and back;
//! 2. the same through `kubectl logs --tail=10`, from spawning kubectl to its first output
//!    byte (kubectl's own start-up — reading the kubeconfig, TLS — included);
//! 3. `kubectl exec -- true` to completion.
//!
//! The benches use the binaries of the profile they are built with (`cargo bench`: release).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::AsyncBufReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use support::{Cloud, eventually, percentiles, testenv};

const NODE: &str = "edge-streams-bench";
const SAMPLES: usize = 50;

fn report(what: &str, samples: Vec<f64>) {
    let (p50, p99) = percentiles(samples);
    println!("{what}: p50 {p50:.1} ms, p99 {p99:.1} ms");
}

fn main() {
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let config = cloud.runtime_edge_config(&dir.path().join("edge"), NODE, &[]);
    let _edge = cloud.start_registered_edge(&config, NODE);
    let manifest = dir.path().join("logger.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: logger, namespace: default}}\n\
             spec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
             - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, command: [sh, -c, \
             'i=0; while [ $i -lt 1000 ]; do echo \"log line $i\"; i=$((i+1)); done; exec sleep 36000']}}\n"
        ),
    )
    .unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    eventually("1,000 log lines", Duration::from_secs(60), || {
        let out = cloud.kubectl(&["logs", "logger", "--tail=1"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("log line 999")
            .then_some(())
    });
    let kubeconfig = cloud
        .dir
        .join("var/lib/kubeedge/controlplane/admin.kubeconfig");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let https = runtime.block_on(async {
        let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
        let params = LogParams {
            tail_lines: Some(10),
            ..Default::default()
        };
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let mut stream = pods.log_stream("logger", &params).await.unwrap();
            let first = stream.fill_buf().await.unwrap();
            assert!(!first.is_empty());
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    });
    report("logs first byte, HTTPS client (tail 10)", https);

    let kubectl = |args: &[&str]| {
        let mut command = Command::new("/usr/bin/kubectl");
        command
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    };
    let mut first_byte = Vec::new();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let mut child = kubectl(&["logs", "logger", "--tail=10"]).spawn().unwrap();
        let mut byte = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut byte).unwrap();
        first_byte.push(started.elapsed().as_secs_f64() * 1000.0);
        child.wait().unwrap();
    }
    report("logs first byte, kubectl logs --tail=10", first_byte);

    let mut exec = Vec::new();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let status = kubectl(&["exec", "logger", "--", "true"]).status().unwrap();
        assert!(status.success());
        exec.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    report("kubectl exec -- true, to completion", exec);
}
