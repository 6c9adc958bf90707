//! The default scheduler: binds pods that name no node (and `schedulerName: default-scheduler`)
//! to the best node that fits ([`fit`]), through the `binding` subresource. Pods that fit
//! nowhere get `PodScheduled=False` (reason `Unschedulable`, with kube-scheduler's summary of
//! why) and a `FailedScheduling` event, and are retried when nodes or pods change.
//!
//! State is rebuilt from two watches (all pods, all nodes); a pod it binds is counted on its
//! node at once ("assumed"), so a burst of pods does not overbook a node while the watch
//! catches up.

pub mod fit;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{self, is_active};
use fit::{Request, Unfit, Usage};

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How long an unschedulable pod waits before the next try when nothing changed.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, (Node, fit::Capacity)>,
    /// Pods counted on a node, by `ns/name`: the node and what the pod requested.
    placed: HashMap<String, (String, Request)>,
    usage: HashMap<String, Usage>,
    /// Pods waiting for a node, by `ns/name`.
    pending: BTreeMap<String, Pod>,
    /// The last "why not" reported per pending pod, so it is written once, not every retry.
    reported: HashMap<String, String>,
    pods_synced: bool,
    nodes_synced: bool,
    /// Something changed since the last pass over the unschedulable pods.
    dirty: bool,
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && is_active(pod)
}

impl State {
    fn unplace(&mut self, k: &str) {
        if let Some((node, req)) = self.placed.remove(k)
            && let Some(u) = self.usage.get_mut(&node)
        {
            u.remove(&req);
        }
    }

    fn place(&mut self, k: String, node: String, req: Request) {
        self.unplace(&k);
        self.usage.entry(node.clone()).or_default().add(&req);
        self.placed.insert(k, (node, req));
    }

    fn on_pod(&mut self, pod: Pod, deleted: bool) {
        let k = key(&pod);
        self.dirty = true;
        if deleted || !is_active(&pod) {
            self.unplace(&k);
            self.pending.remove(&k);
            self.reported.remove(&k);
            return;
        }
        match pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        {
            Some(node) => {
                self.pending.remove(&k);
                self.reported.remove(&k);
                let req = Request::of(&pod);
                self.place(k, node, req);
            }
            None if wants_us(&pod) => {
                self.pending.insert(k, pod);
            }
            None => {}
        }
    }

    /// The best node for `pod`, or why there is none.
    fn choose(&self, pod: &Pod) -> Result<String, String> {
        let req = Request::of(pod);
        let empty = Usage::default();
        let mut best: Option<(i64, &String)> = None;
        let mut why: BTreeMap<Unfit, usize> = BTreeMap::new();
        for (name, (node, cap)) in &self.nodes {
            let usage = self.usage.get(name).unwrap_or(&empty);
            match fit::check(pod, &req, node, cap, usage) {
                Ok(()) => {
                    let s = fit::score(&req, cap, usage);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, name));
                    }
                }
                Err(u) => *why.entry(u).or_default() += 1,
            }
        }
        match best {
            Some((_, name)) => Ok(name.clone()),
            None => {
                let mut parts: Vec<String> = why
                    .iter()
                    .map(|(u, n)| format!("{n} {}", u.reason()))
                    .collect();
                parts.sort();
                Err(format!(
                    "0/{} nodes are available: {}.",
                    self.nodes.len(),
                    if parts.is_empty() {
                        "no nodes".to_owned()
                    } else {
                        parts.join(", ")
                    }
                ))
            }
        }
    }
}

