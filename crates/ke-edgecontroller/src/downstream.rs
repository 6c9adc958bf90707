//! Cloud → edge: one watch per resource type (not per node), and each change turned into an
//! ACK-required message for exactly the edge nodes that need it:
//!
//! * pods bound to an edge node → that node (`insert` the first time it gets the pod, then
//!   `update`, and `delete` when the pod object is gone);
//! * ConfigMaps and Secrets → the nodes running a pod that references them (see
//!   [`locations`](crate::locations)), sent before the pod so the node has them when it starts
//!   it; a node never receives a Secret none of its pods reference;
//! * Services and Endpoints → every edge node;
//! * an edge Node object → that node (`update`; `delete` when the Node is deleted).
//!
//! Edge nodes are the Nodes labelled [`EDGE_ROLE_LABEL`]. Everything goes to cloudhub as
//! `node/<node>/<namespace|null>/<type>/<name>` with the object's resourceVersion, which is what
//! cloudhub's per-node queue coalesces and orders by.
//!
//! A watch that has to relist (a 410 after a long disconnect from the API server, or a restart
//! of this module) gets no delete events for what vanished meanwhile, so every relist ends by
//! deleting whatever was known but not listed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Pod, Secret, Service};
use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{NULL_NAMESPACE, group, operation, resource_type, source};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::locations::{Locations, Reference, references};

pub const EDGE_ROLE_LABEL: &str = "node-role.kubernetes.io/edge";

/// The watched kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Watched {
    Node,
    Pod,
    ConfigMap,
    Secret,
    Service,
    Endpoints,
}

/// One event of one watched kind, with the object as JSON.
struct Change {
    kind: Watched,
    event: watcher::Event<Object>,
}

/// What the handlers need of any object.
struct Object {
    namespace: Option<String>,
    name: String,
    uid: String,
    json: Value,
    /// `(node, references)` for pods.
    pod: Option<(Option<String>, Vec<Reference>)>,
}

pub(crate) async fn run(client: Client, bus: Bus, locations: Arc<Locations>) {
    let mut changes: SelectAll<BoxStream<'static, Change>> = SelectAll::new();
    let edge_nodes = watcher::Config::default().labels(EDGE_ROLE_LABEL);
    changes.push(stream(
        &client,
        Watched::Node,
        edge_nodes,
        Object::of::<Node>,
    ));
    let all = watcher::Config::default;
    changes.push(stream(&client, Watched::Pod, all(), Object::of_pod));
    changes.push(stream(
        &client,
        Watched::ConfigMap,
        all(),
        Object::of::<ConfigMap>,
    ));
    changes.push(stream(
        &client,
        Watched::Secret,
        all(),
        Object::of::<Secret>,
    ));
    changes.push(stream(
        &client,
        Watched::Service,
        all(),
        Object::of::<Service>,
    ));
    changes.push(stream(
        &client,
        Watched::Endpoints,
        all(),
        Object::of::<Endpoints>,
    ));
    let mut state = State {
        out: Out { bus },
        locations,
        edge_nodes: BTreeSet::new(),
        pods: HashMap::new(),
        configs: HashMap::new(),
        broadcast: HashMap::new(),
        relisting: HashMap::new(),
    };
    while let Some(change) = changes.next().await {
        state.apply(change).await;
    }
}

fn stream<K>(
    client: &Client,
    kind: Watched,
    config: watcher::Config,
    convert: fn(&K) -> Object,
) -> BoxStream<'static, Change>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(Change {
                    kind,
                    event: map_event(event, convert),
                }),
                Err(err) => {
                    tracing::warn!(?kind, error = %err, "edgecontroller watch failed; retrying");
                    None
                }
            }
        })
        .boxed()
}

