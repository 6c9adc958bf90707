//! Where API objects live: a key-value store with one global, monotonically increasing revision,
//! like etcd. Every successful write gets the next revision; an object's `resourceVersion` is the
//! revision of its last write (`mod_revision`). Writes are recorded in a change log that watches
//! resume from; compaction drops old change-log entries, and a watch that asks for a compacted
//! revision gets [`StorageError::Compacted`] (served as `410 Gone`, as Kubernetes does).
//!
//! Values are opaque bytes (JSON of the object *without* its resourceVersion: the API layer
//! injects `mod_revision` on the way out, so a write never has to rewrite its own value).
//! Keys are `/<group>/<resource>/<namespace>/<name>` for namespaced objects and
//! `/<group>/<resource>/<name>` for cluster-scoped ones (core group: `core`); a prefix ending in
//! `/` selects a collection.
//!
//! The trait is async so that an etcd backend can implement it without blocking; the SQLite
//! backend runs its statements on a dedicated thread.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, OnceLock};

pub mod sqlite;

pub type Revision = u64;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    /// Shared, not copied, when an event goes out to many watchers.
    pub value: bytes::Bytes,
    /// Revision of the write that created the object.
    pub create_revision: Revision,
    /// Revision of the latest write; the object's resourceVersion.
    pub mod_revision: Revision,
}

/// A page of a collection, read at one consistent revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<StoredObject>,
    /// The store revision the page was read at (the list's resourceVersion).
    pub revision: Revision,
    /// The last key of this page when more items follow (the `continue` token's basis).
    pub continue_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// A change, as delivered to watchers in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For `Deleted`, the last value before deletion, with `mod_revision` = the delete's revision.
    pub object: StoredObject,
    pub revision: Revision,
    /// Shared by every watcher that receives this event live, so work derived from it (the
    /// decoded object, the encoded frame) is done once, not once per watcher.
    pub memo: Memo,
}

/// A slot for one value derived from an event, computed by whichever receiver gets there first.
/// Not part of the event's identity: two events with different memos are equal.
#[derive(Clone, Default)]
pub struct Memo(Arc<OnceLock<Arc<dyn Any + Send + Sync>>>);

impl Memo {
    /// The memoized value, computing it with `init` if this is the first call. `None` if the
    /// slot already holds a value of another type.
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Arc::new(init())).downcast_ref::<T>()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// Options of a list read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Return at most this many items; `None` = all.
    pub limit: Option<usize>,
    /// Start after this key (from a previous page's `continue_after`).
    pub start_after: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    /// The caller's precondition (expected mod_revision) does not hold.
    #[error("{key} was modified: expected revision {expected}, current {current}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    /// Requested a revision whose history was compacted away.
    #[error("revision {requested} is compacted; oldest available is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("storage backend: {0}")]
    Backend(String),
}

/// The store. Implementations are cheap to clone (a handle) and safe to share between tasks.
pub trait Storage: Clone + Send + Sync + 'static {
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredObject>, StorageError>> + Send;

    /// Items whose key starts with `prefix`, in key order, read at one revision.
    fn list(
        &self,
        prefix: &str,
        options: ListOptions,
    ) -> impl Future<Output = Result<ListPage, StorageError>> + Send;

    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<StoredObject, StorageError>> + Send;

    /// Replaces the value. With `expected`, fails with `Conflict` unless the current
    /// `mod_revision` equals it (optimistic concurrency).
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<StoredObject, StorageError>> + Send;

    /// Removes the object; returns its last value with `mod_revision` = the delete's revision.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<StoredObject, StorageError>> + Send;

    /// Changes under `prefix` with revision > `after`, first from the change log, then live, in
    /// revision order with no gap and no duplicate. `after` older than the compaction point is
    /// `Compacted`. The receiver ends when the store shuts down or the watcher falls too far
    /// behind (then it must re-list).
    fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<WatchEvent>, StorageError>> + Send;

    /// The revision of the latest write.
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StorageError>> + Send;

    /// Drops change-log entries at or below `revision`.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StorageError>> + Send;
}
