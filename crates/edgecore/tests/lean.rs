//! edgecore's footprint is a product feature: it must never link the API server, the cloud's
//! modules or a Kubernetes client. This checks the resolved dependency graph, so a new
//! dependency edge that breaks the rule fails here rather than in a release.

use std::process::Command;

#[test]
fn edgecore_links_no_cloud_or_kube_client_code() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "edgecore",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("utf-8");
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"ke-edgehub"), "unexpected tree:\n{tree}");
    let forbidden: Vec<&&str> = crates
        .iter()
        .filter(|name| {
            name.starts_with("kube")
                || name.starts_with("k8s-openapi")
                || name.contains("apiserver")
                || ["ke-cloudhub", "ke-delivery", "ke-controllers", "cloudcore"].contains(name)
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "edgecore depends on {forbidden:?}:\n{tree}"
    );
}
