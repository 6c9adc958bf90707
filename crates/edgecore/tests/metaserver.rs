//! The edge's metaserver against the real kubectl and kube-rs: objects the cloud sent to the
//! node are listed, selected and watched, and still served with the cloud gone and edgecore
//! restarted.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Cloud, WAIT, eventually, metaserver_port, start_edge};

const NODE: &str = "edge-m";

fn manifests() -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\n  labels: {{app: web}}\ndata:\n  mode: fast\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\n  labels: {{app: web}}\n\
         spec:\n  nodeName: {NODE}\n  containers:\n  - name: web\n    image: busybox\n    envFrom:\n    - configMapRef: {{name: settings}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  namespace: default\n  labels: {{app: db}}\n\
         spec:\n  nodeName: {NODE}\n  containers:\n  - name: db\n    image: busybox\n"
    )
}

fn edge_kubectl(port: &str, args: &[&str]) -> Option<String> {
    let server = format!("http://127.0.0.1:{port}");
    let mut all = vec!["--server", server.as_str()];
    all.extend_from_slice(args);
    let out = ke_testkit::run_to_completion(Path::new("/usr/bin/kubectl"), &all, WAIT);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubectl call against the edge that is expected to fail: its exit code and stderr.
fn edge_kubectl_failure(port: &str, args: &[&str]) -> (Option<i32>, String) {
    let server = format!("http://127.0.0.1:{port}");
    let mut all = vec!["--server", server.as_str()];
    all.extend_from_slice(args);
    let out = ke_testkit::run_to_completion(Path::new("/usr/bin/kubectl"), &all, WAIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(list: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(list).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_kube_rs_read_and_watch_the_node_cache_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(
        &dir.path().join("edge"),
        NODE,
        &[(&["metaServer", "enable"], "true")],
    );
    let port = metaserver_port(&config);
    let mut edge = cloud.start_registered_edge(&config, NODE);
    let manifest = dir.path().join("objects.yaml");
    std::fs::write(&manifest, manifests()).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kubectl against the edge: list, selectors, get, the table.
    eventually("both pods in the edge's metaserver", WAIT, || {
        let list = edge_kubectl(&port, &["get", "pods", "-o", "json"])?;
        (names(&list) == ["db", "web"]).then_some(())
    });
    let selected = edge_kubectl(&port, &["get", "pods", "-l", "app=web", "-o", "json"]).unwrap();
    assert_eq!(names(&selected), ["web"]);
    let table = edge_kubectl(&port, &["get", "pods"]).unwrap();
    assert!(table.contains("NAME") && table.contains("web"), "{table}");
    let configmap = eventually("the ConfigMap the pod uses", WAIT, || {
        edge_kubectl(&port, &["get", "configmap", "settings", "-o", "json"])
    });
    let configmap: Value = serde_json::from_str(&configmap).unwrap();
    assert_eq!(configmap["data"]["mode"], "fast");
    assert_eq!(configmap["kind"], "ConfigMap");

    // kube-rs: list, then watch from the list's version and see a change made in the cloud.
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let list = configmaps.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let version = list.metadata.resource_version.unwrap();
    // kube-rs asks for bookmarks by default.
    let mut with_bookmarks = configmaps
        .watch(&WatchParams::default().timeout(5), &version)
        .await
        .unwrap()
        .boxed();
    match with_bookmarks.next().await {
        Some(Ok(WatchEvent::Bookmark(bookmark))) => {
            assert!(
                bookmark.metadata.resource_version.parse::<u64>().unwrap()
                    >= version.parse().unwrap()
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    drop(with_bookmarks);
    let mut events = configmaps
        .watch(&WatchParams::default().timeout(30), &version)
        .await
        .unwrap()
        .boxed();
    let out = cloud.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let modified = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Modified(cm) = event.unwrap() {
                return cm;
            }
        }
        panic!("watch ended without the change");
    })
    .await
    .expect("the change reached the edge watcher");
    assert_eq!(modified.data.unwrap()["mode"], "slow");

    // Writes go to the cloud: the node may change its own pods…
    edge_kubectl(&port, &["label", "pod", "web", "tier=front"]).expect("label through the edge");
    let web = cloud.get(&["pod", "web"]).unwrap();
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    let (code, stderr) = edge_kubectl_failure(
        &port,
        &["delete", "pod", "db", "--grace-period=0", "--force"],
    );
    assert_eq!(code, Some(0), "delete through the edge: {stderr}");
    eventually("db deleted in the cloud", WAIT, || {
        cloud.get(&["pod", "db"]).is_none().then_some(())
    });
    eventually("db gone from the edge cache", WAIT, || {
        let list = edge_kubectl(&port, &["get", "pods", "-o", "json"])?;
        (names(&list) == ["web"]).then_some(())
    });
    // …but nothing else.
    let sneaky = dir.path().join("sneaky.yaml");
    std::fs::write(
        &sneaky,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sneaky, namespace: default}\n",
    )
    .unwrap();
    let (code, stderr) = edge_kubectl_failure(
        &port,
        &["create", "--validate=false", "-f", sneaky.to_str().unwrap()],
    );
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("Forbidden") || stderr.contains("may not write"),
        "{stderr}"
    );

    // The cloud goes away and edgecore restarts: the cache is still served.
    cloud.stop();
    edge.stop_with(Signal::SIGKILL, WAIT);
    let mut edge = start_edge(&config);
    let list = eventually("pods served offline after a restart", WAIT, || {
        edge_kubectl(&port, &["get", "pods", "-o", "json"])
    });
    assert_eq!(names(&list), ["web"]);
    let cm = edge_kubectl(&port, &["get", "configmap", "settings", "-o", "json"]).unwrap();
    let cm: Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(cm["data"]["mode"], "slow");
    let (code, stderr) =
        edge_kubectl_failure(&port, &["label", "pod", "web", "tier=back", "--overwrite"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("the cloud is not connected"), "{stderr}");
    // A version from before this edgecore started is 410 Gone: the client must relist.
    let mut stale = configmaps
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match stale.next().await {
        Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", edge.log());
}
