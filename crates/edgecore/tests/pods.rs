//! Pods bound to an edge node run on the real containerd of the test environment, report their
//! status to the cloud, and are stopped and removed when deleted.
//!
//! Needs the test environment (`eval "$(scripts/testenv up)"`) and fails without it.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::{Cloud, Cri, WAIT, eventually, start_edge, testenv};

const NODE: &str = "edge-p";

fn manifests(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: default}}\ndata: {{mode: fast, level: '3'}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: default}}\nstringData: {{token: s3cret}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  nodeName: {NODE}\n  \
         containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    \
         command: [sh, -c, 'echo started; exec sleep 3600']\n    \
         envFrom:\n    - {{prefix: CFG_, configMapRef: {{name: settings}}}}\n    \
         env:\n    - {{name: GREETING, value: hello}}\n    \
         - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}}}\n    \
         - {{name: TOKEN, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}\n    \
         - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n    \
         - {{name: LABEL, value: '$(POD_NAME)-$(GREETING)-$$(KEPT)'}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: crasher, namespace: default}}\nspec:\n  nodeName: {NODE}\n  \
         containers:\n  - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo disk full > /dev/termination-log; exit 3']}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: unpullable, namespace: default}}\nspec:\n  nodeName: {NODE}\n  \
         containers:\n  - {{name: app, image: 'registry.invalid/nothing:0', imagePullPolicy: IfNotPresent}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: chatty, namespace: default}}\nspec:\n  nodeName: {NODE}\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, \
         command: [sh, -c, 'while true; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done']}}\n"
    )
}

#[test]
fn a_pod_runs_reports_running_and_is_removed_when_deleted() {
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let config = cloud.runtime_edge_config(
        &dir.path().join("edge"),
        NODE,
        &[
            (&["containerLogMaxSize"], "16Ki"),
            (&["containerLogMaxFiles"], "2"),
            (&["containerLogMonitorInterval"], "1s"),
        ],
    );
    let mut edge = cloud.start_registered_edge(&config, NODE);

    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, manifests("web", &image)).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pod: Value = eventually("web Running with a pod IP", Duration::from_secs(60), || {
        let pod = cloud.get(&["pod", "web"])?;
        let status = &pod["status"];
        (status["phase"] == "Running"
            && status["containerStatuses"][0]["ready"] == true
            && status["podIP"].is_string())
        .then_some(pod)
    });
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    assert!(
        pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{pod:#}"
    );
    let table = String::from_utf8_lossy(&cloud.kubectl(&["get", "pods"]).stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("Running")),
        "{table}"
    );

    let cri = Cri::testenv();
    assert_eq!(cri.sandboxes_of(&uid).len(), 1);
    let container = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    let (_, env) = cri.exec(&container, &["env"]);
    for expected in [
        "GREETING=hello",
        "MODE=fast",
        "TOKEN=s3cret",
        "POD_NAME=web",
        "CFG_mode=fast",
        "CFG_level=3",
        "LABEL=web-hello-$(KEPT)",
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from:\n{env}"
        );
    }

    // A container that keeps failing is restarted, then held back; its last exit and the
    // message it left are in its status.
    eventually(
        "crasher in CrashLoopBackOff",
        Duration::from_secs(60),
        || {
            let pod = cloud.get(&["pod", "crasher"])?;
            let status = &pod["status"]["containerStatuses"][0];
            let last = &status["lastState"]["terminated"];
            (status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && status["restartCount"].as_u64() >= Some(1)
                && last["exitCode"] == 3
                && last["message"] == "disk full\n")
                .then_some(())
        },
    );
    // What happened is in the pods' events, as `kubectl describe` shows them.
    eventually("kubelet's events", WAIT, || {
        let events = cloud.get(&["events"])?;
        let reasons = |pod: &str| -> Vec<String> {
            events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["involvedObject"]["name"] == pod && e["source"]["component"] == "kubelet"
                })
                .filter_map(|e| e["reason"].as_str().map(str::to_owned))
                .collect()
        };
        let (web, crasher) = (reasons("web"), reasons("crasher"));
        (["Created", "Started"]
            .iter()
            .all(|r| web.iter().any(|w| w == r))
            && crasher.iter().any(|r| r == "BackOff"))
        .then_some(())
    });
    let describe =
        String::from_utf8_lossy(&cloud.kubectl(&["describe", "pod", "web"]).stdout).into_owned();
    assert!(describe.contains("Started container app"), "{describe}");

    let out = cloud.kubectl(&["delete", "pod", "crasher", "--grace-period=0", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An image that cannot be pulled holds back only its own pod (the others above started
    // meanwhile), and says why.
    eventually(
        "unpullable in ImagePullBackOff",
        Duration::from_secs(60),
        || {
            let pod = cloud.get(&["pod", "unpullable"])?;
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            (waiting["reason"] == "ImagePullBackOff"
                && waiting["message"]
                    .as_str()?
                    .contains("registry.invalid/nothing:0"))
            .then_some(())
        },
    );
    let out = cloud.kubectl(&["delete", "pod", "unpullable", "--grace-period=0", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A chatty container's log is rotated: at most two files, neither far over the limit.
    let chatty = eventually("chatty Running", Duration::from_secs(60), || {
        let pod = cloud.get(&["pod", "chatty"])?;
        (pod["status"]["phase"] == "Running").then_some(pod)
    });
    let logs = dir.path().join(format!(
        "edge/var/log/pods/default_chatty_{}/app",
        chatty["metadata"]["uid"].as_str().unwrap()
    ));
    eventually("chatty's log rotated", WAIT, || {
        let files: Vec<_> = std::fs::read_dir(&logs).ok()?.flatten().collect();
        let rotated = files
            .iter()
            .any(|f| f.file_name().to_string_lossy().starts_with("0.log."));
        (rotated && files.len() <= 2).then_some(())
    });
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        let files: Vec<_> = std::fs::read_dir(&logs).unwrap().flatten().collect();
        assert!(files.len() <= 2, "{files:?}");
    }
    let out = cloud.kubectl(&["delete", "pod", "chatty", "--grace-period=0", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Offline reboot of edgecore: the cloud is down, edgecore is killed and restarted; it takes
    // the pod from its store and adopts the running container instead of restarting it.
    let container_id = pod["status"]["containerStatuses"][0]["containerID"].clone();
    let mut cloud = cloud;
    cloud.stop();
    edge.stop_with(Signal::SIGKILL, WAIT);
    let mut edge = start_edge(&config);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        edge.log()
            .contains("pod set loaded from the local store pods=1"),
        "{}",
        edge.log()
    );
    assert_eq!(cri.sandboxes_of(&uid).len(), 1);
    assert!(!edge.log().contains("pod not started"), "{}", edge.log());
    cloud.restart();
    eventually("web still Running, same UID and container", WAIT, || {
        let pod = cloud.get(&["pod", "web"])?;
        (pod["metadata"]["uid"] == uid.as_str()
            && pod["status"]["phase"] == "Running"
            && pod["status"]["containerStatuses"][0]["containerID"] == container_id
            && pod["status"]["containerStatuses"][0]["restartCount"] == 0)
            .then_some(())
    });

    // Deleted in the cloud: the edge stops it, confirms, and the pod is gone everywhere.
    let out = cloud.kubectl(&["delete", "pod", "web", "--grace-period=1", "--wait=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("web gone from the API", Duration::from_secs(60), || {
        cloud.get(&["pod", "web"]).is_none().then_some(())
    });
    eventually("web's sandbox removed", WAIT, || {
        cri.sandboxes_of(&uid).is_empty().then_some(())
    });
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{}", edge.log());
}
