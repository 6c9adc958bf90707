//! DaemonSets: one pod on every node the template fits (node selector, required affinity,
//! taints), placed by the scheduler through a `metadata.name` node-affinity term as
//! kube-controller-manager does; pods on nodes that no longer fit are deleted; a changed
//! template rolls node by node within `maxUnavailable`. Edge users deploy per-node agents this
//! way.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common::{controller_ref, is_active, is_available, is_ready, template_hash};
use crate::replicaset::owned_pods;
use crate::scheduler::fit::{self, Request, Usage};
use crate::{Error, RESYNC};

/// The label kube-controller-manager puts the template revision in.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Only daemon pods carry this one (set from the DaemonSet's generation, as upstream does).
const GENERATION_LABEL: &str = "pod-template-generation";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, watcher::Config::default().labels(GENERATION_LABEL))
        // A node that comes, goes or changes labels or taints may change where pods belong.
        .watches(nodes, watcher::Config::default(), move |_node| {
            store
                .state()
                .into_iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The tolerations every daemon pod gets, so node trouble does not evict it.
fn daemon_tolerations() -> Vec<Toleration> {
    [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .into_iter()
    .map(|(key, effect)| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    })
    .collect()
}

/// The pod the DaemonSet wants on `node`.
fn pod_for(ds: &DaemonSet, node: &str, revision: &str) -> Result<Pod, Error> {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": template.metadata.clone().unwrap_or_default(),
        "spec": template.spec.clone().unwrap_or_default(),
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let meta = &mut pod.metadata;
    meta.name = None;
    meta.generate_name = Some(format!("{}-", ds.name_any()));
    meta.namespace = ds.namespace();
    meta.owner_references = Some(vec![controller_ref(ds)]);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), revision.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations() {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    let affinity: k8s_openapi::api::core::v1::Affinity = serde_json::from_value(json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        ]}}
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    spec.affinity = Some(affinity);
    Ok(pod)
}

fn node_of(pod: &Pod) -> Option<String> {
    // Bound pods name their node; pending ones name it in the affinity term we wrote.
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            pod.spec
                .as_ref()?
                .affinity
                .as_ref()?
                .node_affinity
                .as_ref()?
                .required_during_scheduling_ignored_during_execution
                .as_ref()?
                .node_selector_terms
                .iter()
                .flat_map(|t| t.match_fields.iter().flatten())
                .find(|r| r.key == "metadata.name")
                .and_then(|r| r.values.as_ref()?.first().cloned())
        })
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let revision = template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let nodes: Vec<Node> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods: Vec<Pod> = owned_pods(client, ds.as_ref(), Some(&spec.selector))
        .await?
        .into_iter()
        .filter(is_active)
        .collect();
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods {
        if let Some(n) = node_of(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    // Would the template's pod be allowed on the node? (Resources are the scheduler's call.)
    let probe = pod_for(&ds, "", &revision)?;
    let eligible: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            let mut p = probe.clone();
            if let Some(s) = p.spec.as_mut() {
                s.affinity = None;
            }
            let unlimited = Usage::default();
            !matches!(
                fit::check(
                    &p,
                    &Request::default(),
                    n,
                    &fit::Capacity::default(),
                    &unlimited
                ),
                Err(fit::Unfit::Affinity | fit::Unfit::Taint(_) | fit::Unfit::Unschedulable)
            )
        })
        .collect();
    let eligible_names: Vec<String> = eligible.iter().map(|n| n.name_any()).collect();

    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    let max_unavailable = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref())
        .map_or(1, |v| match v {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
                i32::try_from((pct * eligible_names.len() as i64 + 99) / 100)
                    .unwrap_or(1)
                    .max(1)
            }
        })
        .max(1);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut unavailable = eligible_names
        .iter()
        .filter(|n| {
            !by_node
                .get(*n)
                .is_some_and(|ps| ps.iter().any(|p| is_available(p, min_ready)))
        })
        .count() as i32;

    for name in &eligible_names {
        let here = by_node.get(name).cloned().unwrap_or_default();
        if here.is_empty() {
            pods_api
                .create(&PostParams::default(), &pod_for(&ds, name, &revision)?)
                .await?;
            continue;
        }
        // More than one pod on a node: keep the newest-revision, oldest one.
        let (current, stale): (Vec<&Pod>, Vec<&Pod>) = here
            .iter()
            .partition(|p| p.labels().get(REVISION_LABEL) == Some(&revision));
        if current.len() > 1 {
            for p in &current[1..] {
                delete(&pods_api, p).await?;
            }
        }
        if !current.is_empty() {
            for p in stale {
                delete(&pods_api, p).await?;
            }
        } else if rolling {
            // Only old pods here: replace one, as far as the unavailability budget allows.
            let old_available = stale.iter().any(|p| is_available(p, min_ready));
            if !old_available || unavailable < max_unavailable {
                for p in stale {
                    delete(&pods_api, p).await?;
                }
                if old_available {
                    unavailable += 1;
                }
            }
        }
    }
    for (node, ps) in &by_node {
        if !eligible_names.contains(node) {
            for p in ps {
                delete(&pods_api, p).await?;
            }
        }
    }

    let on_eligible: Vec<&Pod> = eligible_names
        .iter()
        .filter_map(|n| by_node.get(n))
        .flatten()
        .collect();
    let scheduled: Vec<&Pod> = on_eligible
        .iter()
        .copied()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        })
        .collect();
    let status = json!({
        "desiredNumberScheduled": eligible_names.len(),
        "currentNumberScheduled": eligible_names.iter().filter(|n| by_node.contains_key(*n)).count(),
        "numberMisscheduled": by_node.keys().filter(|n| !eligible_names.contains(n)).count(),
        "numberReady": scheduled.iter().filter(|p| is_ready(p)).count(),
        "numberAvailable": scheduled.iter().filter(|p| is_available(p, min_ready)).count(),
        "numberUnavailable": eligible_names.len().saturating_sub(scheduled.iter().filter(|p| is_available(p, min_ready)).count()),
        "updatedNumberScheduled": on_eligible.iter().filter(|p| p.labels().get(REVISION_LABEL) == Some(&revision)).count(),
        "observedGeneration": ds.metadata.generation,
    });
    let current = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    if !crate::same_fields(&current, &status) {
        Api::<DaemonSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
