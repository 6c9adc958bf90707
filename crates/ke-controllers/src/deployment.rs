//! Deployments: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`,
//! numbered by the `deployment.kubernetes.io/revision` annotation), rolled from old to new
//! within `maxSurge`/`maxUnavailable` (or all at once for `Recreate`), old ones beyond
//! `revisionHistoryLimit` removed, and the status `kubectl rollout status` waits on.
//!
//! `kubectl rollout undo` works by writing an old ReplicaSet's template back into the
//! Deployment: the hash then names that ReplicaSet again, and it becomes the newest revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::common::{controller_ref, controller_uid, selector_query, template_hash};
use crate::{Error, RESYNC};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// An absolute count or a percentage of `total`, rounded up (surge) or down (unavailable).
fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = pct * i64::from(total);
            let n = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            i32::try_from(n).unwrap_or(0)
        }
        None => default,
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let sets_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let listed = sets_api
        .list(&ListParams::default().labels(&selector_query(Some(&spec.selector))))
        .await?;
    let mut sets: Vec<ReplicaSet> = listed
        .items
        .into_iter()
        .filter(|rs| {
            controller_uid(rs) == Some(uid.as_str()) && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    sets.sort_by_key(revision);
    let hash = template_hash(
        &spec.template,
        d.status.as_ref().and_then(|s| s.collision_count),
    );
    let max_revision = sets.iter().map(revision).max().unwrap_or(0);
    let new_index = sets
        .iter()
        .position(|rs| rs.labels().get(HASH_LABEL) == Some(&hash));

    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    let surge = resolve(rolling.max_surge.as_ref(), want, true, 1);
    let mut unavailable = resolve(rolling.max_unavailable.as_ref(), want, false, 0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }

    let new_rs = match new_index {
        Some(i) => {
            let rs = sets.remove(i);
            // Rolled back to an older template: that ReplicaSet becomes the newest revision.
            let target = if revision(&rs) < max_revision {
                max_revision + 1
            } else {
                revision(&rs).max(1)
            };
            if target == revision(&rs) {
                rs
            } else {
                let patch = json!({"metadata": {"annotations": {REVISION: target.to_string()}}});
                sets_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?
            }
        }
        None => {
            let old_total: i32 = sets.iter().map(replicas).sum();
            let initial = if recreate || spec.paused == Some(true) {
                0
            } else {
                (want + surge - old_total).clamp(0, want)
            };
            create_replica_set(&sets_api, d.as_ref(), &hash, max_revision + 1, initial).await?
        }
    };
    let old = sets;

    if spec.paused != Some(true) {
        if recreate {
            let old_running: i32 = old
                .iter()
                .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
                .sum();
            for rs in old.iter().filter(|rs| replicas(rs) > 0) {
                scale(&sets_api, rs, 0).await?;
            }
            if old_running == 0 && replicas(&new_rs) != want {
                scale(&sets_api, &new_rs, want).await?;
            }
        } else {
            roll(&sets_api, &new_rs, &old, want, surge, unavailable).await?;
        }
    } else if replicas(&new_rs) == 0 && old.iter().all(|rs| replicas(rs) == 0) {
        // Paused before anything ran: still give the current template its replicas.
        scale(&sets_api, &new_rs, want).await?;
    }

    // The Deployment carries its current revision too (`kubectl rollout undo` rewrites it).
    let current_revision = revision(&new_rs).to_string();
    if d.annotations().get(REVISION) != Some(&current_revision) {
        let patch = json!({"metadata": {"annotations": {REVISION: current_revision}}});
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    cleanup(&sets_api, &old, spec.revision_history_limit.unwrap_or(10)).await?;
    update_status(client, &d, &new_rs, &old, want, unavailable).await?;
    Ok(Action::requeue(RESYNC))
}

async fn create_replica_set(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    hash: &str,
    revision: i64,
    replicas: i32,
) -> Result<ReplicaSet, Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    tmeta.labels = Some(labels.clone());
    template.metadata = Some(tmeta);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let max_surge = resolve(
        spec.strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_surge.as_ref()),
        spec.replicas.unwrap_or(1),
        true,
        1,
    );
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", d.name_any()),
            "namespace": d.namespace(),
            "labels": labels,
            "annotations": {
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": spec.replicas.unwrap_or(1).to_string(),
                "deployment.kubernetes.io/max-replicas": (spec.replicas.unwrap_or(1) + max_surge).to_string(),
            },
            "ownerReferences": [controller_ref(d)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    let rs: ReplicaSet = serde_json::from_value(rs).map_err(|e| Error::Invalid(e.to_string()))?;
    match api.create(&PostParams::default(), &rs).await {
        Ok(rs) => Ok(rs),
        // Created by an earlier pass whose reply was lost: use it.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(&rs.name_any()).await?),
        Err(e) => Err(e.into()),
    }
}

async fn scale(api: &Api<ReplicaSet>, rs: &ReplicaSet, to: i32) -> Result<(), Error> {
    if replicas(rs) == to {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": to}});
    api.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// One step of a rolling update: surge the new ReplicaSet up to `want + surge` pods in total,
/// and scale old ones down as far as keeping `want - unavailable` available allows.
async fn roll(
    api: &Api<ReplicaSet>,
    new_rs: &ReplicaSet,
    old: &[ReplicaSet],
    want: i32,
    surge: i32,
    unavailable: i32,
) -> Result<(), Error> {
    let old_total: i32 = old.iter().map(replicas).sum();
    let total = replicas(new_rs) + old_total;
    let new_target = if replicas(new_rs) >= want {
        want
    } else {
        let room = (want + surge - total).max(0);
        (replicas(new_rs) + room).min(want)
    };
    scale(api, new_rs, new_target).await?;

    let total = new_target + old_total;
    let min_available = want - unavailable;
    let new_unavailable = (new_target - available(new_rs)).max(0);
    let mut can_remove = (total - min_available - new_unavailable).max(0);
    // Old replicas that are not available cost no availability: remove those first.
    let mut old_sorted: Vec<&ReplicaSet> = old.iter().filter(|rs| replicas(rs) > 0).collect();
    old_sorted.sort_by_key(|rs| revision(rs));
    for rs in &old_sorted {
        let unhealthy = (replicas(rs) - available(rs)).max(0);
        if unhealthy > 0 {
            scale(api, rs, replicas(rs) - unhealthy).await?;
        }
    }
    for rs in old_sorted {
        if can_remove == 0 {
            break;
        }
        let current = replicas(rs).min(available(rs));
        let cut = current.min(can_remove);
        if cut > 0 {
            scale(api, rs, current - cut).await?;
            can_remove -= cut;
        }
    }
    Ok(())
}

/// Old ReplicaSets scaled to zero beyond the history limit go, oldest first.
async fn cleanup(api: &Api<ReplicaSet>, old: &[ReplicaSet], limit: i32) -> Result<(), Error> {
    let mut idle: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
        .collect();
    idle.sort_by_key(|rs| revision(rs));
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if idle.len() > keep {
        for rs in &idle[..idle.len() - keep] {
            match api
                .delete(&rs.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn update_status(
    client: &Client,
    d: &Deployment,
    new_rs: &ReplicaSet,
    old: &[ReplicaSet],
    want: i32,
    unavailable: i32,
) -> Result<(), Error> {
    let all: Vec<&ReplicaSet> = std::iter::once(new_rs).chain(old.iter()).collect();
    let sum = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| -> i32 {
        all.iter().filter_map(|rs| rs.status.as_ref()).map(f).sum()
    };
    let replicas = sum(|s| s.replicas);
    let ready = sum(|s| s.ready_replicas.unwrap_or(0));
    let avail = sum(|s| s.available_replicas.unwrap_or(0));
    let updated = new_rs.status.as_ref().map_or(0, |s| s.replicas);
    let complete = updated == want && replicas == want && avail >= want;
    let now = crate::common::now();
    let previous = d.status.clone().unwrap_or_default();
    let since = |type_: &str, status: &str| {
        previous
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone())
    };
    let is_available = avail >= want - unavailable;
    let (progress_reason, progress_message) = if complete {
        (
            "NewReplicaSetAvailable",
            format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                new_rs.name_any()
            ),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{}\" is progressing.", new_rs.name_any()),
        )
    };
    let available_status = if is_available { "True" } else { "False" };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "unavailableReplicas": (want - avail).max(0),
        "conditions": [
            {
                "type": "Available",
                "status": available_status,
                "reason": if is_available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": if is_available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                "lastUpdateTime": now,
                "lastTransitionTime": since("Available", available_status),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": progress_reason,
                "message": progress_message,
                "lastUpdateTime": now,
                "lastTransitionTime": since("Progressing", "True"),
            }
        ],
    });
    let current = serde_json::to_value(&previous).unwrap_or(Value::Null);
    let changed = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).unwrap_or(&json!(0)) != status.get(*k).unwrap_or(&json!(0)))
        || current
            .get("conditions")
            .and_then(Value::as_array)
            .is_none_or(|cs| {
                cs.iter()
                    .map(|c| (&c["type"], &c["status"], &c["reason"]))
                    .collect::<Vec<_>>()
                    != status["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| (&c["type"], &c["status"], &c["reason"]))
                        .collect::<Vec<_>>()
            });
    if changed {
        let api: Api<Deployment> =
            Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
        api.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve(Some(&pct("25%")), 10, true, 0), 3);
        assert_eq!(resolve(Some(&pct("25%")), 10, false, 0), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 10, true, 0), 2);
        assert_eq!(resolve(None, 10, true, 1), 1);
    }
}
