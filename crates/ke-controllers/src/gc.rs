//! Garbage collection by `ownerReferences`, as kube-controller-manager's garbage collector:
//!
//! * **background** (the object is gone): dependents none of whose owners exist are deleted;
//! * **foreground** (owner deleting with the `foregroundDeletion` finalizer): dependents are
//!   deleted first (foreground too, so the whole tree goes bottom-up), then the finalizer is
//!   removed and the API server removes the owner;
//! * **orphan** (`orphan` finalizer): the owner's reference is removed from every dependent,
//!   then the finalizer.
//!
//! Owner events drive it; a periodic sweep catches whatever happened while it was not running.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

/// `(group, version, kind, plural, namespaced)`.
type Kind = (&'static str, &'static str, &'static str, &'static str, bool);

/// The kinds that own or are owned.
const KINDS: &[Kind] = &[
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Node", "nodes", false),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("batch", "v1", "Job", "jobs", true),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
];

const SWEEP: Duration = Duration::from_secs(30);
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

fn resource(k: &Kind) -> ApiResource {
    let (group, version, kind, plural, _) = *k;
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn api_for(client: &Client, k: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = resource(k);
    match ns {
        Some(ns) if k.4 => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Kinds watched for owners going away. Pods, ConfigMaps and Secrets own things rarely enough
/// that the periodic sweep covers them, and not watching them spares a decode of every pod
/// change.
const WATCHED_OWNERS: &[&str] = &[
    "Service",
    "Node",
    "ReplicaSet",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "EndpointSlice",
];

pub async fn run(client: Client) {
    let mut events = SelectAll::new();
    for k in KINDS.iter().filter(|k| WATCHED_OWNERS.contains(&k.2)) {
        let api = api_for(&client, k, None);
        events.push(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed(),
        );
    }
    // Owners waiting for their dependents to go (foreground) or be released (orphan).
    let mut finalizing: BTreeMap<String, DynamicObject> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                    if o.metadata.deletion_timestamp.is_some() && has_gc_finalizer(&o) {
                        finalizing.insert(o.uid().unwrap_or_default(), o);
                    }
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    finalizing.remove(&o.uid().unwrap_or_default());
                    // Its dependents may now be orphans; the next sweep would find them, but a
                    // deletion cascade should not wait for it.
                    delete_orphans_of(&client, &o).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "gc: watch"),
                None => return,
            },
            _ = tick.tick() => {
                let owners: Vec<DynamicObject> = finalizing.values().cloned().collect();
                for owner in owners {
                    if finalize(&client, &owner).await {
                        finalizing.remove(&owner.uid().unwrap_or_default());
                    }
                }
            }
            _ = sweep.tick() => sweep_all(&client).await,
        }
    }
}

fn has_gc_finalizer(o: &DynamicObject) -> bool {
    o.finalizers()
        .iter()
        .any(|f| f == FOREGROUND || f == ORPHAN)
}

fn kind_of(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| {
        let av = if k.0.is_empty() {
            k.1.to_owned()
        } else {
            format!("{}/{}", k.0, k.1)
        };
        av == api_version && k.2 == kind
    })
}

/// Every object (of the known kinds) that names `uid` as an owner, where it can live.
async fn dependents(
    client: &Client,
    ns: Option<&str>,
    uid: &str,
) -> Vec<(&'static Kind, DynamicObject)> {
    let mut out = Vec::new();
    for k in KINDS {
        // A namespaced owner only owns objects in its namespace; a cluster-scoped one anywhere.
        if ns.is_some() && !k.4 {
            continue;
        }
        let Ok(list) = api_for(client, k, ns).list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            if o.owner_references().iter().any(|r| r.uid == uid) {
                out.push((k, o));
            }
        }
    }
    out
}

/// Whether the owner named by `r` exists (with that uid).
async fn owner_exists(
    client: &Client,
    ns: Option<&str>,
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    cache: &mut HashMap<String, bool>,
) -> bool {
    if let Some(known) = cache.get(&r.uid) {
        return *known;
    }
    let Some(k) = kind_of(&r.api_version, &r.kind) else {
        // An owner of a kind we do not track: never collect on its account.
        return true;
    };
    let exists = match api_for(client, k, ns).get_opt(&r.name).await {
        Ok(Some(o)) => o.uid().as_deref() == Some(r.uid.as_str()),
        Ok(None) => false,
        Err(_) => true,
    };
    cache.insert(r.uid.clone(), exists);
    exists
}

