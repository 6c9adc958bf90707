//! Durable "what has this node acknowledged" records: upstream's ObjectSync / ClusterObjectSync.

use std::collections::HashMap;

use crate::key::{ObjectKey, ObjectRef};

/// One change to persist after an ACK. [`NodeQueue::on_ack`](crate::NodeQueue::on_ack) hands it
/// out instead of writing it, so the driver can batch and coalesce writes: upstream spends 2–3
/// kube-apiserver calls per ACK inside the send loop, which stalls delivery at scale (facts §9,
/// pain point 2, kubeedge#7278).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRecord {
    /// The node has persisted `resource_version` of the object (ObjectSync
    /// `status.objectResourceVersion`).
    Acked {
        key: ObjectKey,
        object: ObjectRef,
        resource_version: u64,
    },
    /// The node has deleted the object; its record goes away.
    Deleted { key: ObjectKey, object: ObjectRef },
}

impl SyncRecord {
    pub fn key(&self) -> &ObjectKey {
        match self {
            SyncRecord::Acked { key, .. } | SyncRecord::Deleted { key, .. } => key,
        }
    }
}

/// Per node and object, the newest resourceVersion the edge has acknowledged.
///
/// The queue reads it when it meets an object it holds no state for (typically the first update
/// after a cloudcore restart), so a version the edge already has is not sent again. Writes come
/// from the driver, which collects [`SyncRecord`]s from `on_ack` and calls [`SyncStore::apply`]
/// whenever it likes (per ACK, per batch, on a timer).
///
/// A CRD-backed store plugs in by implementing this trait on a handle that reads from the
/// ObjectSync/ClusterObjectSync informer cache (`<node>.<uid>`, in the object's namespace or
/// cluster-scoped for `null`) and turns `apply` into status updates / deletes, keeping only the
/// newest record per key of a batch — the coalescing upstream lacks. It ignores
/// [`ObjectKey::Resource`] keys: an ObjectSync is named after the UID. Like upstream it may create
/// a record with version `"0"` for objects first seen while the node is offline, so the sync
/// controller can re-send them after a cloudcore restart; that write is outside this trait.
pub trait SyncStore {
    /// The newest acknowledged version of `key` on `node`, if any is recorded.
    fn acked_version(&self, node: &str, key: &ObjectKey) -> Option<u64>;

    /// Records that `node` has persisted `resource_version` of the object. Must not move the
    /// recorded version backwards.
    fn record_acked(
        &mut self,
        node: &str,
        key: &ObjectKey,
        resource_version: u64,
        object: &ObjectRef,
    );

    /// Forgets the object on `node` after the edge acknowledged its deletion.
    fn record_deleted(&mut self, node: &str, key: &ObjectKey);

    /// Persists a batch in order. Override to turn a batch into fewer remote calls.
    fn apply(&mut self, node: &str, records: &[SyncRecord]) {
        for record in records {
            match record {
                SyncRecord::Acked {
                    key,
                    object,
                    resource_version,
                } => self.record_acked(node, key, *resource_version, object),
                SyncRecord::Deleted { key, .. } => self.record_deleted(node, key),
            }
        }
    }
}

/// A [`SyncStore`] in a `HashMap`, for tests and for running without the CRDs.
#[derive(Debug, Default, Clone)]
pub struct MemorySyncStore {
    records: HashMap<(String, ObjectKey), (u64, ObjectRef)>,
}

impl MemorySyncStore {
    pub fn new() -> MemorySyncStore {
        MemorySyncStore::default()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The object reference stored with the record, e.g. for a sync controller to look it up.
    pub fn object(&self, node: &str, key: &ObjectKey) -> Option<&ObjectRef> {
        self.records
            .get(&(node.to_owned(), key.clone()))
            .map(|(_, object)| object)
    }
}

impl SyncStore for MemorySyncStore {
    fn acked_version(&self, node: &str, key: &ObjectKey) -> Option<u64> {
        // Allocating the lookup key keeps the map simple; this runs once per object the queue
        // has no state for, not per message.
        self.records
            .get(&(node.to_owned(), key.clone()))
            .map(|(rv, _)| *rv)
    }

    fn record_acked(
        &mut self,
        node: &str,
        key: &ObjectKey,
        resource_version: u64,
        object: &ObjectRef,
    ) {
        let entry = self
            .records
            .entry((node.to_owned(), key.clone()))
            .or_insert_with(|| (resource_version, object.clone()));
        // Batches may be flushed out of order by a careless driver; never regress.
        if resource_version >= entry.0 {
            *entry = (resource_version, object.clone());
        }
    }

    fn record_deleted(&mut self, node: &str, key: &ObjectKey) {
        self.records.remove(&(node.to_owned(), key.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> ObjectRef {
        ObjectRef {
            namespace: Some("default".into()),
            resource_type: "pod".into(),
            name: "web".into(),
            api_version: None,
        }
    }

    #[test]
    fn memory_store_keeps_the_newest_version_per_node_and_key() {
        let mut store = MemorySyncStore::new();
        let key = ObjectKey::Uid("u-1".into());
        store.apply(
            "n1",
            &[
                SyncRecord::Acked {
                    key: key.clone(),
                    object: pod(),
                    resource_version: 7,
                },
                SyncRecord::Acked {
                    key: key.clone(),
                    object: pod(),
                    resource_version: 5,
                },
            ],
        );
        assert_eq!(store.acked_version("n1", &key), Some(7));
        assert_eq!(store.acked_version("n2", &key), None);
        assert_eq!(store.object("n1", &key), Some(&pod()));

        store.apply(
            "n1",
            &[SyncRecord::Deleted {
                key: key.clone(),
                object: pod(),
            }],
        );
        assert_eq!(store.acked_version("n1", &key), None);
        assert!(store.is_empty());
    }
}
