//! The embedded control plane (the real `ke-controlplane` binary) driven by the real kubectl,
//! against fake nodes registered through the API (see `support`): workloads behave as on a
//! real cluster.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{Cluster, Kubelet, eventually};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn images(pods: &Value) -> BTreeSet<String> {
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_roll_back_and_cascade() {
    let c = Cluster::start();
    let _kubelet = Kubelet::start(c.client(), &[("node-a", &[]), ("node-b", &[])]).await;
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=3",
    ])
    .await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(names(&pods).len(), 3);
    let nodes: BTreeSet<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "least-allocated spreads the pods: {nodes:?}"
    );

    c.ok(&["scale", "deploy/web", "--replicas=5"]).await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    c.ok(&["set", "image", "deploy/web", "busybox=busybox:2"])
        .await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    let pods = eventually("old pods to go", || async {
        let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
        (names(&pods).len() == 5).then_some(pods)
    })
    .await;
    assert_eq!(images(&pods), BTreeSet::from(["busybox:2".to_owned()]));
    let history = c.ok(&["rollout", "history", "deploy/web"]).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    c.ok(&["rollout", "undo", "deploy/web"]).await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    let pods = eventually("the rollback to finish", || async {
        let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
        (names(&pods).len() == 5 && images(&pods) == BTreeSet::from(["busybox:1".to_owned()]))
            .then_some(pods)
    })
    .await;
    assert_eq!(names(&pods).len(), 5);
    let sets = c.json(&["get", "rs", "-l", "app=web"]).await;
    assert_eq!(
        names(&sets).len(),
        2,
        "rolling back reuses the first ReplicaSet"
    );

    // A Service picks the pods up.
    c.ok(&["expose", "deploy/web", "--port=80"]).await;
    let endpoints = eventually("endpoints", || async {
        let ep = c.json(&["get", "endpoints", "web"]).await;
        let n = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
        (n == 5).then_some(ep)
    })
    .await;
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 80);

    let slices = c
        .json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .await;
    assert_eq!(
        slices["items"][0]["endpoints"].as_array().map(Vec::len),
        Some(5)
    );

    // Foreground cascade: the Deployment waits for its ReplicaSets and pods, then goes.
    c.ok(&[
        "create",
        "deployment",
        "fg",
        "--image=busybox",
        "--replicas=2",
    ])
    .await;
    c.ok(&["rollout", "status", "deploy/fg", "--timeout=60s"])
        .await;
    c.ok(&[
        "delete",
        "deploy/fg",
        "--cascade=foreground",
        "--timeout=60s",
    ])
    .await;
    let left = c.json(&["get", "pods", "-l", "app=fg"]).await;
    assert!(
        names(&left).is_empty(),
        "foreground deletion removed the pods before the owner: {left}"
    );

    // Orphaning: the ReplicaSet stays, without its owner reference.
    c.ok(&[
        "create",
        "deployment",
        "orphan",
        "--image=busybox",
        "--replicas=1",
    ])
    .await;
    c.ok(&["rollout", "status", "deploy/orphan", "--timeout=60s"])
        .await;
    c.ok(&[
        "delete",
        "deploy/orphan",
        "--cascade=orphan",
        "--timeout=60s",
    ])
    .await;
    let kept = c.json(&["get", "rs", "-l", "app=orphan"]).await;
    assert_eq!(names(&kept).len(), 1);
    assert!(
        kept["items"][0]["metadata"]
            .get("ownerReferences")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
    );

    // Every namespace gets its default ServiceAccount; deleting one waits for its pods.
    c.ok(&["create", "namespace", "team"]).await;
    eventually("the default ServiceAccount", || async {
        c.kubectl(&["-n", "team", "get", "sa", "default"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    c.ok(&["-n", "team", "create", "deployment", "t", "--image=busybox"])
        .await;
    c.ok(&[
        "-n",
        "team",
        "rollout",
        "status",
        "deploy/t",
        "--timeout=60s",
    ])
    .await;
    c.ok(&["delete", "namespace", "team", "--timeout=60s"])
        .await;
    assert!(
        !c.kubectl(&["get", "namespace", "team"])
            .await
            .status
            .success()
    );

    // Cascading delete: the ReplicaSets and pods go with the Deployment.
    c.ok(&["delete", "deploy/web"]).await;
    eventually("the cascade", || async {
        let sets = c.json(&["get", "rs", "-l", "app=web"]).await;
        let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
        (names(&sets).is_empty() && names(&pods).is_empty()).then_some(())
    })
    .await;
}

const DAEMONSET: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      nodeSelector: {node-role.kubernetes.io/edge: \"\"}\n      containers: [{name: agent, image: busybox}]\n";

const STATEFULSET: &str = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: db, image: busybox}]\n";

const JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: batch\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: work, image: busybox}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_statefulset_and_job() {
    let c = Cluster::start();
    let edge: &[(&str, &str)] = &[("node-role.kubernetes.io/edge", "")];
    let _kubelet = Kubelet::start(
        c.client(),
        &[("edge-1", edge), ("edge-2", edge), ("cloud-1", &[])],
    )
    .await;

    c.ok(&[
        "apply",
        "-f",
        c.file("ds.yaml", DAEMONSET).to_str().unwrap(),
    ])
    .await;
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    let pods = c.json(&["get", "pods", "-l", "app=agent"]).await;
    let nodes: BTreeSet<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["edge-1", "edge-2"]));

    c.ok(&[
        "apply",
        "-f",
        c.file("sts.yaml", STATEFULSET).to_str().unwrap(),
    ])
    .await;
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"])
        .await;
    let pods = c.json(&["get", "pods", "-l", "app=db"]).await;
    let mut found = names(&pods);
    found.sort();
    assert_eq!(found, ["db-0", "db-1", "db-2"]);
    // Ordered: each one was created after its predecessor.
    let created = |n: &str| {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == n)
            .unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(created("db-0") < created("db-1") && created("db-1") < created("db-2"));

    c.ok(&["apply", "-f", c.file("job.yaml", JOB).to_str().unwrap()])
        .await;
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ])
    .await;
    let job = c.json(&["get", "job", "batch"]).await;
    assert_eq!(job["status"]["succeeded"], 3);
    let table = c.ok(&["get", "job", "batch"]).await;
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_edge_node_keeps_its_pods() {
    let c = Cluster::start();
    let edge: &[(&str, &str)] = &[("node-role.kubernetes.io/edge", "")];
    let kubelet = Kubelet::start(c.client(), &[("edge-1", edge)]).await;
    c.ok(&[
        "create",
        "deployment",
        "cam",
        "--image=busybox",
        "--replicas=2",
    ])
    .await;
    c.ok(&["rollout", "status", "deploy/cam", "--timeout=60s"])
        .await;
    let before = c.json(&["get", "pods", "-l", "app=cam"]).await;
    let uids: BTreeSet<String> = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();

    kubelet.set_offline("edge-1", true);
    let started = tokio::time::Instant::now();
    eventually("the node to go Unknown", || async {
        let node = c.json(&["get", "node", "edge-1"]).await;
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap();
        let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable")
        });
        (ready["status"] == "Unknown" && tainted).then_some(())
    })
    .await;
    assert!(
        started.elapsed().as_secs() < 15,
        "NotReady within the grace period plus a check"
    );
    let table = c.ok(&["get", "node", "edge-1"]).await;
    assert!(table.contains("NotReady"), "{table}");
    // Well past the pods' 300 s tolerations would not be quick to test; what matters is that
    // nothing is evicted or recreated on an edge node, however long it is away.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let during = c.json(&["get", "pods", "-l", "app=cam"]).await;
    let still: BTreeSet<String> = during["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(still, uids);

    kubelet.set_offline("edge-1", false);
    eventually("the node to recover", || async {
        let node = c.json(&["get", "node", "edge-1"]).await;
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let untainted = node["spec"]["taints"].as_array().is_none_or(|t| {
            t.iter()
                .all(|t| t["key"] != "node.kubernetes.io/unreachable")
        });
        (ready && untainted).then_some(())
    })
    .await;
    let after = c.json(&["get", "pods", "-l", "app=cam"]).await;
    let back: BTreeSet<String> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(back, uids, "the same pods, not new ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_rollout_converges_without_duplicates() {
    let mut c = Cluster::start();
    let _kubelet = Kubelet::start(c.client(), &[("node-a", &[]), ("node-b", &[])]).await;
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=6",
    ])
    .await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    c.ok(&["set", "image", "deploy/web", "busybox=busybox:2"])
        .await;
    c.kill();
    c.restart();
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    let pods = eventually("exactly the new pods", || async {
        let pods = c.json(&["get", "pods", "-l", "app=web"]).await;
        (names(&pods).len() == 6 && images(&pods) == BTreeSet::from(["busybox:2".to_owned()]))
            .then_some(pods)
    })
    .await;
    let unique: BTreeSet<String> = names(&pods).into_iter().collect();
    assert_eq!(unique.len(), 6);
    assert_eq!(
        names(&c.json(&["get", "rs", "-l", "app=web"]).await).len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_says_why() {
    let c = Cluster::start();
    let _kubelet = Kubelet::start(c.client(), &[("node-a", &[])]).await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector: {disktype: ssd}\n  containers: [{name: c, image: busybox, resources: {requests: {cpu: \"64\"}}}]\n";
    c.ok(&["apply", "-f", c.file("picky.yaml", pod).to_str().unwrap()])
        .await;
    let condition = eventually("PodScheduled=False", || async {
        let p = c.json(&["get", "pod", "picky"]).await;
        p["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .cloned()
        })
    })
    .await;
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(
        condition["message"],
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    );
    let describe = eventually("the FailedScheduling event", || async {
        let d = c.ok(&["describe", "pod", "picky"]).await;
        d.contains("FailedScheduling").then_some(d)
    })
    .await;
    assert!(describe.contains("default-scheduler"), "{describe}");
    // Labelling the node makes it fit the selector but not the CPU request.
    c.ok(&["label", "node", "node-a", "disktype=ssd"]).await;
    eventually("the reason to change", || async {
        let p = c.json(&["get", "pod", "picky"]).await;
        let msg = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?["message"]
            .as_str()?
            .to_owned();
        msg.contains("Insufficient cpu").then_some(())
    })
    .await;
}
