//! [`ObjectSyncStore`]: cloudhub's [`SyncStore`], kept in memory and written behind to the
//! ObjectSync / ClusterObjectSync records.
//!
//! cloudhub asks it, per object it has no state for, which version the node already has, and
//! tells it about every ACK. Answers come from memory, so delivery never waits for the API
//! server. Writes are coalesced per record and flushed by [`ObjectSyncStore::flush`]:
//!
//! * a record that must appear (first ACK of an object: create plus the status subresource,
//!   two calls) or disappear (the edge ACKed its delete, or the node is gone: one call) is
//!   written on the next flush. Its existence is what lets a reconcile after a crash tell the
//!   node about objects deleted meanwhile;
//! * a version-only change is written at most every `version_every` flushes (default 300, five
//!   minutes) and at shutdown, however many ACKs it collects. A version that is behind in the
//!   API only costs one redundant resend after a crash (the edge treats a repeated version as
//!   a no-op), while writing every ACK is what makes upstream spend 2–3 API calls per
//!   message.
//!
//! Memory is authoritative while cloudcore runs; the records are its durable copy, loaded once
//! at start ([`ObjectSyncStore::load`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use ke_delivery::{ObjectKey, ObjectRef, SyncStore};
use kube::Client;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::records::{self, Scope};

/// (node, object uid).
pub(crate) type RecordKey = (String, String);

/// What the node holds of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub object: ObjectRef,
    pub version: u64,
}

/// One record: `node` holds `held` of the object with `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub node: String,
    pub uid: String,
    pub held: Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Persisted {
    version: u64,
}

#[derive(Default)]
struct State {
    /// What each node holds, per cloudhub's ACKs.
    held: HashMap<RecordKey, Held>,
    /// What the API server has, for the records written or loaded.
    persisted: HashMap<RecordKey, (Persisted, ObjectRef)>,
    /// Records whose API copy may differ from `held`.
    dirty: HashSet<RecordKey>,
}

/// Counters for the benchmark and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub acks: AtomicU64,
    pub api_calls: AtomicU64,
}

impl Stats {
    /// The counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, value) in [
            (
                "cloudcore_sync_acks_total",
                "ACKs recorded in the sync store.",
                self.acks.load(Ordering::Relaxed),
            ),
            (
                "cloudcore_sync_record_api_calls_total",
                "API calls made to persist sync records.",
                self.api_calls.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
}

/// Cheap to clone: every clone shares the same records.
#[derive(Clone)]
pub struct ObjectSyncStore {
    client: Client,
    state: Arc<Mutex<State>>,
    stats: Arc<Stats>,
    flushes: Arc<AtomicU64>,
    version_every: u64,
}

/// One write a flush makes.
enum Write {
    Create(RecordKey, Held),
    Version(RecordKey, Held),
    Delete(RecordKey, ObjectRef),
}

impl ObjectSyncStore {
    /// An empty store (nothing recorded yet in the API, or tests).
    pub fn new(client: Client) -> ObjectSyncStore {
        ObjectSyncStore {
            client,
            state: Arc::default(),
            stats: Arc::default(),
            flushes: Arc::default(),
            version_every: 300,
        }
    }

    /// Version-only changes are written every `flushes` flushes (1 = every flush).
    pub fn with_version_every(mut self, flushes: u64) -> ObjectSyncStore {
        self.version_every = flushes.max(1);
        self
    }

