//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns kube-apiserver's
//! printers produce for the built-in kinds, a CRD's `additionalPrinterColumns`, and
//! `Name`/`Created At` for everything else. Cells are computed from the stored JSON, like
//! kubectl would see them on a real cluster.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::jsonpath::Path;
use crate::meta;
use crate::registry::ResourceInfo;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(v: Option<&String>) -> Include {
        match v.map(String::as_str) {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Whether the client asked for a Table (`as=Table` in its preferred media type).
pub fn wants_table(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let first = accept.split(',').next().unwrap_or_default();
    first.split(';').any(|p| p.trim() == "as=Table")
        && first.split(';').any(|p| p.trim() == "g=meta.k8s.io")
}

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i64,
    description: &'static str,
}

const fn col(name: &'static str, type_: &'static str, priority: i64) -> Column {
    Column {
        name,
        type_,
        priority,
        description: "",
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    priority: 0,
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
const AGE: Column = col("Age", "string", 0);
const SELECTOR: Column = col("Selector", "string", 1);

/// The column definitions for `res`.
pub fn columns(res: &ResourceInfo) -> Vec<Value> {
    if res.is_custom() {
        let mut out = vec![column_json(&NAME, "name")];
        if res.columns.is_empty() {
            out.push(json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}));
        }
        for c in &res.columns {
            let description = if c.description.is_empty() {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c.json_path
                )
            } else {
                c.description.clone()
            };
            out.push(json!({
                "name": c.name, "type": c.type_, "format": c.format,
                "description": description, "priority": c.priority,
            }));
        }
        return out;
    }
    builtin_columns(res)
        .iter()
        .enumerate()
        .map(|(i, c)| column_json(c, if i == 0 { "name" } else { "" }))
        .collect()
}

fn column_json(c: &Column, format: &str) -> Value {
    json!({"name": c.name, "type": c.type_, "format": format, "description": c.description, "priority": c.priority})
}

