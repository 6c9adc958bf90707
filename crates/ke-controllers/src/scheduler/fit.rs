//! Whether a pod fits a node, and how well: kube-scheduler's filter plugins that edge users
//! rely on (NodeUnschedulable, NodeName, NodeAffinity incl. nodeSelector, TaintToleration,
//! NodeResourcesFit, NodePorts) and the LeastAllocated score. Pure functions over the objects.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use crate::quantity;

/// What a pod asks of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub cpu_millis: i64,
    pub memory: i64,
    /// `(protocol, hostIP, hostPort)` of every container port with a host port.
    pub host_ports: Vec<(String, String, i32)>,
}

impl Request {
    /// Requests of the containers, or of the largest init container when that is larger, as
    /// kube-scheduler computes them.
    pub fn of(pod: &Pod) -> Request {
        let Some(spec) = &pod.spec else {
            return Request::default();
        };
        let requested = |c: &k8s_openapi::api::core::v1::Container,
                         what: &str,
                         parse: fn(&str) -> Option<i64>| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(what))
                .and_then(|q| parse(&q.0))
                .unwrap_or(0)
        };
        let sum = |what, parse| -> i64 {
            spec.containers
                .iter()
                .map(|c| requested(c, what, parse))
                .sum()
        };
        let max_init = |what, parse| -> i64 {
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| requested(c, what, parse))
                .max()
                .unwrap_or(0)
        };
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                p.host_port.filter(|hp| *hp > 0).map(|hp| {
                    (
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    )
                })
            })
            .collect();
        Request {
            cpu_millis: sum("cpu", quantity::cpu_millis).max(max_init("cpu", quantity::cpu_millis)),
            memory: sum("memory", quantity::units).max(max_init("memory", quantity::units)),
            host_ports,
        }
    }
}

/// kube-scheduler scores a pod that requests nothing as if it asked for this much, so pods
/// without requests still spread over nodes.
const NONZERO_CPU_MILLIS: i64 = 100;
const NONZERO_MEMORY: i64 = 200 << 20;

impl Request {
    fn scored_cpu(&self) -> i64 {
        if self.cpu_millis == 0 {
            NONZERO_CPU_MILLIS
        } else {
            self.cpu_millis
        }
    }

    fn scored_memory(&self) -> i64 {
        if self.memory == 0 {
            NONZERO_MEMORY
        } else {
            self.memory
        }
    }
}

/// What is already placed on a node.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu_millis: i64,
    pub memory: i64,
    pub pods: i64,
    pub host_ports: HashSet<(String, String, i32)>,
    /// The same sums with [`NONZERO_CPU_MILLIS`]/[`NONZERO_MEMORY`] for empty requests.
    scored_cpu: i64,
    scored_memory: i64,
}

impl Usage {
    pub fn add(&mut self, r: &Request) {
        self.cpu_millis += r.cpu_millis;
        self.memory += r.memory;
        self.scored_cpu += r.scored_cpu();
        self.scored_memory += r.scored_memory();
        self.pods += 1;
        self.host_ports.extend(r.host_ports.iter().cloned());
    }

    pub fn remove(&mut self, r: &Request) {
        self.cpu_millis -= r.cpu_millis;
        self.memory -= r.memory;
        self.scored_cpu -= r.scored_cpu();
        self.scored_memory -= r.scored_memory();
        self.pods -= 1;
        for p in &r.host_ports {
            self.host_ports.remove(p);
        }
    }
}

/// Why a node was filtered out, worded as kube-scheduler's status messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    Unschedulable,
    NodeName,
    Affinity,
    Taint(String),
    Insufficient(&'static str),
    Ports,
}

impl Unfit {
    pub fn reason(&self) -> String {
        match self {
            Unfit::Unschedulable => "node(s) were unschedulable".into(),
            Unfit::NodeName => "node(s) didn't match the requested node name".into(),
            Unfit::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Unfit::Taint(t) => format!("node(s) had untolerated taint {{{t}}}"),
            Unfit::Insufficient(what) => format!("Insufficient {what}"),
            Unfit::Ports => "node(s) didn't have free ports for the requested pod ports".into(),
        }
    }
}

/// A node's allocatable amounts, parsed once per node version (not once per pod and node);
/// `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: Option<i64>,
    pub memory: Option<i64>,
    pub pods: Option<i64>,
}

impl Capacity {
    pub fn of(node: &Node) -> Capacity {
        let get = |what: &str, parse: fn(&str) -> Option<i64>| {
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(what))
                .and_then(|q| parse(&q.0))
        };
        Capacity {
            cpu_millis: get("cpu", quantity::cpu_millis),
            memory: get("memory", quantity::units),
            pods: get("pods", quantity::units),
        }
    }
}

