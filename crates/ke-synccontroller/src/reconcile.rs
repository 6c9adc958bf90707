//! Makes every node converge to the current objects: for each record of what a node holds,
//! an object that is gone gets a `delete` (a stub with name, namespace and uid, as upstream
//! sends) and an object that is newer gets an `update` with the full object. Runs periodically
//! and when a node connects; cloudhub's queue collapses what it already has pending.
//!
//! Records are snapshotted *before* the objects are listed: a record exists only after its
//! object was acknowledged, so an object missing from a later list was really deleted — never
//! created after the list, which would make the reconcile delete a live object on the edge.

use std::collections::HashMap;

use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{NULL_NAMESPACE, group, operation, source};
use kube::Client;
use kube::api::{DynamicObject, ListParams};
use serde_json::{Value, json};

use crate::records;
use crate::store::{Held, ObjectSyncStore, Record};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    pub updates: usize,
    pub deletes: usize,
    pub forgotten_nodes: usize,
}

/// One pass over the records of `node` (or of every node), then garbage collection of the
/// records of deleted Nodes (full passes only).
pub async fn reconcile(
    client: &Client,
    bus: &Bus,
    store: &ObjectSyncStore,
    node: Option<&str>,
) -> Summary {
    let records = store.records(node);
    let mut summary = Summary {
        records: records.len(),
        ..Summary::default()
    };

    // One LIST per kind the records name.
    let mut by_kind: HashMap<(String, &'static str), Vec<Record>> = HashMap::new();
    for record in records {
        match records::type_of(&record.held.object) {
            Some(kind) => by_kind.entry(kind).or_default().push(record),
            None => {
                tracing::debug!(kind = %record.held.object.resource_type, "record of a kind the reconcile cannot look up")
            }
        }
    }
    for ((api_version, kind), records) in by_kind {
        let mut params = ListParams::default();
        if let (Some(node), "Pod") = (node, kind) {
            params = params.fields(&format!("spec.nodeName={node}"));
        }
        let live = match records::object_api(client, &api_version, kind, None)
            .list(&params)
            .await
        {
            Ok(list) => list.items,
            Err(err) => {
                // Not "gone": unknown. Try again next pass.
                tracing::warn!(%api_version, kind, error = %err, "cannot list objects to reconcile");
                continue;
            }
        };
        let live: HashMap<String, DynamicObject> = live
            .into_iter()
            .filter_map(|o| Some((o.metadata.uid.clone()?, o)))
            .collect();
        for Record { node, uid, held } in records {
            match live.get(&uid) {
                None => {
                    send(
                        bus,
                        &node,
                        &held,
                        operation::DELETE,
                        stub(&held, &uid),
                        None,
                    )
                    .await;
                    summary.deletes += 1;
                }
                Some(object) => {
                    let version = object
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    if version > held.version {
                        let content = serde_json::to_value(object).unwrap_or(Value::Null);
                        send(bus, &node, &held, operation::UPDATE, content, Some(version)).await;
                        summary.updates += 1;
                    }
                }
            }
        }
    }

    if node.is_none() {
        summary.forgotten_nodes = collect_deleted_nodes(client, store).await;
    }
    summary
}

/// Forgets what deleted Nodes held, so their records are deleted.
async fn collect_deleted_nodes(client: &Client, store: &ObjectSyncStore) -> usize {
    let nodes = records::object_api(client, "v1", "Node", None);
    let existing = match nodes.list_metadata(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect::<std::collections::HashSet<_>>(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot list nodes; sync records not garbage-collected");
            return 0;
        }
    };
    let mut forgotten = 0;
    for node in store.nodes() {
        if !existing.contains(&node) {
            let count = store.forget_node(&node);
            tracing::info!(%node, records = count, "node is gone; deleting its sync records");
            forgotten += 1;
        }
    }
    forgotten
}

/// What upstream sends for an object that is gone: only its name, namespace and uid.
fn stub(held: &Held, uid: &str) -> Value {
    let mut metadata = json!({ "name": held.object.name, "uid": uid });
    if let Some(ns) = &held.object.namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({ "metadata": metadata })
}

async fn send(bus: &Bus, node: &str, held: &Held, op: &str, content: Value, version: Option<u64>) {
    let namespace = held.object.namespace.as_deref().unwrap_or(NULL_NAMESPACE);
    let resource = format!(
        "node/{node}/{namespace}/{}/{}",
        held.object.resource_type, held.object.name
    );
    let mut message = Message::new()
        .with_route(source::EDGE_CONTROLLER, group::RESOURCE, resource, op)
        .with_content(content);
    if let Some(version) = version {
        message = message.with_resource_version(version.to_string());
    }
    if let Err(err) = bus.send(source::CLOUD_HUB, message).await {
        tracing::debug!(%node, error = %err, "reconcile message not handed to cloudhub");
    }
}