/// Runs the scheduler until the watches end (they do not, short of the process ending).
pub async fn run(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut pod_events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut node_events = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut state = State::default();
    let mut relist_pods: Option<Vec<Pod>> = None;
    let mut relist_nodes: Option<BTreeMap<String, (Node, fit::Capacity)>> = None;
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = pod_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => relist_pods = Some(Vec::new()),
                Some(Ok(watcher::Event::InitApply(p))) => relist_pods.get_or_insert_with(Vec::new).push(p),
                Some(Ok(watcher::Event::InitDone)) => {
                    let fresh = relist_pods.take().unwrap_or_default();
                    state.placed.clear();
                    state.usage.clear();
                    state.pending.clear();
                    for p in fresh {
                        state.on_pod(p, false);
                    }
                    state.pods_synced = true;
                }
                Some(Ok(watcher::Event::Apply(p))) => state.on_pod(p, false),
                Some(Ok(watcher::Event::Delete(p))) => state.on_pod(p, true),
                Some(Err(e)) => tracing::debug!(error = %e, "scheduler: pod watch"),
                None => return,
            },
            ev = node_events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => relist_nodes = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    let cap = fit::Capacity::of(&n);
                    relist_nodes.get_or_insert_with(BTreeMap::new).insert(n.name_any(), (n, cap));
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    state.nodes = relist_nodes.take().unwrap_or_default();
                    state.nodes_synced = true;
                    state.dirty = true;
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    let cap = fit::Capacity::of(&n);
                    state.nodes.insert(n.name_any(), (n, cap));
                    state.dirty = true;
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    state.nodes.remove(&n.name_any());
                    state.dirty = true;
                }
                Some(Err(e)) => tracing::debug!(error = %e, "scheduler: node watch"),
                None => return,
            },
            _ = retry.tick() => state.dirty = true,
        }
        // Schedule only on a complete picture, and when there is something new to try.
        if !(state.pods_synced
            && state.nodes_synced
            && relist_pods.is_none()
            && relist_nodes.is_none())
        {
            continue;
        }
        schedule_pending(&client, &mut state).await;
    }
}

/// Bindings in flight at once: each is a durable write, and the store commits concurrent writes
/// together, so a window turns one fsync per pod into one per batch.
const BIND_WINDOW: usize = 64;

async fn schedule_pending(client: &Client, state: &mut State) {
    let waiting: Vec<(String, Pod)> = state
        .pending
        .iter()
        .filter(|(k, _)| state.dirty || !state.reported.contains_key(*k))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    state.dirty = false;
    let mut binds: JoinSet<(String, Pod, bool)> = JoinSet::new();
    for (k, pod) in waiting {
        match state.choose(&pod) {
            Ok(node) => {
                // Assumed at once, so the next pod sees this one's usage.
                state.place(k.clone(), node.clone(), Request::of(&pod));
                state.pending.remove(&k);
                state.reported.remove(&k);
                while binds.len() >= BIND_WINDOW {
                    if let Some(done) = binds.join_next().await {
                        settle(state, done);
                    }
                }
                let client = client.clone();
                binds.spawn(async move {
                    let ok = bind(&client, &pod, &node).await;
                    (k, pod, ok)
                });
            }
            Err(why) => {
                if state.reported.get(&k) != Some(&why) {
                    report_unschedulable(client, &pod, &why).await;
                    state.reported.insert(k, why);
                }
            }
        }
    }
    while let Some(done) = binds.join_next().await {
        settle(state, done);
    }
}

/// A failed binding gives the pod back to the queue and its node its room.
fn settle(state: &mut State, done: Result<(String, Pod, bool), tokio::task::JoinError>) {
    if let Ok((k, pod, false)) = done {
        state.unplace(&k);
        state.pending.insert(k, pod);
        state.dirty = true;
    }
}

/// Binds; `true` when the pod now has a node (also when someone else bound it first).
async fn bind(client: &Client, pod: &Pod, node: &str) -> bool {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let body = serde_json::to_vec(&binding).unwrap_or_default();
    match api
        .create_subresource::<serde_json::Value>("binding", &name, &PostParams::default(), body)
        .await
    {
        Ok(_) => {
            let message = format!("Successfully assigned {ns}/{name} to {node}");
            common::record_event(
                client,
                common::reference(pod),
                SCHEDULER_NAME,
                "Normal",
                "Scheduled",
                message,
            )
            .await;
            true
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => true,
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), %node, error = %e, "binding failed; will retry");
            false
        }
    }
}

async fn report_unschedulable(client: &Client, pod: &Pod, why: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let status = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": why,
        "lastProbeTime": null,
        "lastTransitionTime": common::now(),
    }]}});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
        .await
    {
        tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "could not report unschedulable");
    }
    common::record_event(
        client,
        common::reference(pod),
        SCHEDULER_NAME,
        "Warning",
        "FailedScheduling",
        why.to_owned(),
    )
    .await;
}