async fn delete_if_orphaned(
    client: &Client,
    k: &Kind,
    o: &DynamicObject,
    cache: &mut HashMap<String, bool>,
) {
    if o.metadata.deletion_timestamp.is_some() || o.owner_references().is_empty() {
        return;
    }
    let ns = o.namespace();
    for r in o.owner_references() {
        if owner_exists(client, ns.as_deref(), r, cache).await {
            return;
        }
    }
    let api = api_for(client, k, ns.as_deref());
    let dp = DeleteParams::background();
    match api.delete(&o.name_any(), &dp).await {
        Ok(_) => {
            tracing::debug!(kind = k.2, name = %o.name_any(), "gc: deleted an object whose owners are gone")
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::info!(kind = k.2, name = %o.name_any(), error = %e, "gc: delete failed"),
    }
}

async fn delete_orphans_of(client: &Client, owner: &DynamicObject) {
    let uid = owner.uid().unwrap_or_default();
    let mut cache = HashMap::from([(uid.clone(), false)]);
    for (k, dep) in dependents(client, owner.namespace().as_deref(), &uid).await {
        delete_if_orphaned(client, k, &dep, &mut cache).await;
    }
}

/// One step for an owner being deleted with a GC finalizer; `true` once it is done.
async fn finalize(client: &Client, owner: &DynamicObject) -> bool {
    let uid = owner.uid().unwrap_or_default();
    let ns = owner.namespace();
    let deps = dependents(client, ns.as_deref(), &uid).await;
    let orphaning = owner.finalizers().iter().any(|f| f == ORPHAN);
    if orphaning {
        for (k, dep) in &deps {
            let refs: Vec<_> = dep
                .owner_references()
                .iter()
                .filter(|r| r.uid != uid)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": dep.resource_version()}});
            let api = api_for(client, k, dep.namespace().as_deref());
            if let Err(e) = api
                .patch(
                    &dep.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                tracing::debug!(name = %dep.name_any(), error = %e, "gc: orphaning failed; retrying");
                return false;
            }
        }
    } else {
        let mut waiting = false;
        for (k, dep) in &deps {
            waiting = true;
            if dep.metadata.deletion_timestamp.is_none() {
                let api = api_for(client, k, dep.namespace().as_deref());
                // Foreground down the tree only where this collector will finish it; the
                // leaves (pods) are simply deleted.
                let dp = if WATCHED_OWNERS.contains(&k.2) {
                    DeleteParams::foreground()
                } else {
                    DeleteParams::background()
                };
                match api.delete(&dep.name_any(), &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::debug!(name = %dep.name_any(), error = %e, "gc: foreground delete failed")
                    }
                }
            }
        }
        if waiting {
            return false;
        }
    }
    let Some(k) = kind_of(
        owner.types.as_ref().map_or("", |t| t.api_version.as_str()),
        owner.types.as_ref().map_or("", |t| t.kind.as_str()),
    ) else {
        return true;
    };
    let finalizers: Vec<String> = owner
        .finalizers()
        .iter()
        .filter(|f| *f != FOREGROUND && *f != ORPHAN)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers}});
    let api = api_for(client, k, ns.as_deref());
    match api
        .patch(
            &owner.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(e) => {
            tracing::debug!(name = %owner.name_any(), error = %e, "gc: removing the finalizer failed");
            false
        }
    }
}

/// Everything with owners, checked against what exists.
async fn sweep_all(client: &Client) {
    let mut cache = HashMap::new();
    for k in KINDS {
        let Ok(list) = api_for(client, k, None).list(&ListParams::default()).await else {
            continue;
        };
        for o in list
            .items
            .iter()
            .filter(|o| !o.owner_references().is_empty())
        {
            delete_if_orphaned(client, k, o, &mut cache).await;
        }
    }
}
