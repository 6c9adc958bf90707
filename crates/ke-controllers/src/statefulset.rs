//! StatefulSets: pods with stable names `<set>-0 … <set>-N-1` (and hostnames under the
//! governing service), created in order and only once the previous one is Running and Ready
//! (`OrderedReady`, or all at once with `Parallel`), removed from the highest ordinal down, and
//! updated from the highest ordinal down one at a time (`RollingUpdate`, honouring
//! `partition`). Revisions are template hashes. Volume claim templates are not provisioned:
//! there is no volume support in the embedded control plane.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common::{
    controller_ref, controller_uid, is_active, is_available, is_ready, phase, template_hash,
};
use crate::{Error, RESYNC};

pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // Only stateful pods, which carry their stable name as a label.
    let stateful_pods = watcher::Config::default().labels(POD_NAME_LABEL);
    Controller::new(sets, watcher::Config::default())
        .owns(pods, stateful_pods)
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn ordinal(set: &str, pod: &Pod) -> Option<usize> {
    pod.name_any()
        .strip_prefix(&format!("{set}-"))?
        .parse()
        .ok()
}

fn pod_for(sts: &StatefulSet, i: usize, revision: &str) -> Result<Pod, Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let name = format!("{}-{i}", sts.name_any());
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": template.metadata.clone().unwrap_or_default(),
        "spec": template.spec.clone().unwrap_or_default(),
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    pod.metadata.name = Some(name.clone());
    pod.metadata.generate_name = None;
    pod.metadata.namespace = sts.namespace();
    pod.metadata.owner_references = Some(vec![controller_ref(sts)]);
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(INDEX_LABEL.into(), i.to_string());
    if let Some(s) = pod.spec.as_mut() {
        s.hostname = Some(name);
        if !spec.service_name.clone().unwrap_or_default().is_empty() {
            s.subdomain = spec.service_name.clone();
        }
    }
    Ok(pod)
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = sts.namespace().unwrap_or_default();
    let set = sts.name_any();
    let uid = sts.uid().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let revision = template_hash(
        &spec.template,
        sts.status.as_ref().and_then(|s| s.collision_count),
    );
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pods: BTreeMap<usize, Pod> = BTreeMap::new();
    for p in crate::replicaset::owned_pods(client, sts.as_ref(), Some(&spec.selector)).await? {
        if controller_uid(&p) == Some(uid.as_str())
            && let Some(i) = ordinal(&set, &p)
        {
            pods.insert(i, p);
        }
    }
    let healthy = |p: &Pod| is_active(p) && phase(p) == "Running" && is_ready(p);

    // Failed pods are replaced; pods being deleted are waited for.
    for (i, p) in &pods {
        if matches!(phase(p), "Failed" | "Succeeded") && p.metadata.deletion_timestamp.is_none() {
            delete(&api, p).await?;
            tracing::debug!(set = %set, ordinal = i, "replacing a finished stateful pod");
        }
    }
    let mut progress_blocked = false;
    for i in 0..want {
        match pods.get(&i) {
            None => {
                if progress_blocked {
                    break;
                }
                match api
                    .create(&PostParams::default(), &pod_for(&sts, i, &revision)?)
                    .await
                {
                    Ok(_) => {}
                    // The previous incarnation is still terminating.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                if !parallel {
                    progress_blocked = true;
                }
            }
            Some(p) if !parallel && !healthy(p) => progress_blocked = true,
            Some(_) => {}
        }
    }
    // Scale down: highest ordinal first, one at a time unless parallel, and only when the rest
    // are healthy.
    let surplus: Vec<&Pod> = pods.range(want..).rev().map(|(_, p)| p).collect();
    for p in surplus {
        if p.metadata.deletion_timestamp.is_none() {
            if !parallel && !pods.range(..want).all(|(_, q)| healthy(q)) {
                break;
            }
            delete(&api, p).await?;
            if !parallel {
                break;
            }
        } else if !parallel {
            break;
        }
    }
    // Rolling update: the highest ordinal on an old revision goes, once all are healthy.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .map_or(0, |p| usize::try_from(p.max(0)).unwrap_or(0));
    let in_range: Vec<(&usize, &Pod)> = pods.range(..want).collect();
    let all_healthy = in_range.len() == want && in_range.iter().all(|(_, p)| healthy(p));
    if rolling
        && all_healthy
        && let Some((_, p)) = in_range
            .iter()
            .rev()
            .find(|(i, p)| **i >= partition && p.labels().get(REVISION_LABEL) != Some(&revision))
    {
        delete(&api, p).await?;
    }

    let in_range: Vec<&Pod> = pods
        .range(..want)
        .map(|(_, p)| p)
        .filter(|p| is_active(p))
        .collect();
    let updated = in_range
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL) == Some(&revision))
        .count();
    let current_revision = if updated == want {
        revision.clone()
    } else {
        sts.status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| revision.clone())
    };
    let status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": pods.values().filter(|p| is_active(p)).count(),
        "readyReplicas": pods.values().filter(|p| is_active(p) && is_ready(p)).count(),
        "availableReplicas": pods.values().filter(|p| is_active(p) && is_available(p, min_ready)).count(),
        "currentReplicas": in_range.iter().filter(|p| p.labels().get(REVISION_LABEL) == Some(&current_revision)).count(),
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": revision,
    });
    let current = serde_json::to_value(sts.status.clone().unwrap_or_default()).unwrap_or_default();
    if !crate::same_fields(&current, &status) {
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &set,
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
