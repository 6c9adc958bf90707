//! ReplicaSets: keep `spec.replicas` active pods that match the selector and carry this
//! ReplicaSet's controller reference, and report what exists in `status`.
//!
//! Level-triggered: every reconcile lists the pods afresh from the API server (never a cache
//! that may lag), so a restarted controller or a missed event cannot lead to duplicates; a
//! create or delete only happens for the difference it just observed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common::{
    controller_ref, controller_uid, is_active, is_available, is_ready, selector_matches,
    selector_query,
};
use crate::{Error, RESYNC};

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The pods a controller with `selector` and `uid` owns in `ns`, adopting matching orphans.
pub(crate) async fn owned_pods<K>(
    client: &Client,
    owner: &K,
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Vec<Pod>, Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let listed = api
        .list(&ListParams::default().labels(&selector_query(selector)))
        .await?;
    let mut owned = Vec::new();
    for pod in listed.items {
        if !selector_matches(
            selector,
            pod.metadata.labels.as_ref().unwrap_or(&Default::default()),
        ) {
            continue;
        }
        match controller_uid(&pod) {
            Some(u) if u == uid => owned.push(pod),
            Some(_) => {}
            None if pod.metadata.deletion_timestamp.is_none()
                && owner.meta().deletion_timestamp.is_none() =>
            {
                // An orphan that matches: adopt it, as kube-controller-manager does.
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(owner));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => tracing::debug!(pod = %pod.name_any(), error = %e, "adoption failed"),
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// Which surplus pods go first: unscheduled before scheduled, pending before running, not
/// ready before ready, newest before oldest (kube-controller-manager's ranking).
pub(crate) fn deletion_rank(pod: &Pod) -> (bool, bool, bool, std::cmp::Reverse<String>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let running = crate::common::phase(pod) == "Running";
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_rfc3339())
        .unwrap_or_default();
    (
        scheduled,
        running,
        is_ready(pod),
        std::cmp::Reverse(created),
    )
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owned = owned_pods(client, rs.as_ref(), Some(&spec.selector)).await?;
    let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
    if active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        for _ in active.len()..want {
            let mut meta = template.metadata.clone().unwrap_or_default();
            meta.name = None;
            meta.generate_name = Some(format!("{}-", rs.name_any()));
            meta.namespace = Some(ns.clone());
            meta.owner_references = Some(vec![controller_ref(rs.as_ref())]);
            let pod = Pod {
                metadata: meta,
                spec: template.spec.clone(),
                status: None,
            };
            active.push(pods_api.create(&PostParams::default(), &pod).await?);
        }
    } else if active.len() > want {
        active.sort_by_key(deletion_rank);
        for pod in active.drain(..active.len() - want) {
            match pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let labels_match = |p: &&Pod| {
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    };
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": active.iter().filter(labels_match).count(),
        "readyReplicas": active.iter().filter(|p| is_ready(p)).count(),
        "availableReplicas": active.iter().filter(|p| is_available(p, min_ready)).count(),
        "observedGeneration": rs.metadata.generation,
    });
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    if !crate::same_fields(&current, &status) {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    // Availability after minReadySeconds needs a look without an event to trigger it.
    Ok(if min_ready > 0 {
        Action::requeue(Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)))
    } else {
        Action::requeue(RESYNC)
    })
}