fn map_event<K>(event: watcher::Event<K>, f: fn(&K) -> Object) -> watcher::Event<Object> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(&o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(&o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(&o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

impl Object {
    fn of<K: Resource + serde::Serialize>(object: &K) -> Object {
        Object {
            namespace: object.namespace(),
            name: object.name_any(),
            uid: object.uid().unwrap_or_default(),
            json: serde_json::to_value(object).unwrap_or(Value::Null),
            pod: None,
        }
    }

    fn of_pod(pod: &Pod) -> Object {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        Object {
            pod: Some((node, references(pod))),
            ..Object::of(pod)
        }
    }

    fn reference(&self, token: &'static str) -> Reference {
        Reference {
            token,
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }
}

/// Hands messages to cloudhub.
struct Out {
    bus: Bus,
}

impl Out {
    async fn send(&self, node: &str, r: &Reference, op: &str, object: &Value) {
        let namespace = if r.namespace.is_empty() {
            NULL_NAMESPACE
        } else {
            &r.namespace
        };
        let version = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let message = Message::new()
            .with_route(
                source::EDGE_CONTROLLER,
                group::RESOURCE,
                format!("node/{node}/{namespace}/{}/{}", r.token, r.name),
                op,
            )
            .with_resource_version(version)
            .with_content(object.clone());
        if let Err(err) = self.bus.send(source::CLOUD_HUB, message).await {
            tracing::warn!(%node, kind = r.token, name = %r.name, error = %err,
                "cannot hand a message to cloudhub");
        }
    }
}

struct PodEntry {
    json: Value,
    name: Reference,
    node: Option<String>,
    references: Vec<Reference>,
    /// The node that has been sent this pod.
    sent_to: Option<String>,
}

/// A ConfigMap/Secret/Service/Endpoints as last seen, and the nodes it was sent to.
struct Held {
    json: Value,
    holders: HashSet<String>,
}

struct State {
    out: Out,
    locations: Arc<Locations>,
    edge_nodes: BTreeSet<String>,
    /// Every bound pod, by uid.
    pods: HashMap<String, PodEntry>,
    /// ConfigMaps and Secrets.
    configs: HashMap<Reference, Held>,
    /// Services and Endpoints.
    broadcast: HashMap<Reference, Held>,
    /// Per kind, during a relist: the keys listed so far.
    relisting: HashMap<Watched, HashSet<String>>,
}

fn token(kind: Watched) -> &'static str {
    match kind {
        Watched::Node => resource_type::NODE,
        Watched::Pod => resource_type::POD,
        Watched::ConfigMap => resource_type::CONFIGMAP,
        Watched::Secret => resource_type::SECRET,
        Watched::Service => resource_type::SERVICE,
        Watched::Endpoints => resource_type::ENDPOINTS,
    }
}

/// The key a relist compares by.
fn relist_key(kind: Watched, object: &Object) -> String {
    match kind {
        Watched::Pod => object.uid.clone(),
        Watched::Node => object.name.clone(),
        _ => format!(
            "{}/{}",
            object.namespace.as_deref().unwrap_or(""),
            object.name
        ),
    }
}

impl State {
    async fn apply(&mut self, change: Change) {
        let kind = change.kind;
        match change.event {
            watcher::Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(object) => {
                if let Some(seen) = self.relisting.get_mut(&kind) {
                    seen.insert(relist_key(kind, &object));
                }
                self.upsert(kind, object).await;
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                for object in self.known(kind) {
                    if !seen.contains(&relist_key(kind, &object)) {
                        self.remove(kind, object).await;
                    }
                }
            }
            watcher::Event::Apply(object) => self.upsert(kind, object).await,
            watcher::Event::Delete(object) => self.remove(kind, object).await,
        }
    }

    /// What this state holds of `kind`, as objects, for relist comparison.
    fn known(&self, kind: Watched) -> Vec<Object> {
        let plain = |r: &Reference, json: &Value| Object {
            namespace: Some(r.namespace.clone()).filter(|n| !n.is_empty()),
            name: r.name.clone(),
            uid: String::new(),
            json: json.clone(),
            pod: None,
        };
        match kind {
            Watched::Node => self
                .edge_nodes
                .iter()
                .map(|name| Object {
                    namespace: None,
                    name: name.clone(),
                    uid: String::new(),
                    json: Value::Null,
                    pod: None,
                })
                .collect(),
            Watched::Pod => self
                .pods
                .iter()
                .map(|(uid, entry)| Object {
                    uid: uid.clone(),
                    ..plain(&entry.name, &entry.json)
                })
                .collect(),
            Watched::ConfigMap | Watched::Secret => self
                .configs
                .iter()
                .filter(|(r, _)| r.token == token(kind))
                .map(|(r, held)| plain(r, &held.json))
                .collect(),
            Watched::Service | Watched::Endpoints => self
                .broadcast
                .iter()
                .filter(|(r, _)| r.token == token(kind))
                .map(|(r, held)| plain(r, &held.json))
                .collect(),
        }
    }

    async fn upsert(&mut self, kind: Watched, object: Object) {
        match kind {
            Watched::Node => self.node_seen(object).await,
            Watched::Pod => self.pod_seen(object).await,
            Watched::ConfigMap | Watched::Secret => self.config_seen(kind, object).await,
            Watched::Service | Watched::Endpoints => self.broadcast_seen(kind, object).await,
        }
    }

    async fn remove(&mut self, kind: Watched, object: Object) {
        match kind {
            Watched::Node => self.node_gone(object).await,
            Watched::Pod => self.pod_gone(object).await,
            Watched::ConfigMap | Watched::Secret => {
                let r = object.reference(token(kind));
                if let Some(held) = self.configs.remove(&r) {
                    for node in &held.holders {
                        self.out
                            .send(node, &r, operation::DELETE, &object.json)
                            .await;
                    }
                }
            }
            Watched::Service | Watched::Endpoints => {
                let r = object.reference(token(kind));
                if let Some(held) = self.broadcast.remove(&r) {
                    for node in &held.holders {
                        self.out
                            .send(node, &r, operation::DELETE, &object.json)
                            .await;
                    }
                }
            }
        }
    }

    async fn node_seen(&mut self, node: Object) {
        let name = node.name.clone();
        let first = self.edge_nodes.insert(name.clone());
        let r = node.reference(resource_type::NODE);
        self.out
            .send(&name, &r, operation::UPDATE, &node.json)
            .await;
        if !first {
            return;
        }
        // Pods bound before the node was known as an edge node, with what they use, and the
        // Services/Endpoints every edge node gets.
        let pods: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.node.as_deref() == Some(name.as_str()))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in pods {
            self.deliver_pod(&uid).await;
        }
        for (r, held) in &mut self.broadcast {
            if held.holders.insert(name.clone()) {
                self.out.send(&name, r, operation::INSERT, &held.json).await;
            }
        }
    }

    async fn node_gone(&mut self, node: Object) {
        let name = node.name;
        if !self.edge_nodes.remove(&name) {
            return;
        }
        // Upstream tells the edge its Node is gone; cloudhub ends the session after it.
        let r = Reference {
            token: resource_type::NODE,
            namespace: String::new(),
            name: name.clone(),
        };
        self.out
            .send(&name, &r, operation::DELETE, &node.json)
            .await;
        for held in self.configs.values_mut().chain(self.broadcast.values_mut()) {
            held.holders.remove(&name);
        }
        for pod in self.pods.values_mut() {
            if pod.sent_to.as_deref() == Some(name.as_str()) {
                pod.sent_to = None;
            }
        }
    }

    async fn pod_seen(&mut self, object: Object) {
        let (node, references) = object.pod.clone().unwrap_or_default();
        match &node {
            Some(node) => self
                .locations
                .set_pod(&object.uid, node, references.clone()),
            None => self.locations.remove_pod(&object.uid),
        }
        let name = object.reference(resource_type::POD);
        let entry = self.pods.entry(object.uid.clone()).or_insert(PodEntry {
            json: Value::Null,
            name,
            node: None,
            references: Vec::new(),
            sent_to: None,
        });
        entry.json = object.json;
        entry.node = node;
        entry.references = references;
        self.deliver_pod(&object.uid).await;
    }

    /// Sends the pod to its node if that is an edge node, after whatever it references that
    /// the node does not have yet.
    async fn deliver_pod(&mut self, uid: &str) {
        let Some(entry) = self.pods.get(uid) else {
            return;
        };
        let Some(node) = entry.node.clone().filter(|n| self.edge_nodes.contains(n)) else {
            return;
        };
        for r in &entry.references {
            if let Some(held) = self.configs.get_mut(r)
                && held.holders.insert(node.clone())
            {
                let op = if r.token == resource_type::SECRET {
                    operation::UPDATE
                } else {
                    operation::INSERT
                };
                self.out.send(&node, r, op, &held.json).await;
            }
        }
        let op = if entry.sent_to.as_deref() == Some(node.as_str()) {
            operation::UPDATE
        } else {
            operation::INSERT
        };
        self.out.send(&node, &entry.name, op, &entry.json).await;
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.sent_to = Some(node);
        }
    }

    async fn pod_gone(&mut self, object: Object) {
        self.locations.remove_pod(&object.uid);
        let Some(entry) = self.pods.remove(&object.uid) else {
            return;
        };
        if let Some(node) = entry.sent_to.filter(|n| self.edge_nodes.contains(n)) {
            self.out
                .send(&node, &entry.name, operation::DELETE, &object.json)
                .await;
        }
    }

    async fn config_seen(&mut self, kind: Watched, object: Object) {
        let r = object.reference(token(kind));
        let held = self.configs.entry(r.clone()).or_insert(Held {
            json: Value::Null,
            holders: HashSet::new(),
        });
        held.json = object.json;
        // Nodes that have it get the update; nodes whose pods need it and lack it (it was
        // created after the pod) get it now.
        let had = held.holders.clone();
        for node in self.locations.nodes_needing(&r) {
            if self.edge_nodes.contains(&node) {
                held.holders.insert(node);
            }
        }
        let mut holders: Vec<&String> = held.holders.iter().collect();
        holders.sort();
        for node in holders {
            // Upstream sends Secrets as `update` even the first time (edges before 1.6 relied
            // on it); metamanager stores insert and update alike.
            let op = if had.contains(node) || r.token == resource_type::SECRET {
                operation::UPDATE
            } else {
                operation::INSERT
            };
            self.out.send(node, &r, op, &held.json).await;
        }
    }

    async fn broadcast_seen(&mut self, kind: Watched, object: Object) {
        let r = object.reference(token(kind));
        let held = self.broadcast.entry(r.clone()).or_insert(Held {
            json: Value::Null,
            holders: HashSet::new(),
        });
        held.json = object.json;
        for node in &self.edge_nodes {
            let op = if held.holders.insert(node.clone()) {
                operation::INSERT
            } else {
                operation::UPDATE
            };
            self.out.send(node, &r, op, &held.json).await;
        }
    }
}
