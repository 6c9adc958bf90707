//! edgecore's footprint and its metaserver, as a user runs them: release binaries of cloudcore
//! (embedded control plane) and edgecore on loopback.
//!
//! `cargo build --release -p cloudcore && cargo bench -p edgecore --bench footprint` prints:
//! 1. the edgecore binary's size, as built and stripped;
//! 2. edgecore's resident memory idle (registered, connected, no pods), and with 1,000 pods
//!    cached, before and after the metaserver has served them, split into anonymous memory and
//!    mapped files;
//! 3. metaserver LIST latency of 1,000 cached pods (p50/p99 over 200 requests), whole and with
//!    a label selector, and GET of one pod.
//!
//! It measures this build's edgecore, or the one `KE_EDGECORE` names: the build nodes run is
//! `cargo build --profile release-edge -p edgecore` (`target/release-edge/edgecore`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Cloud, WAIT, edgecore, eventually, metaserver_port};

const NODE: &str = "edge-bench";
const PODS: usize = 1000;
const REQUESTS: usize = 200;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// RSS, and what it is made of: heap and stacks (anonymous) versus mapped files, which are
/// mostly edgecore's own code pages, shared with the page cache and reclaimable.
fn rss_split(pid: u32) -> String {
    format!(
        "{:.1} MiB ({:.1} anonymous, {:.1} mapped files)",
        mib(status_kib(pid, "VmRSS")),
        mib(status_kib(pid, "RssAnon")),
        mib(status_kib(pid, "RssFile") + status_kib(pid, "RssShmem")),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One HTTP/1.1 GET; returns the body.
fn get(port: &str, path: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response[..split])
    );
    response.split_off(split + 4)
}

fn latency(port: &str, path: &str) -> (f64, f64) {
    let mut times: Vec<Duration> = (0..REQUESTS)
        .map(|_| {
            let started = Instant::now();
            get(port, path);
            started.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[REQUESTS / 2]), ms(times[REQUESTS * 99 / 100]))
}

fn main() {
    let binary = edgecore();
    let size = std::fs::metadata(binary).unwrap().len();
    let stripped = std::env::temp_dir().join("edgecore-stripped");
    let strip = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(binary)
        .status()
        .unwrap();
    assert!(strip.success());
    println!(
        "edgecore binary {}: {:.1} MiB as built, {:.1} MiB stripped",
        binary.display(),
        mib(size / 1024),
        mib(std::fs::metadata(&stripped).unwrap().len() / 1024)
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(
        &dir.path().join("edge"),
        NODE,
        &[(&["metaServer", "enable"], "true")],
    );
    let port = metaserver_port(&config);
    let mut edge = cloud.start_registered_edge(&config, NODE);
    std::thread::sleep(Duration::from_secs(15));
    println!(
        "edgecore idle RSS (registered, connected, metaserver on, no pods): {}",
        rss_split(edge.pid())
    );

    for child in cloud.start_creating_pods(NODE, PODS) {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    eventually(
        "1,000 pods in the metaserver",
        Duration::from_secs(120),
        || {
            let list: serde_json::Value =
                serde_json::from_slice(&get(&port, "/api/v1/pods")).ok()?;
            (list["items"].as_array()?.len() == PODS).then_some(())
        },
    );
    println!(
        "edgecore RSS with {PODS} pods cached, before the LISTs: {}",
        rss_split(edge.pid())
    );
    let body = get(&port, "/api/v1/pods");
    let (p50, p99) = latency(&port, "/api/v1/pods");
    println!(
        "metaserver LIST of {PODS} pods ({:.0} KiB): p50 {p50:.1} ms, p99 {p99:.1} ms",
        body.len() as f64 / 1024.0
    );
    let (p50, p99) = latency(
        &port,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dnone",
    );
    println!(
        "metaserver LIST with a label selector (parses each pod): p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    let (p50, p99) = latency(&port, "/api/v1/namespaces/default/pods/p500");
    println!("metaserver GET of one pod: p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!(
        "edgecore RSS with {PODS} pods cached, after the LISTs: {}",
        rss_split(edge.pid())
    );
    edge.stop_with(Signal::SIGTERM, WAIT);
    cloud.stop();
}