/// Filters `pod` against `node` with `usage` already on it.
pub fn check(
    pod: &Pod,
    req: &Request,
    node: &Node,
    cap: &Capacity,
    usage: &Usage,
) -> Result<(), Unfit> {
    // Called for every node for every pod: borrow, never clone.
    static NO_SPEC: std::sync::LazyLock<k8s_openapi::api::core::v1::PodSpec> =
        std::sync::LazyLock::new(Default::default);
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let spec = pod.spec.as_ref().unwrap_or(&NO_SPEC);
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Err(Unfit::Unschedulable);
        }
    }
    let labels = node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    if !spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return Err(Unfit::Affinity);
    }
    if let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| &s.node_selector_terms)
        && !terms.iter().any(|t| term_matches(t, labels, node_name))
    {
        return Err(Unfit::Affinity);
    }
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
        {
            let value = taint.value.clone().unwrap_or_default();
            return Err(Unfit::Taint(format!("{}: {value}", taint.key)));
        }
    }
    if let Some(max) = cap.pods
        && usage.pods + 1 > max
    {
        return Err(Unfit::Insufficient("pods"));
    }
    if let Some(max) = cap.cpu_millis
        && usage.cpu_millis + req.cpu_millis > max
    {
        return Err(Unfit::Insufficient("cpu"));
    }
    if let Some(max) = cap.memory
        && usage.memory + req.memory > max
    {
        return Err(Unfit::Insufficient("memory"));
    }
    let clash = |(proto, ip, port): &(String, String, i32)| {
        usage.host_ports.iter().any(|(p2, ip2, port2)| {
            p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    };
    if req.host_ports.iter().any(clash) {
        return Err(Unfit::Ports);
    }
    Ok(())
}

/// LeastAllocated: the mean free fraction of CPU and memory after placing the pod, 0–100.
pub fn score(req: &Request, cap: &Capacity, usage: &Usage) -> i64 {
    let free = |used: i64, want: i64, cap: Option<i64>| match cap {
        Some(cap) if cap > 0 => ((cap - used - want).max(0) * 100) / cap,
        _ => 100,
    };
    let cpu = free(usage.scored_cpu, req.scored_cpu(), cap.cpu_millis);
    let mem = free(usage.scored_memory, req.scored_memory(), cap.memory);
    (cpu + mem) / 2
}

/// One toleration against one taint, as `v1.Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    let operator = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        // An empty term matches no objects.
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement(r, Some(node_name)))
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match (r.operator.as_str(), value) {
        ("In", Some(v)) => values.iter().any(|x| x == v),
        ("In", None) => false,
        ("NotIn", Some(v)) => !values.iter().any(|x| x == v),
        ("NotIn", None) => true,
        ("Exists", v) => v.is_some(),
        ("DoesNotExist", v) => v.is_none(),
        ("Gt", Some(v)) => {
            matches!((number(v), values.first().and_then(|x| number(x))), (Some(a), Some(b)) if a > b)
        }
        ("Lt", Some(v)) => {
            matches!((number(v), values.first().and_then(|x| number(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn filters() {
        let edge = node(
            json!({"metadata": {"name": "e1", "labels": {"node-role.kubernetes.io/edge": "", "zone": "a"}},
            "spec": {"taints": [{"key": "edge", "value": "true", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "2"}}}),
        );
        let plain = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}}),
        );
        let req = Request::of(&plain);
        assert_eq!(req.cpu_millis, 500);
        assert_eq!(
            check(&plain, &req, &edge, &Capacity::of(&edge), &Usage::default()),
            Err(Unfit::Taint("edge: true".into()))
        );
        let tolerant = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}],
            "tolerations": [{"key": "edge", "operator": "Exists"}], "nodeSelector": {"zone": "a"}}}),
        );
        assert_eq!(
            check(
                &tolerant,
                &req,
                &edge,
                &Capacity::of(&edge),
                &Usage::default()
            ),
            Ok(())
        );
        let mut busy = Usage {
            cpu_millis: 1800,
            ..Usage::default()
        };
        assert_eq!(
            check(&tolerant, &req, &edge, &Capacity::of(&edge), &busy),
            Err(Unfit::Insufficient("cpu"))
        );
        busy.cpu_millis = 0;
        busy.pods = 2;
        assert_eq!(
            check(&tolerant, &req, &edge, &Capacity::of(&edge), &busy),
            Err(Unfit::Insufficient("pods"))
        );
        let wrong_zone = pod(
            json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["e2"]}]}]}}}}}),
        );
        assert_eq!(
            check(
                &wrong_zone,
                &Request::default(),
                &edge,
                &Capacity::of(&edge),
                &Usage::default()
            ),
            Err(Unfit::Affinity)
        );
        let by_name = pod(
            json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["e1"]}]}]}}}}}),
        );
        assert_eq!(
            check(
                &by_name,
                &Request::default(),
                &edge,
                &Capacity::of(&edge),
                &Usage::default()
            ),
            Ok(())
        );
        let ports = pod(
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "tolerations": [{"operator": "Exists"}]}}),
        );
        let preq = Request::of(&ports);
        let mut used = Usage::default();
        used.add(&preq);
        assert_eq!(
            check(&ports, &preq, &edge, &Capacity::of(&edge), &used),
            Err(Unfit::Ports)
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let n = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}}),
        );
        let req = Request {
            cpu_millis: 1000,
            memory: 1 << 30,
            host_ports: vec![],
        };
        let empty = score(&req, &Capacity::of(&n), &Usage::default());
        let mut busy = Usage::default();
        busy.add(&Request {
            cpu_millis: 2000,
            memory: 2 << 30,
            host_ports: vec![],
        });
        let half = score(&req, &Capacity::of(&n), &busy);
        assert!(empty > half, "{empty} {half}");
        assert_eq!(empty, 75);
        // Pods that request nothing still count, so they spread.
        let mut one = Usage::default();
        one.add(&Request::default());
        assert!(
            score(&Request::default(), &Capacity::of(&n), &Usage::default())
                > score(&Request::default(), &Capacity::of(&n), &one)
        );
    }
}
