//! cloudcore end to end: the real binary in embedded mode, kubectl, and edge nodes on the real
//! edgehub library. What a KubeEdge user notices: pods reach their node once, statuses come
//! back, a node that was away (even across a cloudcore crash) ends with exactly the current
//! objects, and no node sees another node's Secrets.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Cloud, Edge, EdgeStore, eventually};

fn pod(name: &str, node: &str, configmap: &str, secret: Option<&str>) -> String {
    let env = secret
        .map(|s| format!("\n    env:\n    - name: TOKEN\n      valueFrom:\n        secretKeyRef: {{name: {s}, key: token}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: busybox{env}\n    volumeMounts:\n    - {{name: config, mountPath: /etc/app}}\n  volumes:\n  - name: config\n    configMap: {{name: {configmap}}}\n"
    )
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  value: \"{value}\"\n"
    )
}

fn secret(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData:\n  token: t-{name}\n"
    )
}

/// The records cloudcore keeps for `node`: object uid → acknowledged resourceVersion.
async fn sync_records(cloud: &Cloud, node: &str) -> std::collections::BTreeMap<String, String> {
    let list = cloud.json(&["get", "objectsyncs", "-A"]).await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| {
            let name = item["metadata"]["name"].as_str()?;
            let uid = name.strip_prefix(&format!("{node}."))?;
            let version = item["status"]["objectResourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            Some((uid.to_owned(), version))
        })
        .collect()
}

