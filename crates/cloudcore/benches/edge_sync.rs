//! Cloud → edge through the whole stack: the real cloudcore (embedded control plane) in its
//! own process, 100 edge nodes on the real edgehub library in this one, the real kubectl.
//!
//! `cargo bench -p cloudcore --bench edge_sync` prints:
//! 1. `kubectl apply` of a pod → its node has stored it: p50/p99 over 200 pods, applied one
//!    at a time across the 100 nodes (kubectl's own run time shown beside it);
//! 2. convergence after a burst of 1,000 changes (800 pods created, 200 deleted) made while
//!    all 100 nodes were disconnected: from reconnecting to every node holding exactly the
//!    current pods;
//! 3. API calls spent on sync records per ACKed message: for the burst, for a stream of
//!    updates (5 label changes of each of 200 pods, counted through cloudcore's shutdown so the
//!    lazily written versions are in), and over the whole run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Cloud, Edge, EdgeStore};

const NODES: usize = 100;
const LATENCY_PODS: usize = 200;
const BURST_CREATE: usize = 800;
const BURST_DELETE: usize = 200;

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: busybox\n"
    )
}

fn node_name(i: usize) -> String {
    format!("edge-{i:03}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let stores: Vec<Arc<Mutex<EdgeStore>>> = (0..NODES).map(|_| Arc::default()).collect();
    let connect_all = |cloud: &Cloud| -> Vec<Edge> {
        (0..NODES)
            .map(|i| Edge::connect(cloud, &node_name(i), Arc::clone(&stores[i])))
            .collect()
    };
    let mut edges = connect_all(&cloud);
    for edge in &edges {
        edge.register().await;
    }
    println!("{NODES} edge nodes registered");

    // 1. kubectl apply → stored on the edge.
    let mut latencies = Vec::new();
    let mut kubectl_times = Vec::new();
    for i in 0..LATENCY_PODS {
        let name = format!("lat-{i}");
        let node = i % NODES;
        let resource = format!("default/pod/{name}");
        let started = Instant::now();
        cloud.apply(&pod(&name, &node_name(node))).await;
        kubectl_times.push(started.elapsed());
        let store = Arc::clone(&stores[node]);
        wait_until(
            &format!("{name} on its node"),
            Duration::from_secs(30),
            || store.lock().unwrap().arrivals.contains_key(&resource),
        )
        .await;
        let arrived = stores[node].lock().unwrap().arrivals[&resource];
        latencies.push(arrived - started);
    }
    latencies.sort();
    kubectl_times.sort();
    println!(
        "kubectl apply -> pod stored on its edge node ({LATENCY_PODS} pods, {NODES} nodes): p50 {:.1} ms, p99 {:.1} ms (kubectl itself: p50 {:.1} ms)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&kubectl_times, 0.5).as_secs_f64() * 1e3,
    );

    // 2. A burst while every node is away.
    let (acks_before, calls_before) = sync_counters(&cloud).await;
    for edge in &mut edges {
        edge.disconnect().await;
    }
    let mut manifest = String::new();
    for i in 0..BURST_CREATE {
        manifest.push_str("---\n");
        manifest.push_str(&pod(&format!("burst-{i}"), &node_name(i % NODES)));
    }
    let burst_started = Instant::now();
    cloud.create(&manifest).await;
    let doomed: Vec<String> = (0..BURST_DELETE).map(|i| format!("lat-{i}")).collect();
    let mut args = vec![
        "delete",
        "pod",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ];
    args.extend(doomed.iter().map(String::as_str));
    cloud.ok(&args).await;
    println!(
        "burst of {} changes applied in {:.1} s while the nodes were away",
        BURST_CREATE + BURST_DELETE,
        burst_started.elapsed().as_secs_f64()
    );
    let expected: Vec<BTreeSet<String>> = (0..NODES)
        .map(|node| {
            (0..LATENCY_PODS)
                .filter(|i| i % NODES == node && *i >= BURST_DELETE)
                .map(|i| format!("default/lat-{i}"))
                .chain(
                    (0..BURST_CREATE)
                        .filter(|i| i % NODES == node)
                        .map(|i| format!("default/burst-{i}")),
                )
                .collect()
        })
        .collect();
    let reconnected = Instant::now();
    let edges = connect_all(&cloud);
    wait_until(
        "every node holds exactly the current pods",
        Duration::from_secs(300),
        || {
            (0..NODES).all(|node| {
                let store = stores[node].lock().unwrap();
                let pods: BTreeSet<String> = store.of_type("pod").into_keys().collect();
                pods == expected[node]
            })
        },
    )
    .await;
    println!(
        "convergence after reconnecting {NODES} nodes: {:.2} s",
        reconnected.elapsed().as_secs_f64()
    );

    // New and deleted records are written within a flush.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acks_after, calls_after) = sync_counters(&cloud).await;
    report(
        "burst (create/delete)",
        acks_after - acks_before,
        calls_after - calls_before,
    );

    // 2. A stream of updates to objects the nodes hold, counted through cloudcore's shutdown so
    // that the lazily written versions are included.
    let (acks_before, calls_before) = sync_counters(&cloud).await;
    let names: Vec<String> = (0..UPDATE_PODS).map(|i| format!("burst-{i}")).collect();
    let stream_started = Instant::now();
    for round in 0..UPDATE_ROUNDS {
        let label = format!("round={round}");
        let mut args = vec!["label", "pod", "--overwrite"];
        args.extend(names.iter().map(String::as_str));
        args.push(label.as_str());
        cloud.ok(&args).await;
    }
    let last = format!("{}", UPDATE_ROUNDS - 1);
    wait_until(
        "every node has the last label",
        Duration::from_secs(60),
        || {
            (0..UPDATE_PODS).all(|i| {
                let store = stores[i % NODES].lock().unwrap();
                store.objects[&format!("default/pod/burst-{i}")]["metadata"]["labels"]["round"]
                    == last.as_str()
            })
        },
    )
    .await;
    let stream_took = stream_started.elapsed();

    let mut cloud = cloud;
    let log = cloud.stop();
    let flushed = log
        .lines()
        .rfind(|line| line.contains("sync records flushed"))
        .expect("cloudcore reports its sync-record totals at shutdown");
    let field = |name: &str| -> u64 {
        flushed
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}="))?.parse().ok())
            .unwrap_or(0)
    };
    report(
        &format!(
            "update stream ({UPDATE_ROUNDS} label changes of {UPDATE_PODS} pods in {:.0} s, incl. the final flush)",
            stream_took.as_secs_f64()
        ),
        field("acks") - acks_before,
        field("api_calls") - calls_before,
    );
    report("whole run", field("acks"), field("api_calls"));
    drop(edges);
}

const UPDATE_ROUNDS: usize = 5;
const UPDATE_PODS: usize = 200;

async fn sync_counters(cloud: &Cloud) -> (u64, u64) {
    (
        cloud.metric("cloudcore_sync_acks_total").await,
        cloud.metric("cloudcore_sync_record_api_calls_total").await,
    )
}

fn report(phase: &str, acks: u64, calls: u64) {
    println!(
        "sync records, {phase}: {calls} API calls for {acks} ACKed messages = {:.3} per ACK",
        calls as f64 / acks.max(1) as f64
    );
}
