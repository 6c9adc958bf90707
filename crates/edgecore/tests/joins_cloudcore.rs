//! The two real binaries on loopback: cloudcore creates its CA and a join token, edgecore joins
//! with the token, gets its certificate and connects.

use std::path::Path;
use std::time::{Duration, Instant};

use ke_testkit::cli_contract::{sandboxed, with_embedded_control_plane};
use ke_testkit::{Daemon, run_to_completion, sibling_binary};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

fn default_config(bin: &Path) -> String {
    let out = run_to_completion(bin, &["--defaultconfig"], WAIT);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Replaces the value at `path` — the first `path[0]:` line, then the first `path[1]:` line
/// after it, and so on — and any block-list items under it. YAML is rendered one key per line,
/// lists as `- item` lines, so this is enough for the rendered default configs.
fn set(config: &str, path: &[&str], value: &str) -> String {
    let mut out = Vec::new();
    let mut lines = config.lines().peekable();
    let mut depth = 0;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if depth == path.len() || !trimmed.starts_with(&format!("{}:", path[depth])) {
            out.push(line.to_owned());
            continue;
        }
        depth += 1;
        if depth < path.len() {
            out.push(line.to_owned());
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        out.push(format!("{indent}{}: {value}", path[depth - 1]));
        while lines
            .peek()
            .is_some_and(|next| next.trim_start().starts_with("- ") && next.starts_with(indent))
        {
            lines.next();
        }
    }
    assert_eq!(depth, path.len(), "{path:?} not found in the config");
    out.join("\n") + "\n"
}

fn port_of(config: &str, key: &str) -> String {
    let line = config
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("{key}:")))
        .find(|l| l.trim_start().starts_with("port:"))
        .expect("listener has a port");
    line.trim_start()
        .trim_start_matches("port:")
        .trim()
        .to_owned()
}

#[test]
fn edgecore_joins_and_connects_to_cloudcore() {
    let dir = tempfile::tempdir().unwrap();
    let cloudcore = sibling_binary("cloudcore");
    let edgecore = Path::new(env!("CARGO_BIN_EXE_edgecore"));

    let cloud_config = sandboxed(
        &with_embedded_control_plane(&default_config(&cloudcore)),
        dir.path(),
    );
    let cloud_config = set(&cloud_config, &["advertiseAddress"], "[127.0.0.1]");
    let ws_port = port_of(&cloud_config, "websocket");
    let https_port = port_of(&cloud_config, "https");
    let cloud_path = dir.path().join("cloudcore.yaml");
    std::fs::write(&cloud_path, &cloud_config).unwrap();
    let mut cloud = Daemon::start(&cloudcore, &["--config", cloud_path.to_str().unwrap()]);
    cloud.wait_for_log("join token written", WAIT);
    let token_path = dir.path().join("etc/kubeedge/ca/token");
    let token = std::fs::read_to_string(&token_path).expect("cloudcore wrote the join token");

    let edge_config = sandboxed(&default_config(edgecore), dir.path());
    let edge_config = set(
        &edge_config,
        &["websocket", "server"],
        &format!("127.0.0.1:{ws_port}"),
    );
    let edge_config = set(
        &edge_config,
        &["httpServer"],
        &format!("https://127.0.0.1:{https_port}"),
    );
    let edge_config = set(&edge_config, &["token"], &token);
    let edge_config = set(&edge_config, &["hostnameOverride"], "edge-e2e");
    let edge_path = dir.path().join("edgecore.yaml");
    std::fs::write(&edge_path, &edge_config).unwrap();

    let started = Instant::now();
    let mut edge = Daemon::start(edgecore, &["--config", edge_path.to_str().unwrap()]);
    edge.wait_for_log("connected to the cloud", WAIT);
    cloud.wait_for_log("edge connected", WAIT);
    println!("edgecore joined and connected in {:?}", started.elapsed());
    assert!(edge.log().contains("joined the cloud"), "{}", edge.log());
    assert!(dir.path().join("etc/kubeedge/certs/server.crt").exists());

    // The cloud goes away: the edge notices and keeps redialling without crashing.
    let status = cloud.stop_with(Signal::SIGTERM, WAIT);
    assert!(
        status.success(),
        "cloudcore exit {status}:\n{}",
        cloud.log()
    );
    edge.wait_for_log("cloud link lost", WAIT);
    edge.wait_for_log("redialling the cloud", WAIT);
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
}