    /// Reads every ObjectSync and ClusterObjectSync into memory. Records whose names are not
    /// `<node>.<uid>` are skipped (logged).
    pub async fn load(&self) -> Result<usize, kube::Error> {
        let mut loaded = Vec::new();
        for scope in [Scope::Namespaced, Scope::Cluster] {
            let list = scope
                .api(&self.client, None)
                .list(&ListParams::default())
                .await?;
            for record in &list.items {
                match records::parse_record(record) {
                    Some(record) => loaded.push(record),
                    None => {
                        tracing::warn!(name = ?record.metadata.name, "unparsable sync record; ignored")
                    }
                }
            }
        }
        let count = loaded.len();
        let mut state = self.lock();
        for record in loaded {
            let key = (record.node, record.uid);
            state.held.insert(
                key.clone(),
                Held {
                    object: record.object.clone(),
                    version: record.version,
                },
            );
            state.persisted.insert(
                key,
                (
                    Persisted {
                        version: record.version,
                    },
                    record.object,
                ),
            );
        }
        Ok(count)
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The records of `node`, or of every node.
    pub fn records(&self, node: Option<&str>) -> Vec<Record> {
        let state = self.lock();
        state
            .held
            .iter()
            .filter(|((n, _), _)| node.is_none_or(|node| n == node))
            .map(|((node, uid), held)| Record {
                node: node.clone(),
                uid: uid.clone(),
                held: held.clone(),
            })
            .collect()
    }

    /// Forgets everything `node` holds (the Node was deleted); the records go on the next flush.
    pub fn forget_node(&self, node: &str) -> usize {
        let mut state = self.lock();
        let keys: Vec<RecordKey> = state
            .held
            .keys()
            .filter(|(n, _)| n == node)
            .cloned()
            .collect();
        let persisted: Vec<RecordKey> = state
            .persisted
            .keys()
            .filter(|(n, _)| n == node)
            .cloned()
            .collect();
        for key in &keys {
            state.held.remove(key);
        }
        let count = keys.len().max(persisted.len());
        state.dirty.extend(keys);
        state.dirty.extend(persisted);
        count
    }

    /// The nodes that hold anything.
    pub fn nodes(&self) -> HashSet<String> {
        let state = self.lock();
        state
            .held
            .keys()
            .chain(state.persisted.keys())
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// Writes what changed since the last flush (see the module docs for which changes wait).
    /// Failed writes stay dirty and are retried next time. Returns the number of API calls made.
    /// `all` writes version-only changes too, whatever the round (at shutdown).
    pub async fn flush(&self, all: bool) -> u64 {
        let round = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let versions_due = all || round.is_multiple_of(self.version_every);
        let writes: Vec<Write> = {
            let mut state = self.lock();
            let mut writes = Vec::new();
            let mut still_dirty = HashSet::new();
            for key in std::mem::take(&mut state.dirty) {
                let held = state.held.get(&key).cloned();
                let persisted = state.persisted.get(&key).cloned();
                match (held, persisted) {
                    (Some(held), None) => writes.push(Write::Create(key, held)),
                    (Some(held), Some((p, _))) if held.version != p.version => {
                        if versions_due {
                            writes.push(Write::Version(key, held));
                        } else {
                            still_dirty.insert(key);
                        }
                    }
                    (Some(_), Some(_)) => {}
                    (None, Some((_, object))) => writes.push(Write::Delete(key, object)),
                    (None, None) => {}
                }
            }
            state.dirty = still_dirty;
            writes
        };
        let calls = Arc::new(AtomicU64::new(0));
        futures_util::stream::iter(writes)
            .for_each_concurrent(16, |write| {
                let calls = Arc::clone(&calls);
                async move {
                    let made = self.write(write).await;
                    calls.fetch_add(made, Ordering::Relaxed);
                }
            })
            .await;
        let calls = calls.load(Ordering::Relaxed);
        self.stats.api_calls.fetch_add(calls, Ordering::Relaxed);
        calls
    }

    /// Performs one write; returns the API calls it took. On failure the record is marked
    /// dirty again.
    async fn write(&self, write: Write) -> u64 {
        let params = PatchParams {
            field_manager: Some("cloudcore".into()),
            ..Default::default()
        };
        match write {
            Write::Create(key, held) => {
                let Some(body) = records::new_record(&key.0, &key.1, &held.object) else {
                    // A kind without an ObjectSync mapping: kept in memory only.
                    return 0;
                };
                let scope = Scope::of(&held.object);
                let api = scope.api(&self.client, held.object.namespace.as_deref());
                let name = records::record_name(&key.0, &key.1);
                match api.create(&PostParams::default(), &body).await {
                    Ok(_) => {}
                    // Written by an earlier run whose load this store did not see; fall
                    // through to the status write.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(err) => {
                        tracing::warn!(%name, error = %err, "sync record not created; will retry");
                        self.lock().dirty.insert(key);
                        return 1;
                    }
                }
                // The CRDs have a status subresource: the version is a second call.
                let status =
                    json!({ "status": { "objectResourceVersion": held.version.to_string() } });
                match api
                    .patch_status(&name, &params, &Patch::Merge(&status))
                    .await
                {
                    Ok(_) => self.mark_persisted(key, &held),
                    Err(err) => {
                        tracing::warn!(%name, error = %err, "sync record status not written; will retry");
                        let mut state = self.lock();
                        // The record exists now, with an empty version.
                        state
                            .persisted
                            .insert(key.clone(), (Persisted { version: 0 }, held.object));
                        state.dirty.insert(key);
                    }
                }
                2
            }
            Write::Version(key, held) => {
                let name = records::record_name(&key.0, &key.1);
                let api =
                    Scope::of(&held.object).api(&self.client, held.object.namespace.as_deref());
                let status =
                    json!({ "status": { "objectResourceVersion": held.version.to_string() } });
                match api
                    .patch_status(&name, &params, &Patch::Merge(&status))
                    .await
                {
                    Ok(_) => self.mark_persisted(key, &held),
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        // Deleted behind our back: create it again.
                        self.lock().persisted.remove(&key);
                        self.lock().dirty.insert(key);
                    }
                    Err(err) => {
                        tracing::warn!(%name, error = %err, "sync record version not written; will retry");
                        self.lock().dirty.insert(key);
                    }
                }
                1
            }
            Write::Delete(key, object) => {
                let name = records::record_name(&key.0, &key.1);
                let api = Scope::of(&object).api(&self.client, object.namespace.as_deref());
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.forget_persisted(&key);
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.forget_persisted(&key);
                    }
                    Err(err) => {
                        tracing::warn!(%name, error = %err, "sync record not deleted; will retry");
                        self.lock().dirty.insert(key);
                    }
                }
                1
            }
        }
    }

    fn mark_persisted(&self, key: RecordKey, written: &Held) {
        let mut state = self.lock();
        state.persisted.insert(
            key.clone(),
            (
                Persisted {
                    version: written.version,
                },
                written.object.clone(),
            ),
        );
        // Changed again (or dropped) while the write was in flight.
        if state.held.get(&key) != Some(written) {
            state.dirty.insert(key);
        }
    }

    fn forget_persisted(&self, key: &RecordKey) {
        let mut state = self.lock();
        state.persisted.remove(key);
        if state.held.contains_key(key) {
            state.dirty.insert(key.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sync store lock poisoned")
    }
}

impl SyncStore for ObjectSyncStore {
    fn acked_version(&self, node: &str, key: &ObjectKey) -> Option<u64> {
        let uid = key.uid()?;
        let state = self.lock();
        state
            .held
            .get(&(node.to_owned(), uid.to_owned()))
            .map(|held| held.version)
    }

    fn record_acked(
        &mut self,
        node: &str,
        key: &ObjectKey,
        resource_version: u64,
        object: &ObjectRef,
    ) {
        self.stats.acks.fetch_add(1, Ordering::Relaxed);
        let Some(uid) = key.uid() else {
            return;
        };
        let record_key = (node.to_owned(), uid.to_owned());
        let mut state = self.lock();
        let held = state
            .held
            .entry(record_key.clone())
            .or_insert_with(|| Held {
                object: object.clone(),
                version: resource_version,
            });
        if resource_version >= held.version {
            held.version = resource_version;
            held.object = object.clone();
        }
        state.dirty.insert(record_key);
    }

    fn record_deleted(&mut self, node: &str, key: &ObjectKey) {
        self.stats.acks.fetch_add(1, Ordering::Relaxed);
        let Some(uid) = key.uid() else {
            return;
        };
        let record_key = (node.to_owned(), uid.to_owned());
        let mut state = self.lock();
        state.held.remove(&record_key);
        state.dirty.insert(record_key);
    }
}
