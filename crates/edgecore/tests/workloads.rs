//! A Deployment on an edge node, as a user runs one: ConfigMap volume, Secret env, an init
//! container, startup, readiness and liveness probes — on the real containerd, driven by the real
//! kubectl, checked inside the containers through CRI. Then an offline reboot of edgecore and
//! the deletion of everything.
//!
//! Needs the test environment (`eval "$(scripts/testenv up)"`) and fails without it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Cloud, Cri, WAIT, eventually, start_edge, testenv};

const NODE: &str = "edge-w";

/// One node per container runtime: an edged stops every pod it does not know, so the tests of
/// this file take turns on the test environment's containerd.
static RUNTIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn runtime_turn() -> std::sync::MutexGuard<'static, ()> {
    RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn manifests(image: &str, page: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: default}}
data:
  index.html: "{page}"
---
apiVersion: v1
kind: Secret
metadata: {{name: web-secret, namespace: default}}
stringData: {{password: s3cret}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {NODE}}}
      terminationGracePeriodSeconds: 2
      initContainers:
      - name: setup
        image: {image}
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'echo prepared > /work/marker']
        volumeMounts: [{{name: work, mountPath: /work}}]
      containers:
      - name: web
        image: {image}
        imagePullPolicy: IfNotPresent
        command: [httpd, -f, -p, '8080', -h, /config]
        ports: [{{name: http, containerPort: 8080}}]
        env:
        - name: PASSWORD
          valueFrom: {{secretKeyRef: {{name: web-secret, key: password}}}}
        volumeMounts:
        - {{name: config, mountPath: /config}}
        - {{name: work, mountPath: /work}}
        startupProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
        readinessProbe:
          httpGet: {{path: /index.html, port: http}}
          periodSeconds: 1
        livenessProbe:
          exec: {{command: [cat, /work/marker]}}
          periodSeconds: 2
      volumes:
      - {{name: config, configMap: {{name: web-config}}}}
      - {{name: work, emptyDir: {{}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: once, namespace: default}}
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - {{name: job, image: {image}, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo done']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: flaky, namespace: default}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 3600']
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

/// The web pods, by name, once both are Running and Ready.
fn ready_web_pods(cloud: &Cloud) -> Option<BTreeMap<String, Value>> {
    let list = cloud.get(&["pods", "-l", "app=web"])?;
    let pods: BTreeMap<String, Value> = list["items"]
        .as_array()?
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p.clone(),
            )
        })
        .collect();
    let ready = |pod: &Value| {
        pod["status"]["phase"] == "Running"
            && pod["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    (pods.len() == 2 && pods.values().all(ready)).then_some(pods)
}

fn container_id(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn apply(cloud: &Cloud, dir: &std::path::Path, text: &str) {
    let manifest = dir.join("workload.yaml");
    std::fs::write(&manifest, text).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_deployment_runs_ready_with_its_config_survives_an_offline_reboot_and_is_deleted() {
    let _turn = runtime_turn();
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.runtime_edge_config(&edge_dir, NODE, &[]);
    let mut edge = cloud.start_registered_edge(&config, NODE);
    let cri = Cri::testenv();

    apply(
        &cloud,
        dir.path(),
        &manifests(&image, "hello from the edge"),
    );
    let pods = eventually(
        "2 web pods Running and Ready",
        Duration::from_secs(90),
        || ready_web_pods(&cloud),
    );
    let table = String::from_utf8_lossy(&cloud.kubectl(&["get", "pods", "-l", "app=web"]).stdout)
        .into_owned();
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains("1/1") && l.contains("Running"))
            .count(),
        2,
        "{table}"
    );
    for pod in pods.values() {
        let init = &pod["status"]["initContainerStatuses"][0];
        assert_eq!(
            init["state"]["terminated"]["reason"], "Completed",
            "{pod:#}"
        );
        let id = container_id(pod);
        assert_eq!(
            cri.exec(&id, &["cat", "/config/index.html"]),
            (0, "hello from the edge".to_owned())
        );
        assert_eq!(
            cri.exec(&id, &["cat", "/work/marker"]),
            (0, "prepared\n".to_owned())
        );
        let (_, env) = cri.exec(&id, &["env"]);
        assert!(env.lines().any(|l| l == "PASSWORD=s3cret"), "{env}");
        // Written volumes are read-only in the container.
        let (code, _) = cri.exec(&id, &["sh", "-c", "echo x > /config/index.html"]);
        assert_ne!(code, 0);
    }

    // The node reports its runtime and images.
    eventually("runtime and images in the node status", WAIT, || {
        let node = cloud.get(&["node", NODE])?;
        let status = &node["status"];
        let runtime = status["nodeInfo"]["containerRuntimeVersion"].as_str()?;
        let images = status["images"].as_array()?;
        (runtime.starts_with("containerd://")
            && images
                .iter()
                .any(|i| i["names"].to_string().contains("busybox")))
        .then_some(())
    });

    // A changed ConfigMap reaches the running containers' files.
    apply(&cloud, dir.path(), &manifests(&image, "updated"));
    let first = container_id(pods.values().next().unwrap());
    eventually(
        "the updated page in the container",
        Duration::from_secs(60),
        || (cri.exec(&first, &["cat", "/config/index.html"]).1 == "updated").then_some(()),
    );

    // A failing liveness probe restarts the container.
    let flaky = eventually(
        "flaky restarted by its liveness probe",
        Duration::from_secs(60),
        || {
            let pod = cloud.get(&["pod", "flaky"])?;
            let status = &pod["status"]["containerStatuses"][0];
            (status["restartCount"].as_u64() >= Some(1)
                && status["lastState"]["terminated"]["exitCode"].is_i64())
            .then_some(pod)
        },
    );
    assert_eq!(flaky["status"]["phase"], "Running", "{flaky:#}");

    let once = eventually("once Succeeded", Duration::from_secs(60), || {
        let pod = cloud.get(&["pod", "once"])?;
        (pod["status"]["phase"] == "Succeeded").then_some(pod)
    });
    let once_uid = once["metadata"]["uid"].as_str().unwrap().to_owned();

    // Offline reboot: cloud down, edgecore killed; one pod's containers die meanwhile (as in
    // a power cut). From its store alone edgecore restarts that one, adopts the other.
    let pods = ready_web_pods(&cloud).expect("web pods still ready");
    let mut cloud = cloud;
    cloud.stop();
    edge.stop_with(Signal::SIGKILL, WAIT);
    let (died, kept) = {
        let mut names = pods.keys();
        (names.next().unwrap().clone(), names.next().unwrap().clone())
    };
    let uid = |name: &str| pods[name]["metadata"]["uid"].as_str().unwrap().to_owned();
    let kept_id = container_id(&pods[&kept])
        .trim_start_matches("containerd://")
        .to_owned();
    cri.stop_sandboxes_of(&uid(&died));
    cri.stop_sandboxes_of(&once_uid);
    assert!(cri.running_containers_of(&uid(&died)).is_empty());

    let restarted = Instant::now();
    let mut edge = start_edge(&config);
    eventually(
        "both web pods running again",
        Duration::from_secs(5),
        || {
            let died_running = cri.running_containers_of(&uid(&died)).len() == 1;
            let kept_running = cri.running_containers_of(&uid(&kept)) == [kept_id.clone()];
            (died_running && kept_running).then_some(())
        },
    );
    eprintln!(
        "offline reboot: pods running {:?} after edgecore start",
        restarted.elapsed()
    );

    cloud.restart();
    let after = eventually(
        "web pods Ready again with the same UIDs",
        Duration::from_secs(60),
        || ready_web_pods(&cloud),
    );
    for (name, pod) in &pods {
        assert_eq!(
            after[name]["metadata"]["uid"], pod["metadata"]["uid"],
            "{name} recreated"
        );
    }
    assert_eq!(
        container_id(&after[&kept]),
        container_id(&pods[&kept]),
        "{kept} restarted"
    );
    // The pod whose containers died counts the restart (once its new status arrived).
    eventually("the restart counted", WAIT, || {
        let pod = cloud.get(&["pod", &died])?;
        (pod["status"]["containerStatuses"][0]["restartCount"] == 1).then_some(())
    });
    // A pod that is over does not run again when its sandbox is gone.
    std::thread::sleep(Duration::from_secs(3));
    let once = cloud.get(&["pod", "once"]).unwrap();
    assert_eq!(once["status"]["phase"], "Succeeded", "{once:#}");
    assert!(cri.running_containers_of(&once_uid).is_empty());
    let ready = ke_cri::api::PodSandboxState::SandboxReady as i32;
    assert!(
        cri.sandboxes_of(&once_uid).iter().all(|s| s.state != ready),
        "a new sandbox for a finished pod"
    );

    // Deleted in the cloud: everything stops and goes.
    for args in [
        &["delete", "deployment", "web", "--wait=false"][..],
        &["delete", "pod", "flaky", "once", "--wait=false"][..],
    ] {
        let out = cloud.kubectl(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually("no pods left", Duration::from_secs(60), || {
        let list = cloud.get(&["pods"])?;
        list["items"].as_array()?.is_empty().then_some(())
    });
    let mut uids: Vec<String> = pods.keys().map(|n| uid(n)).collect();
    uids.push(flaky["metadata"]["uid"].as_str().unwrap().to_owned());
    uids.push(once_uid);
    eventually("sandboxes and volumes removed", WAIT, || {
        uids.iter()
            .all(|u| {
                cri.sandboxes_of(u).is_empty()
                    && !edge_dir.join("var/lib/kubelet/pods").join(u).exists()
            })
            .then_some(())
    });
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", edge.log());
}

#[test]
fn a_static_pod_runs_from_its_manifest_and_shows_as_a_mirror_pod() {
    let _turn = runtime_turn();
    const STATIC_NODE: &str = "edge-s";
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.runtime_edge_config(&edge_dir, STATIC_NODE, &[]);
    let manifests = edge_dir.join("etc/kubeedge/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let manifest = manifests.join("agent.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: agent, namespace: default}}\nspec:\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: agent, image: {image}, \
             imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}\n"
        ),
    )
    .unwrap();
    let mut edge = cloud.start_registered_edge(&config, STATIC_NODE);
    let cri = Cri::testenv();

    let name = format!("agent-{STATIC_NODE}");
    let mirror = eventually("the mirror pod Running", Duration::from_secs(60), || {
        let pod = cloud.get(&["pod", &name])?;
        (pod["status"]["phase"] == "Running").then_some(pod)
    });
    let annotations = &mirror["metadata"]["annotations"];
    let hash = annotations["kubernetes.io/config.mirror"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_ne!(mirror["metadata"]["uid"].as_str(), Some(hash.as_str()));
    let running = cri.running_containers_of(&hash);
    assert_eq!(running.len(), 1, "the static pod runs under its own UID");

    // Deleting the mirror does not stop the static pod; the mirror comes back.
    let out = cloud.kubectl(&["delete", "pod", &name, "--wait=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("a new mirror pod", Duration::from_secs(60), || {
        let pod = cloud.get(&["pod", &name])?;
        (pod["metadata"]["uid"] != mirror["metadata"]["uid"] && pod["status"]["phase"] == "Running")
            .then_some(())
    });
    assert_eq!(
        cri.running_containers_of(&hash),
        running,
        "the static pod was restarted"
    );

    // Without its manifest the pod stops and its mirror goes.
    std::fs::remove_file(&manifest).unwrap();
    eventually(
        "the static pod stopped and its mirror gone",
        Duration::from_secs(60),
        || {
            (cri.sandboxes_of(&hash).is_empty() && cloud.get(&["pod", &name]).is_none())
                .then_some(())
        },
    );
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", edge.log());
}