fn builtin_columns(res: &ResourceInfo) -> Vec<Column> {
    // Workloads end with their containers, images and (mostly) selector, shown with `-o wide`.
    let workload = |mut c: Vec<Column>, selector: bool| {
        c.extend([col("Containers", "string", 1), col("Images", "string", 1)]);
        if selector {
            c.push(SELECTOR);
        }
        c
    };
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => vec![
            NAME,
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            AGE,
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        ("", "nodes") => vec![
            NAME,
            col("Status", "string", 0),
            col("Roles", "string", 0),
            AGE,
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        ("", "namespaces") => vec![NAME, col("Status", "string", 0), AGE],
        ("", "configmaps") => vec![NAME, col("Data", "integer", 0), AGE],
        ("", "secrets") => vec![
            NAME,
            col("Type", "string", 0),
            col("Data", "integer", 0),
            AGE,
        ],
        ("", "serviceaccounts") => vec![NAME, col("Secrets", "integer", 0), AGE],
        ("", "services") => vec![
            NAME,
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            AGE,
            col("Selector", "string", 1),
        ],
        ("", "endpoints") => vec![NAME, col("Endpoints", "string", 0), AGE],
        ("", "events") => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        ("coordination.k8s.io", "leases") => vec![NAME, col("Holder", "string", 0), AGE],
        ("apps", "deployments") => workload(
            vec![
                NAME,
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                AGE,
            ],
            true,
        ),
        ("apps", "replicasets") => workload(
            vec![
                NAME,
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                AGE,
            ],
            true,
        ),
        ("apps", "daemonsets") => workload(
            vec![
                NAME,
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Node Selector", "string", 0),
                AGE,
            ],
            true,
        ),
        ("apps", "statefulsets") => workload(vec![NAME, col("Ready", "string", 0), AGE], false),
        ("batch", "jobs") => workload(
            vec![
                NAME,
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                AGE,
            ],
            true,
        ),
        _ => vec![NAME, col("Created At", "date", 0)],
    }
}

/// One object's cells, in column order.
pub fn cells(res: &ResourceInfo, obj: &Value, now: SystemTime) -> Vec<Value> {
    let name = json!(text(obj, "/metadata/name"));
    let age = json!(age(obj, now));
    if res.is_custom() {
        let mut out = vec![name];
        if res.columns.is_empty() {
            out.push(age);
        }
        for c in &res.columns {
            out.push(custom_cell(obj, &c.json_path, &c.type_, now));
        }
        return out;
    }
    let spec = &obj["spec"];
    let status = &obj["status"];
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => pod_cells(obj, name, age),
        ("", "nodes") => {
            let addr = |t: &str| {
                status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_owned()
            };
            let info = &status["nodeInfo"];
            vec![
                name,
                json!(node_status(obj)),
                json!(node_roles(obj)),
                age,
                json!(info["kubeletVersion"].as_str().unwrap_or_default()),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(info["osImage"].as_str().unwrap_or("<unknown>")),
                json!(info["kernelVersion"].as_str().unwrap_or("<unknown>")),
                json!(
                    info["containerRuntimeVersion"]
                        .as_str()
                        .unwrap_or("<unknown>")
                ),
            ]
        }
        ("", "namespaces") => vec![
            name,
            json!(status["phase"].as_str().unwrap_or_default()),
            age,
        ],
        ("", "configmaps") => vec![
            name,
            json!(len(&obj["data"]) + len(&obj["binaryData"])),
            age,
        ],
        ("", "secrets") => vec![
            name,
            json!(obj["type"].as_str().unwrap_or_default()),
            json!(len(&obj["data"])),
            age,
        ],
        ("", "serviceaccounts") => vec![name, json!(len(&obj["secrets"])), age],
        ("", "services") => vec![
            name,
            json!(spec["type"].as_str().unwrap_or("ClusterIP")),
            json!(
                spec["clusterIP"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("<none>")
            ),
            json!(external_ips(obj)),
            json!(service_ports(spec)),
            age,
            json!(selector(&spec["selector"])),
        ],
        ("", "endpoints") => vec![name, json!(endpoints(obj)), age],
        ("", "events") => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| obj.pointer(p).and_then(Value::as_str))
            .map(|t| since(t, now))
            .unwrap_or_else(|| "<unknown>".into());
            let involved = &obj["involvedObject"];
            vec![
                json!(last),
                json!(text(obj, "/type")),
                json!(text(obj, "/reason")),
                json!(format!(
                    "{}/{}",
                    involved["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    involved["name"].as_str().unwrap_or_default()
                )),
                json!(text(obj, "/message")),
            ]
        }
        ("coordination.k8s.io", "leases") => vec![
            name,
            json!(spec["holderIdentity"].as_str().unwrap_or("<unknown>")),
            age,
        ],
        ("apps", "deployments") => {
            let mut c = vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(int(&status["updatedReplicas"])),
                json!(int(&status["availableReplicas"])),
                age,
            ];
            workload_tail(&mut c, spec);
            c
        }
        ("apps", "replicasets") => {
            let mut c = vec![
                name,
                json!(int(&spec["replicas"])),
                json!(int(&status["replicas"])),
                json!(int(&status["readyReplicas"])),
                age,
            ];
            workload_tail(&mut c, spec);
            c
        }
        ("apps", "daemonsets") => {
            let mut c = vec![
                name,
                json!(int(&status["desiredNumberScheduled"])),
                json!(int(&status["currentNumberScheduled"])),
                json!(int(&status["numberReady"])),
                json!(int(&status["updatedNumberScheduled"])),
                json!(int(&status["numberAvailable"])),
                json!(selector(&spec["template"]["spec"]["nodeSelector"])),
                age,
            ];
            workload_tail(&mut c, spec);
            c
        }
        ("apps", "statefulsets") => {
            let mut c = vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                age,
            ];
            c.extend(template_columns(spec));
            c
        }
        ("batch", "jobs") => {
            let mut c = vec![
                name,
                json!(job_status(obj)),
                json!(format!(
                    "{}/{}",
                    int(&status["succeeded"]),
                    spec["completions"]
                        .as_i64()
                        .map_or("1".to_owned(), |n| n.to_string())
                )),
                json!(job_duration(obj, now)),
                age,
            ];
            workload_tail(&mut c, spec);
            c
        }
        _ => vec![
            name,
            json!(
                obj.pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null)
            ),
        ],
    }
}

