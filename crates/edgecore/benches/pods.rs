//! Pods on a real containerd, as a user runs them: release cloudcore (embedded control plane)
//! and edgecore on loopback, the test environment's containerd and busybox image.
//!
//! `eval "$(scripts/testenv up)" && cargo build --release -p cloudcore &&
//! cargo bench -p edgecore --bench pods` prints:
//! 1. pod start latency, p50/p99 over 50 pods created one after another (image present): from
//!    the pod reaching edged to its container running (edged's `pod started` log line), and from
//!    `kubectl create` to the container running in containerd;
//! 2. offline reboot: the cloud down, edgecore killed, every pod's sandbox stopped (the power
//!    went): edgecore start → all 10 pods' containers running again;
//! 3. edgecore's resident memory with 0, 10 and 50 running pods.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Cloud, Cri, WAIT, eventually, percentiles, rss_mib, start_edge, testenv};

const NODE: &str = "edge-pods-bench";
const FIRST: usize = 10;
const ALL: usize = 50;

/// Creates pod `name` and waits for its container to run in containerd; returns its UID and
/// how long that took.
fn create_pod(
    cloud: &Cloud,
    cri: &Cri,
    dir: &std::path::Path,
    name: &str,
    image: &str,
) -> (String, f64) {
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{bench: pods}}}}\n\
             spec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
             - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, command: [sleep, '36000']}}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = cloud.kubectl(&[
        "create",
        "-f",
        manifest.to_str().unwrap(),
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = String::from_utf8(out.stdout).unwrap();
    eventually(&format!("{name} running"), Duration::from_secs(60), || {
        (!cri.running_containers_of(&uid).is_empty()).then_some(())
    });
    (uid, started.elapsed().as_secs_f64() * 1e3)
}

/// The `took_ms` of every `pod started` line in `log`.
fn edge_latencies(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("pod started"))
        .filter_map(|l| {
            l.split("took_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn main() {
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let config = cloud.runtime_edge_config(&dir.path().join("edge"), NODE, &[]);
    let mut edge = cloud.start_registered_edge(&config, NODE);
    let cri = Cri::testenv();
    std::thread::sleep(Duration::from_secs(5));
    let rss_idle = rss_mib(edge.pid());

    let mut uids = Vec::new();
    let mut end_to_end = Vec::new();
    for i in 0..FIRST {
        let (uid, ms) = create_pod(&cloud, &cri, dir.path(), &format!("p{i}"), &image);
        uids.push(uid);
        end_to_end.push(ms);
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss_first = rss_mib(edge.pid());
    let mut edge_side = edge_latencies(&edge.log());

    // Offline reboot with dead containers.
    cloud.stop();
    edge.stop_with(Signal::SIGKILL, WAIT);
    for uid in &uids {
        cri.stop_sandboxes_of(uid);
    }
    let restarted = Instant::now();
    let mut edge = start_edge(&config);
    eventually("all pods running again", Duration::from_secs(60), || {
        uids.iter()
            .all(|uid| !cri.running_containers_of(uid).is_empty())
            .then_some(())
    });
    let reboot = restarted.elapsed();
    cloud.restart();

    for i in FIRST..ALL {
        let (uid, ms) = create_pod(&cloud, &cri, dir.path(), &format!("p{i}"), &image);
        uids.push(uid);
        end_to_end.push(ms);
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss_all = rss_mib(edge.pid());
    // After the reboot, the first lines are the restarted pods: those are not start latencies.
    edge_side.extend(edge_latencies(&edge.log()).into_iter().skip(FIRST));

    let (p50, p99) = percentiles(edge_side.clone());
    println!(
        "pod start, pod reaches edged → container running ({} pods): p50 {p50:.0} ms, p99 {p99:.0} ms",
        edge_side.len()
    );
    let (p50, p99) = percentiles(end_to_end);
    println!(
        "pod start, kubectl create → container running in containerd: p50 {p50:.0} ms, p99 {p99:.0} ms"
    );
    println!(
        "offline reboot, edgecore start → all {FIRST} pods' containers running again: {:.2} s",
        reboot.as_secs_f64()
    );
    println!(
        "edgecore RSS: {rss_idle:.1} MiB with 0 pods, {rss_first:.1} MiB with {FIRST}, {rss_all:.1} MiB with {ALL}"
    );

    let out = cloud.kubectl(&["delete", "pods", "-l", "bench=pods", "--wait=false"]);
    assert!(out.status.success());
    eventually("bench pods removed", Duration::from_secs(120), || {
        uids.iter()
            .all(|uid| cri.sandboxes_of(uid).is_empty())
            .then_some(())
    });
    edge.stop_with(Signal::SIGTERM, WAIT);
    cloud.stop();
}
