//! Node lifecycle with edge autonomy. A node whose Lease (`kube-node-lease/<node>`) has not been
//! renewed for the grace period gets its Ready condition set to `Unknown` ("Kubelet stopped
//! posting node status.") and the standard taints (`node.kubernetes.io/unreachable` NoSchedule
//! and NoExecute); a node that reports `Ready=False` gets `node.kubernetes.io/not-ready`. When
//! the node renews its lease and reports Ready again, the taints go.
//!
//! Pods are never evicted from edge nodes (label `node-role.kubernetes.io/edge`): an edge node
//! is *expected* to lose its link and keep running its pods, so when it returns it finds them
//! with the same UIDs. On other nodes, pods that do not tolerate the NoExecute taint are
//! deleted once their `tolerationSeconds` run out, as kube-controller-manager's taint manager
//! does. (On a real cluster, cloudcore gets the same outcome by giving pods bound to edge nodes
//! tolerations for these taints without a `tolerationSeconds`.)

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common::now;
use crate::scheduler::fit::tolerates;

pub const EDGE_ROLE: &str = "node-role.kubernetes.io/edge";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// How the controller watches nodes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--node-monitor-grace-period`: a lease older than this makes the node Unknown.
    pub grace: Duration,
    /// How often nodes are checked.
    pub period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: Duration::from_secs(40),
            period: Duration::from_secs(5),
        }
    }
}

pub async fn run(client: Client, settings: Settings) {
    let mut tick = tokio::time::interval(settings.period);
    loop {
        tick.tick().await;
        if let Err(e) = check_all(&client, settings).await {
            tracing::debug!(error = %e, "node lifecycle pass failed");
        }
    }
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn is_edge(node: &Node) -> bool {
    node.labels().contains_key(EDGE_ROLE)
}

async fn check_all(client: &Client, settings: Settings) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewals: BTreeMap<String, k8s_openapi::chrono::DateTime<Utc>> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|l| {
            let t = l.spec.as_ref()?.renew_time.as_ref()?.0;
            Some((l.name_any(), t))
        })
        .collect();
    for node in nodes.list(&ListParams::default()).await?.items {
        let name = node.name_any();
        let heartbeat = renewals.get(&name).copied().or_else(|| {
            node.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?
                .last_heartbeat_time
                .as_ref()
                .map(|t| t.0)
        });
        let stale = heartbeat
            .is_none_or(|t| (Utc::now() - t).to_std().unwrap_or_default() > settings.grace);
        let ready = ready_status(&node);
        if stale && ready != Some("Unknown") {
            mark_unknown(&nodes, &node).await?;
        }
        let want: Vec<(&str, &str)> = match (stale, ready) {
            (true, _) => vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
            (false, Some("True")) => vec![],
            (false, _) => vec![(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
        };
        set_taints(&nodes, &node, &want).await?;
        if !want.is_empty() && !is_edge(&node) {
            evict(client, &node).await?;
        }
    }
    Ok(())
}

async fn mark_unknown(nodes: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = now();
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let message = "Kubelet stopped posting node status.";
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some(message.into());
                c.last_transition_time = Some(now.clone());
            }
            None if type_ == "Ready" => {
                conditions.push(k8s_openapi::api::core::v1::NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(now.clone()),
                    last_heartbeat_time: None,
                })
            }
            None => {}
        }
    }
    let patch = json!({"status": {"conditions": conditions}});
    nodes
        .patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await?;
    tracing::info!(node = %node.name_any(), edge = is_edge(node), "node stopped renewing its lease: Unknown");
    Ok(())
}

/// Makes the node's lifecycle taints exactly `want`, leaving other taints alone.
async fn set_taints(
    nodes: &Api<Node>,
    node: &Node,
    want: &[(&str, &str)],
) -> Result<(), kube::Error> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ours = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut next: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
    for (key, effect) in want {
        let kept = current
            .iter()
            .find(|t| t.key == *key && t.effect == *effect)
            .cloned();
        next.push(kept.unwrap_or_else(|| Taint {
            key: (*key).into(),
            effect: (*effect).into(),
            time_added: Some(now()),
            value: None,
        }));
    }
    let same = next.len() == current.len()
        && next.iter().all(|t| {
            current
                .iter()
                .any(|c| c.key == t.key && c.effect == t.effect)
        });
    if same {
        return Ok(());
    }
    let patch =
        json!({"spec": {"taints": next}, "metadata": {"resourceVersion": node.resource_version()}});
    match nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: the next pass sees the new version.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The taint manager, for nodes that are not edge nodes.
async fn evict(client: &Client, node: &Node) -> Result<(), kube::Error> {
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name_any())))
        .await?;
    for pod in on_node
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let evict_now = taints.iter().any(|taint| {
            let since = taint.time_added.as_ref().map_or(Utc::now(), |t| t.0);
            match tolerations.iter().find(|t| tolerates(t, taint)) {
                None => true,
                Some(t) => t
                    .toleration_seconds
                    .is_some_and(|s| (Utc::now() - since).num_seconds() >= s),
            }
        });
        if evict_now {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %pod.name_any(), node = %node.name_any(), "evicted from an unreachable node")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
