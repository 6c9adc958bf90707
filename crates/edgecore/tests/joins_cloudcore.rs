//! The two real binaries on loopback: cloudcore creates its CA and a join token, edgecore joins
//! with the token, gets its certificate and connects.

mod support;

use std::time::Instant;

use nix::sys::signal::Signal;
use support::{Cloud, WAIT, start_edge};

#[test]
fn edgecore_joins_and_connects_to_cloudcore() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.edge_config(&edge_dir, "edge-e2e", &[]);

    let started = Instant::now();
    let mut edge = start_edge(&config);
    edge.wait_for_log("connected to the cloud", WAIT);
    cloud
        .daemon
        .as_mut()
        .unwrap()
        .wait_for_log("edge connected", WAIT);
    println!("edgecore joined and connected in {:?}", started.elapsed());
    assert!(edge.log().contains("joined the cloud"), "{}", edge.log());
    assert!(edge_dir.join("etc/kubeedge/certs/server.crt").exists());

    // The cloud goes away: the edge notices and keeps redialling without crashing.
    cloud.stop();
    edge.wait_for_log("cloud link lost", WAIT);
    edge.wait_for_log("redialling the cloud", WAIT);
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
}
