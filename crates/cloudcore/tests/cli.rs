use std::path::Path;
use std::time::Duration;

use ke_testkit::cli_contract::{Typo, check};
use ke_testkit::config::{sandboxed, with_embedded_control_plane};
use ke_testkit::run_to_completion;

const CLOUDCORE: &str = env!("CARGO_BIN_EXE_cloudcore");

#[test]
fn command_line_contract() {
    check(
        Path::new(CLOUDCORE),
        "cloudcore",
        &Typo {
            field: "keepaliveInterval:",
            misspelling: "keepaliveIntervall:",
            expected_path: "modules.cloudHub.keepaliveIntervall",
        },
        with_embedded_control_plane,
    );
}

#[test]
fn without_an_api_server_cloudcore_says_how_to_name_one() {
    let default_config = run_to_completion(
        Path::new(CLOUDCORE),
        &["--defaultconfig"],
        Duration::from_secs(30),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloudcore.yaml");
    let text = String::from_utf8(default_config.stdout).expect("utf-8");
    std::fs::write(&path, sandboxed(&text, dir.path())).expect("write config");
    let out = run_to_completion(
        Path::new(CLOUDCORE),
        &["--config", path.to_str().expect("utf-8 path")],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kubeAPIConfig.embedded"), "{stderr}");
}
