//! Server-side defaults, as kube-apiserver's `SetDefaults_*` functions (and the admission plugins
//! every cluster runs) fill them on every write. Clients rely on them: `kubectl describe` and
//! `get` print them, controllers compare templates that contain them, and the edge's pod runner
//! reads `restartPolicy` and `imagePullPolicy` without guessing.
//!
//! A default only fills a field that is absent; a value the client sent is never changed.

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// Fills the defaults of `obj`, a `res` object.
pub fn apply(res: &ResourceInfo, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => {
            if let Some(spec) = object(root, "spec") {
                pod_spec(spec);
                pod_admission(spec);
            }
        }
        ("", "secrets") => {
            root.entry("type").or_insert_with(|| json!("Opaque"));
        }
        ("", "services") => {
            if let Some(spec) = object(root, "spec") {
                service_spec(spec);
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = object(root, "spec") {
                set(spec, "replicas", json!(1));
                set(spec, "revisionHistoryLimit", json!(10));
                set(spec, "progressDeadlineSeconds", json!(600));
                rolling_update(spec, "strategy", |rolling| {
                    set(rolling, "maxUnavailable", json!("25%"));
                    set(rolling, "maxSurge", json!("25%"));
                });
                template(spec);
            }
        }
        ("apps", "replicasets") => {
            if let Some(spec) = object(root, "spec") {
                set(spec, "replicas", json!(1));
                template(spec);
            }
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = object(root, "spec") {
                set(spec, "revisionHistoryLimit", json!(10));
                rolling_update(spec, "updateStrategy", |rolling| {
                    set(rolling, "maxUnavailable", json!(1));
                    set(rolling, "maxSurge", json!(0));
                });
                template(spec);
            }
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = object(root, "spec") {
                set(spec, "replicas", json!(1));
                set(spec, "revisionHistoryLimit", json!(10));
                set(spec, "podManagementPolicy", json!("OrderedReady"));
                rolling_update(spec, "updateStrategy", |rolling| {
                    set(rolling, "partition", json!(0));
                });
                set(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                template(spec);
            }
        }
        ("batch", "jobs") => {
            if let Some(spec) = object(root, "spec") {
                set(spec, "parallelism", json!(1));
                set(spec, "completions", json!(1));
                set(spec, "backoffLimit", json!(6));
                set(spec, "completionMode", json!("NonIndexed"));
                set(spec, "suspend", json!(false));
                set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
                set(spec, "manualSelector", json!(false));
                template(spec);
            }
        }
        _ => {}
    }
}

fn object<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// `m[key]` as an object, created when absent; `None` when it is present but not an object
/// (validation reports that, and defaulting must not hide it).
fn entry_object<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    m.entry(key).or_insert_with(|| json!({})).as_object_mut()
}

/// `spec[field]` defaults to `{type: RollingUpdate}`, and a RollingUpdate strategy's
/// `rollingUpdate` gets `fill`.
fn rolling_update(
    spec: &mut Map<String, Value>,
    field: &str,
    fill: impl FnOnce(&mut Map<String, Value>),
) {
    let Some(strategy) = entry_object(spec, field) else {
        return;
    };
    set(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate"
        && let Some(rolling) = entry_object(strategy, "rollingUpdate")
    {
        fill(rolling);
    }
}

fn set(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.entry(key).or_insert(value);
}

/// The pod template of a workload: only `SetDefaults` apply there, not admission.
fn template(spec: &mut Map<String, Value>) {
    if let Some(pod) = object(spec, "template").and_then(|t| object(t, "spec")) {
        pod_spec(pod);
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            container(c);
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let policy = match c.get("image").and_then(Value::as_str) {
        Some(image) if has_fixed_tag(image) => "IfNotPresent",
        _ => "Always",
    };
    set(c, "imagePullPolicy", json!(policy));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    for port in c
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        set(port, "protocol", json!("TCP"));
    }
}

/// An image pinned by digest, or by a tag other than `latest`, is pulled only if missing.
fn has_fixed_tag(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    matches!(last.rsplit_once(':'), Some((_, tag)) if tag != "latest")
}

/// What the admission plugins of every cluster add to a pod: the ServiceAccount, priority, and
/// DefaultTolerationSeconds.
fn pod_admission(spec: &mut Map<String, Value>) {
    set(spec, "serviceAccountName", json!("default"));
    let sa = spec["serviceAccountName"].clone();
    set(spec, "serviceAccount", sa);
    set(spec, "priority", json!(0));
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(list) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                (t["key"] == key || t["operator"] == "Exists" && t.get("key").is_none())
                    && (t["effect"] == "NoExecute" || t.get("effect").is_none())
            });
            if !tolerated {
                list.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }));
            }
        }
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    set(spec, "internalTrafficPolicy", json!("Cluster"));
    if spec["type"] != "ExternalName" {
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        set(port, "protocol", json!("TCP"));
        if let Some(p) = port.get("port").cloned() {
            set(port, "targetPort", p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Catalog;

    fn defaulted(plural: &str, group: &str, mut obj: Value) -> Value {
        let res = Catalog::builtin().builtin_resource(group, plural);
        apply(&res, &mut obj);
        obj
    }

    #[test]
    fn pods_get_kubelet_visible_defaults_without_overriding() {
        let pod = defaulted(
            "pods",
            "",
            json!({"spec": {"restartPolicy": "Never", "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "registry:5000/busybox:1.36", "ports": [{"containerPort": 80}]},
                {"name": "c", "image": "busybox:latest", "imagePullPolicy": "Never"}
            ]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][2]["imagePullPolicy"], "Never");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        // Idempotent: a second write adds nothing.
        assert_eq!(defaulted("pods", "", pod.clone()), pod);
    }

    #[test]
    fn workloads_default_their_strategy_and_template() {
        let d = defaulted(
            "deployments",
            "apps",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(
            d["spec"]["template"]["spec"]
                .get("serviceAccountName")
                .is_none()
        );
        let recreate = defaulted(
            "deployments",
            "apps",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
        let svc = defaulted("services", "", json!({"spec": {"ports": [{"port": 80}]}}));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn malformed_fields_are_left_for_validation() {
        let d = defaulted("deployments", "apps", json!({"spec": {"strategy": "fast"}}));
        assert_eq!(d["spec"]["strategy"], "fast");
    }
}