fn uid_and_version(object: &Value) -> (String, String) {
    (
        object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reaches_its_edge_node_once_and_its_status_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let store = Arc::new(Mutex::new(EdgeStore::default()));
    let edge = Edge::connect(&cloud, "edge-1", Arc::clone(&store));

    // Registration creates the Node, labelled as an edge node and annotated with its cloudcore.
    let registered = edge.register().await;
    assert_eq!(
        registered.content["Err"],
        Value::Null,
        "{:?}",
        registered.content
    );
    assert_eq!(registered.content["Object"]["metadata"]["name"], "edge-1");
    let node = cloud.json(&["get", "node", "edge-1"]).await;
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/edge"],
        ""
    );
    assert_eq!(node["metadata"]["annotations"]["cloudcore"], "127.0.0.1");
    // A second registration is refused as upstream does, in upstream's error shape.
    let again = edge.register().await;
    assert_eq!(again.content["Err"]["ErrStatus"]["reason"], "AlreadyExists");

    cloud.apply(&configmap("app-config", "v1")).await;
    cloud.apply(&secret("app-token")).await;
    cloud.apply(&secret("unrelated")).await;
    cloud
        .apply(&pod("web", "edge-1", "app-config", Some("app-token")))
        .await;

    let pod = eventually("the pod on the edge", async || {
        store
            .lock()
            .unwrap()
            .objects
            .get("default/pod/web")
            .cloned()
    })
    .await;
    let (uid, version) = uid_and_version(&pod);
    {
        let store = store.lock().unwrap();
        assert!(
            store.objects.contains_key("default/configmap/app-config"),
            "the pod's ConfigMap came first"
        );
        assert!(
            store.objects.contains_key("default/secret/app-token"),
            "the pod's Secret came too"
        );
        assert!(
            !store.objects.contains_key("default/secret/unrelated"),
            "no Secret the pod does not use"
        );
    }

    // The ACK is recorded as the pod's ObjectSync.
    let recorded = eventually("the pod's ObjectSync", async || {
        sync_records(&cloud, "edge-1")
            .await
            .get(&uid)
            .cloned()
            .filter(|v| *v == version)
    })
    .await;
    assert_eq!(recorded, version);

    // The kubelet reports the pod Running through a podpatch; kubectl sees it.
    let patch = json!({
        "metadata": {"uid": uid},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    });
    let reply = edge
        .request(
            "default/podpatch/web",
            "patch",
            Value::String(patch.to_string()),
        )
        .await;
    assert_eq!(reply.content["Err"], Value::Null, "{:?}", reply.content);
    assert_eq!(reply.content["Object"]["status"]["phase"], "Running");
    assert!(
        !reply.header.resource_version.is_empty(),
        "patch replies carry the new resourceVersion"
    );
    let phase = cloud
        .ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(phase, "Running");

    // Queries: the node may read what its pods use, and nothing else.
    let cm = edge
        .request("default/configmap/app-config", "query", Value::Null)
        .await;
    assert_eq!(cm.content["kind"], "ConfigMap");
    assert_eq!(cm.content["data"]["value"], "v1");
    let refused = edge
        .request("default/secret/unrelated", "query", Value::Null)
        .await;
    assert_eq!(
        refused.content["ErrStatus"]["code"], 403,
        "{:?}",
        refused.content
    );
    let missing = edge
        .request("default/configmap/nope", "query", Value::Null)
        .await;
    assert_eq!(missing.content["ErrStatus"]["code"], 403);

    // Leases are created and renewed through the cloud.
    let lease = json!({
        "metadata": {"name": "edge-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:12.345678Z"}
    });
    let created = edge
        .request("kube-node-lease/lease/edge-1", "insert", lease)
        .await;
    assert_eq!(created.content["Err"], Value::Null, "{:?}", created.content);
    assert_eq!(
        created.content["Object"]["spec"]["holderIdentity"],
        "edge-1"
    );
    let foreign = edge
        .request(
            "kube-node-lease/lease/edge-2",
            "insert",
            json!({"metadata": {"name": "edge-2"}}),
        )
        .await;
    assert_eq!(foreign.content["Err"]["ErrStatus"]["code"], 403);

    // Exactly one insert of the pod, however long we look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.lock().unwrap().count("default/pod/web", "insert"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_away_converges_to_exactly_the_current_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let store = Arc::new(Mutex::new(EdgeStore::default()));
    let mut edge = Edge::connect(&cloud, "edge-1", Arc::clone(&store));
    edge.register().await;

    for (name, cm) in [("p1", "cm1"), ("p2", "cm2"), ("p3", "cm1")] {
        cloud.apply(&configmap(cm, "before")).await;
        cloud.apply(&pod(name, "edge-1", cm, None)).await;
    }
    eventually("three pods and two ConfigMaps on the edge", async || {
        let store = store.lock().unwrap();
        (store.of_type("pod").len() == 3 && store.of_type("configmap").len() == 2).then_some(())
    })
    .await;
    // Durable records of all five before anything goes wrong.
    eventually("sync records of the five objects", async || {
        (sync_records(&cloud, "edge-1").await.len() >= 5).then_some(())
    })
    .await;

    // The node goes away; while it is away the objects change...
    edge.disconnect().await;
    cloud
        .ok(&["delete", "pod", "p2", "--grace-period=0", "--force"])
        .await;
    cloud.ok(&["delete", "configmap", "cm2"]).await;
    cloud.apply(&configmap("cm1", "after")).await;
    cloud.apply(&configmap("cm3", "new")).await;
    cloud.apply(&pod("p4", "edge-1", "cm3", None)).await;
    // ...and cloudcore crashes, losing every queued message.
    cloud.kill();
    cloud.restart();

    let mut edge = Edge::connect(&cloud, "edge-1", Arc::clone(&store));
    let expected_pods = ["default/p1", "default/p3", "default/p4"];
    let expected_configmaps = ["default/cm1", "default/cm3"];
    eventually(
        "the edge holds exactly the current pods and ConfigMaps",
        async || {
            let store = store.lock().unwrap();
            let pods: Vec<String> = store.of_type("pod").into_keys().collect();
            let configmaps = store.of_type("configmap");
            (pods == expected_pods
                && configmaps.keys().cloned().collect::<Vec<_>>() == expected_configmaps
                && configmaps["default/cm1"]["data"]["value"] == "after")
                .then_some(())
        },
    )
    .await;

    // Every object the edge holds is the current version, and the records say so.
    let mut current = std::collections::BTreeMap::new();
    for (kind, names) in [
        ("pod", &expected_pods[..]),
        ("configmap", &expected_configmaps[..]),
    ] {
        for name in names {
            let name = name.trim_start_matches("default/");
            let object = cloud.json(&["get", kind, name]).await;
            let (uid, version) = uid_and_version(&object);
            let held = store.lock().unwrap().objects[&format!("default/{kind}/{name}")].clone();
            assert_eq!(
                uid_and_version(&held),
                (uid.clone(), version.clone()),
                "{kind} {name}"
            );
            current.insert(uid, version);
        }
    }
    // Pods and ConfigMaps are namespaced: their records are ObjectSyncs (the Node's is a
    // ClusterObjectSync). New and deleted records are written within a flush; a version-only
    // change may lag (it is written lazily), but never claims more than the edge holds.
    eventually(
        "sync records of exactly the current pods and ConfigMaps",
        async || {
            let records = sync_records(&cloud, "edge-1").await;
            let version = |v: &str| v.parse::<u64>().unwrap_or(0);
            let none_ahead = |(uid, held): (&String, &String)| {
                current
                    .get(uid)
                    .is_some_and(|now| version(held) <= version(now))
            };
            (records.keys().eq(current.keys()) && records.iter().all(none_ahead)).then_some(())
        },
    )
    .await;
    edge.disconnect().await;
    // A clean stop writes the lagging versions: after it the records are exact.
    cloud.stop();
    cloud.restart();
    assert_eq!(sync_records(&cloud, "edge-1").await, current);
}
