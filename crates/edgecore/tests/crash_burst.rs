//! `kill -9` of edgecore in the middle of a 1,000-pod burst: everything the edge had ACKed is in
//! its database, and after a restart the cloud resends the rest until the edge holds exactly the
//! cloud's pods.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Cloud, WAIT, eventually, start_edge};

const NODE: &str = "edge-k";
const PODS: usize = 1000;

/// uid → resourceVersion of the pods in the edge's database.
fn edge_pods(database: &Path) -> BTreeMap<String, u64> {
    let Ok(db) =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return BTreeMap::new();
    };
    let Ok(mut rows) = db.prepare("SELECT value FROM meta WHERE type = 'pod'") else {
        return BTreeMap::new();
    };
    rows.query_map([], |row| row.get::<_, String>(0))
        .map(|values| {
            values
                .filter_map(Result::ok)
                .filter_map(|v| serde_json::from_str::<Value>(&v).ok())
                .map(|pod| uid_and_version(&pod))
                .collect()
        })
        .unwrap_or_default()
}

fn uid_and_version(object: &Value) -> (String, u64) {
    (
        object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn cloud_pods(cloud: &Cloud) -> BTreeMap<String, u64> {
    let list = cloud.get(&["pods"]).expect("kubectl get pods");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(uid_and_version)
        .collect()
}

#[test]
fn a_killed_edge_loses_nothing_it_acked_and_converges_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.edge_config(&edge_dir, NODE, &[]);
    let database = edge_dir.join("var/lib/kubeedge/edgecore.db");
    let mut edge = cloud.start_registered_edge(&config, NODE);

    let started = std::time::Instant::now();
    let burst = cloud.start_creating_pods(NODE, PODS);
    eventually(
        "a part of the burst stored on the edge",
        Duration::from_secs(60),
        || (edge_pods(&database).len() >= 150).then_some(()),
    );
    edge.stop_with(Signal::SIGKILL, WAIT);
    let stored_at_kill = edge_pods(&database).len();
    for child in burst {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every ACK the cloud recorded (its sync records, written within a second or two) names a
    // pod that the dead edge's database holds, at that version or newer.
    println!("burst created in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let records = cloud.get(&["objectsyncs", "-A"]).unwrap();
    let acked: Vec<(String, u64)> = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let uid = r["metadata"]["name"]
                .as_str()?
                .strip_prefix(&format!("{NODE}."))?;
            let version = r["status"]["objectResourceVersion"]
                .as_str()?
                .parse()
                .ok()?;
            Some((uid.to_owned(), version))
        })
        .collect();
    assert!(!acked.is_empty(), "no ACKs recorded before the kill");
    let on_disk = edge_pods(&database);
    for (uid, version) in &acked {
        assert!(
            on_disk.get(uid).is_some_and(|held| held >= version),
            "pod {uid} was ACKed at {version} but the edge has {:?}",
            on_disk.get(uid)
        );
    }
    println!(
        "killed with {stored_at_kill} of {PODS} pods stored; {} ACKs recorded",
        acked.len()
    );

    // Restarted, the edge ends with exactly the cloud's pods at their current versions.
    let restarted = std::time::Instant::now();
    let mut edge = start_edge(&config);
    let expected = cloud_pods(&cloud);
    assert_eq!(expected.len(), PODS);
    eventually(
        "the edge holds exactly the cloud's pods",
        Duration::from_secs(120),
        || (edge_pods(&database) == expected).then_some(()),
    );
    println!("converged {:?} after the restart", restarted.elapsed());
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", edge.log());
}
