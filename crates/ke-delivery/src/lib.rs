//! Reliable cloud→edge delivery, as a pure state machine: no I/O, no async, no clock.
//!
//! cloudhub owns one [`NodeQueue`] per edge node and drives it from the node's session task:
//!
//! ```text
//! controllers ──enqueue(msg, now, store)──▶ NodeQueue ──next_to_send(now)──▶ write frame
//!                                              ▲
//!          edge `response` ──on_ack(parent_msg_id, now)──┘──▶ Acked { record } ──▶ batch ──▶ SyncStore::apply
//!          timer at next_deadline() ──▶ next_to_send(now) (retransmissions)
//!          connection lost ──▶ on_disconnect()
//! ```
//!
//! Time is always passed in as [`std::time::Instant`], so every behaviour is deterministic in
//! tests.
//!
//! # Model
//!
//! * **Classification.** [`classify`] reproduces upstream's `noAckRequired`: replies to edge
//!   requests, membership/twin streams, servicebus traffic, node/lease/patch/status replies and a
//!   few others are NO-ACK and go through a plain FIFO, written once. Everything else — the
//!   objects the edge persists — is ACK traffic.
//! * **One slot per object.** ACK messages are keyed by object ([`object_key`]: the UID, else the
//!   resource). Each object has at most one *pending* version (not yet written) and at most one
//!   *in-flight* version (written, awaiting ACK).
//! * **Coalescing.** A newer version replaces the pending one (its place in the send order is
//!   kept); ten quick updates of one object while one version is in flight produce exactly one
//!   more transmission, carrying the newest version.
//! * **Version rules** (upstream's `enqueueAckMessage`): an update whose resourceVersion is not
//!   newer than what is pending, in flight or acknowledged (in this queue, or in the
//!   [`SyncStore`] for objects the queue has not seen) is dropped as stale; deletes (operation
//!   `delete` or a `deletionTimestamp`) always enqueue; nothing replaces or follows a pending or
//!   in-flight `delete`; ACK messages without a resourceVersion (except deletes) or with a
//!   non-numeric one are rejected, never a panic.
//! * **Per-object order.** A newer version is never written while an older one of the same object
//!   is in flight, so the edge sees each object's versions in increasing order even with many
//!   messages in flight.
//! * **Window.** Up to [`QueueConfig::window`] ACK messages of *different* objects are in flight
//!   at once (default 32). Window 1 is upstream's stop-and-wait.
//! * **At-least-once.** An in-flight message is retransmitted, with the same message id, when its
//!   deadline passes: 5 s, then ×2 per attempt up to a cap, with deterministic jitter. There is no
//!   retry limit: a message leaves only when ACKed, when a newer version of its object replaces
//!   it at its next deadline, or when the queue is dropped (the node is deleted or cloudcore
//!   exits; the sync controller reconciles from the [`SyncStore`] after a restart). Because the id
//!   stays the same, an ACK of any earlier copy counts; duplicate and late ACKs are no-ops.
//! * **Disconnect.** [`NodeQueue::on_disconnect`] puts every in-flight message back to pending,
//!   first in line and in send order, so the next connection starts by re-sending what was
//!   unconfirmed. The queue itself survives the connection (upstream starts every session with an
//!   empty pool and relies on the sync controller's 5 s reconcile). Unsent NO-ACK messages are
//!   dropped, as upstream loses them too.
//! * **Sync records.** [`NodeQueue::on_ack`] does not write anything: it returns an [`Acked`] whose
//!   [`SyncRecord`] the driver batches into [`SyncStore::apply`]. Upstream makes 2–3
//!   kube-apiserver calls per ACK inside the send loop, which at scale delays node status until
//!   nodes flap NotReady (kubeedge#7278).
//!
//! # Compatibility with stock edgecore
//!
//! The edge needs no change: edgecore's metamanager persists each message and answers it with a
//! `response` whose `parent_msg_id` is that message's id, independently of any other message, and
//! cloudhub matches ACKs only by that id. Nothing in the protocol says "one at a time"; upstream's
//! stop-and-wait is a property of its sender loop. The windowed sender keeps the guarantees the
//! edge relies on — each object's versions arrive in order, the newest version is eventually
//! delivered, duplicates carry the same id and content — and only removes the throughput ceiling
//! of one message per round trip per node.
//!
//! Messages returned by [`NodeQueue::next_to_send`] are already in wire form: the queue strips the
//! `node/<id>/` resource prefix at enqueue time (upstream's `TrimMessage`).
//!
//! # Plugging in the ObjectSync CRDs
//!
//! [`SyncStore`] is the seam: a CRD-backed implementation answers
//! [`acked_version`](SyncStore::acked_version) from the ObjectSync/ClusterObjectSync informer cache
//! and turns [`apply`](SyncStore::apply) batches into status updates and deletes, keeping only the
//! newest record per object of a batch. [`MemorySyncStore`] is the in-memory implementation.

mod classify;
mod key;
mod queue;
mod sync;

pub use classify::{Delivery, classify};
pub use key::{ObjectKey, ObjectRef, is_delete, object_key};
pub use queue::{
    Acked, DisconnectSummary, EnqueueOutcome, NodeQueue, Outgoing, QueueConfig, QueueStats,
    RejectReason, SendKind,
};
pub use sync::{MemorySyncStore, SyncRecord, SyncStore};

#[cfg(test)]
mod tests;