/// The Table of `items` (a list's `metadata` goes in as `list_meta`).
pub fn render(res: &ResourceInfo, items: &[Value], list_meta: Value, include: Include) -> Value {
    let now = SystemTime::now();
    let rows: Vec<Value> = items.iter().map(|o| row(res, o, include, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}

fn row(res: &ResourceInfo, obj: &Value, include: Include, now: SystemTime) -> Value {
    let mut r = json!({ "cells": cells(res, obj, now) });
    match include {
        Include::None => {}
        Include::Object => r["object"] = obj.clone(),
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
    }
    r
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn len(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

fn age(obj: &Value, now: SystemTime) -> String {
    obj.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .map(|t| since(t, now))
        .unwrap_or_else(|| "<unknown>".into())
}

fn since(timestamp: &str, now: SystemTime) -> String {
    let Some(t) = meta::parse_rfc3339(timestamp) else {
        return "<invalid>".into();
    };
    match now.duration_since(t) {
        Ok(d) => human_duration(d.as_secs() as i64),
        Err(e) => human_duration(-(e.duration().as_secs() as i64)),
    }
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `k=v,k2=v2` (sorted, as Go prints a label map), or `<none>`.
fn selector(v: &Value) -> String {
    let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// The wide columns of a workload: its containers, images and selector.
fn workload_tail(cells: &mut Vec<Value>, spec: &Value) {
    cells.extend(template_columns(spec));
    cells.push(json!(selector(&spec["selector"]["matchLabels"])));
}

fn template_columns(spec: &Value) -> [Value; 2] {
    let containers = spec["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let join = |field: &str| {
        containers
            .iter()
            .map(|c| c[field].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    [json!(join("name")), json!(join("image"))]
}

/// kubectl's pod STATUS column: the most telling reason among phase, pod reason, and container
/// states.
fn pod_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let status = &obj["status"];
    let statuses: Vec<&Value> = status["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let total = len(&spec["containers"]);
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let mut restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
    let mut reason = text(obj, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = status["phase"].as_str().unwrap_or("Pending").to_owned();
    }
    let inits: Vec<&Value> = status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        restarts += int(&c["restartCount"]);
        let state = &c["state"];
        if state["terminated"]["exitCode"].as_i64() == Some(0) {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            format!("Init:{r}")
        } else if state["terminated"].is_object() {
            format!("Init:ExitCode:{}", int(&state["terminated"]["exitCode"]))
        } else if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{}", len(&spec["initContainers"]))
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in statuses.iter().rev() {
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_owned();
            } else if let Some(r) = state["terminated"]["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                reason = r.to_owned();
            } else if state["terminated"].is_object() {
                let t = &state["terminated"];
                reason = match t["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", int(&t["exitCode"])),
                };
            } else if c["ready"] == true && state["running"].is_object() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready_condition = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready_condition {
                "Running"
            } else {
                "NotReady"
            }
            .into();
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if status["reason"] == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .into();
    }
    let none = |v: &Value| json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>"));
    let gates = len(&spec["readinessGates"]);
    let gates = if gates == 0 {
        "<none>".to_owned()
    } else {
        let true_gates = spec["readinessGates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{true_gates}/{gates}")
    };
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        age,
        none(&status["podIP"]),
        none(&spec["nodeName"]),
        none(&status["nominatedNodeName"]),
        json!(gates),
    ]
}

fn node_status(obj: &Value) -> String {
    let ready = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut s = match ready.map(|c| c["status"].as_str().unwrap_or_default()) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if obj["spec"]["unschedulable"] == true {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(obj: &Value) -> String {
    let labels = obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut roles: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    (k == "kubernetes.io/role").then(|| v.as_str().unwrap_or_default().to_owned())
                })
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn external_ips(svc: &Value) -> String {
    let mut ips: Vec<String> = svc["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if svc["spec"]["type"] == "LoadBalancer" {
        for ing in svc["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(ip) = ing["ip"].as_str().or(ing["hostname"].as_str()) {
                ips.push(ip.to_owned());
            }
        }
        if ips.is_empty() {
            return "<pending>".into();
        }
    }
    if svc["spec"]["type"] == "ExternalName" {
        return svc["spec"]["externalName"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned();
    }
    if ips.is_empty() {
        "<none>".into()
    } else {
        ips.join(",")
    }
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", int(&p["port"])),
                _ => format!("{}/{proto}", int(&p["port"])),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn endpoints(ep: &Value) -> String {
    let mut list = Vec::new();
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| int(&p["port"]))
            .collect();
        for addr in subset["addresses"].as_array().into_iter().flatten() {
            let ip = addr["ip"].as_str().unwrap_or_default();
            if ports.is_empty() {
                list.push(ip.to_owned());
            }
            for port in &ports {
                list.push(format!("{ip}:{port}"));
            }
        }
    }
    if list.is_empty() {
        return "<none>".into();
    }
    // kubectl shows the first three and a count of the rest.
    let more = list.len().saturating_sub(3);
    list.truncate(3);
    let mut s = list.join(",");
    if more > 0 {
        s.push_str(&format!(" + {more} more..."));
    }
    s
}

fn job_status(job: &Value) -> &'static str {
    let conds: Vec<&Value> = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_duration(job: &Value, now: SystemTime) -> String {
    let Some(start) = job["status"]["startTime"]
        .as_str()
        .and_then(meta::parse_rfc3339)
    else {
        return String::new();
    };
    let end = job["status"]["completionTime"]
        .as_str()
        .and_then(meta::parse_rfc3339)
        .unwrap_or(now);
    human_duration(
        end.duration_since(start)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// apiextensions' `cellForJSONValue`.
fn custom_cell(obj: &Value, json_path: &str, type_: &str, now: SystemTime) -> Value {
    let Some(path) = Path::parse(json_path) else {
        return Value::Null;
    };
    let found = path.select(obj);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match type_ {
        "integer" => first.as_i64().map_or(Value::Null, |n| json!(n)),
        "number" => first.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => first.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => match first.as_str() {
            Some(t) if meta::parse_rfc3339(t).is_some() => json!(since(t, now)),
            _ => json!("<invalid>"),
        },
        _ => {
            let parts: Vec<String> = found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Catalog;
    use std::time::Duration;

    #[test]
    fn human_durations_match_apimachinery() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (30 * 86_400, "30d"),
            (800 * 86_400, "2y70d"),
            (3650 * 86_400, "10y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_rows_read_like_kubectl() {
        let pods = Catalog::builtin().builtin_resource("", "pods");
        let now = meta::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let c = cells(&pods, &pod, now);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3"),
                json!("10m"),
                json!("10.0.0.5"),
                json!("edge-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let table = render(
            &pods,
            &[pod],
            json!({"resourceVersion": "7"}),
            Include::Metadata,
        );
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
    }

    #[test]
    fn nodes_and_workloads() {
        let c = Catalog::builtin();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.32.10-kubeedge"}}});
        let cells_ = cells(&c.builtin_resource("", "nodes"), &node, now);
        assert_eq!(cells_[1], "NotReady,SchedulingDisabled");
        assert_eq!(cells_[2], "agent,edge");
        assert_eq!(cells_[4], "v1.32.10-kubeedge");
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
            "template": {"spec": {"containers": [{"name": "a", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cells_ = cells(&c.builtin_resource("apps", "deployments"), &d, now);
        assert_eq!(&cells_[1..4], &[json!("2/3"), json!(3), json!(2)]);
        assert_eq!(
            &cells_[5..],
            &[json!("a"), json!("busybox"), json!("app=x")]
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let cells_ = cells(&c.builtin_resource("", "services"), &svc, now);
        assert_eq!(cells_[4], "80:30080/TCP,53/UDP");
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
    }
}
