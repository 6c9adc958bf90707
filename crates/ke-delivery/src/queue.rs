//! The per-node delivery state machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ke_message::constants::group;
use ke_message::resource::split_node_prefix;
use ke_message::{Message, ResourceVersionError, compare_resource_versions};

use crate::classify::{Delivery, classify};
use crate::key::{ObjectKey, ObjectRef, is_delete, object_key};
use crate::sync::{SyncRecord, SyncStore};

/// Tuning of a [`NodeQueue`]. `Default` gives a 32-message window and upstream's 5 s first
/// retry interval.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// ACK messages written but not yet acknowledged, at most. 1 is upstream's stop-and-wait;
    /// 0 is treated as 1.
    pub window: usize,
    /// Wait before the first retransmission (upstream's `sendRetryInterval`). Values under
    /// 1 ms are raised to 1 ms so a driver can never spin on retransmissions.
    pub initial_retry: Duration,
    /// Each retransmission multiplies the wait by this factor (0 is treated as 1)…
    pub backoff_factor: u32,
    /// …up to this ceiling, which jitter never exceeds.
    pub max_retry: Duration,
    /// Fraction of each wait, in `[0, 0.5]` (clamped), taken off at random so that nodes which
    /// lost their edges at the same moment do not retransmit in lockstep. The "randomness" is a
    /// hash of the message id and the attempt number: deterministic, so tests and replays are
    /// exact, yet different for every message.
    pub jitter: f64,
    /// No-ACK messages waiting to be written, at most; beyond it the oldest are dropped (and
    /// counted). They are replies and fire-and-forget traffic, so an edge that does not read
    /// must not make cloudcore's memory grow without bound.
    pub no_ack_capacity: usize,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            window: 32,
            initial_retry: Duration::from_secs(5),
            backoff_factor: 2,
            max_retry: Duration::from_secs(60),
            jitter: 0.2,
            no_ack_capacity: 4096,
        }
    }
}

impl QueueConfig {
    /// Upstream's behaviour: one ACK message in flight per node.
    pub fn stop_and_wait() -> QueueConfig {
        QueueConfig {
            window: 1,
            ..QueueConfig::default()
        }
    }
}

/// What [`NodeQueue::enqueue`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum EnqueueOutcome {
    /// Waiting to be sent; the object had nothing pending.
    Queued,
    /// Replaced an older pending version of the same object, which will never be sent.
    Coalesced,
    /// Not newer than what is pending, in flight or acknowledged for the object, or an update
    /// behind a pending delete. Dropping it is what keeps per-object order.
    DroppedStale,
    /// Classified NO-ACK; appended to the no-ACK FIFO.
    NoAck,
    /// Cannot be delivered reliably; nothing was queued.
    Rejected(RejectReason),
}

/// Why an ACK message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Upstream drops these too: without a version the queue cannot tell old from new.
    #[error("message {msg_id} requires an ack but has no resourceVersion")]
    MissingResourceVersion { msg_id: String },
    /// Upstream panics on these.
    #[error("message {msg_id} has an unusable resourceVersion: {source}")]
    InvalidResourceVersion {
        msg_id: String,
        #[source]
        source: ResourceVersionError,
    },
    #[error("message {msg_id} has neither a metadata.uid nor a resource to key it by")]
    NoObjectKey { msg_id: String },
    /// ACKs are matched by message id, so two live messages must not share one.
    #[error("message id {msg_id} is already pending or in flight")]
    DuplicateMessageId { msg_id: String },
}

/// A message to write to the edge now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Already in wire form: the `node/<id>/` resource prefix is removed at enqueue time, as
    /// upstream's `TrimMessage` does before writing. Shared, so retransmissions cost no copy.
    pub message: Arc<Message>,
    pub kind: SendKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// From the no-ACK FIFO: written once, never tracked.
    NoAck,
    /// First transmission of an ACK message (also the first one on a new connection after
    /// [`NodeQueue::on_disconnect`] put it back).
    First,
    /// The deadline passed without an ACK; same message, same id. `attempt` counts from 1.
    Retransmit { attempt: u32 },
}

/// The result of an ACK that matched an in-flight (or re-queued) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub key: ObjectKey,
    /// `None` only for deletes sent without a version.
    pub resource_version: Option<u64>,
    /// Operation `delete`: the object is gone from the edge and its sync record must go too.
    /// (A `deletionTimestamp` update is acknowledged like any update, as upstream does.)
    pub was_delete: bool,
    /// From the first transmission to the ACK, across retransmissions and reconnects.
    pub latency: Duration,
    /// From enqueue to the ACK: queueing plus latency.
    pub since_enqueue: Duration,
    /// How many times the message was written.
    pub transmissions: u32,
    /// What to persist, for group `resource` objects keyed by UID (upstream records only
    /// those); the driver batches these into [`SyncStore::apply`].
    pub record: Option<SyncRecord>,
}

/// What [`NodeQueue::on_disconnect`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DisconnectSummary {
    /// In-flight messages put back to pending, to be sent first on the next connection.
    pub requeued: usize,
    /// In-flight messages discarded because a newer version of the object was already pending.
    pub superseded: usize,
    /// Unsent no-ACK messages discarded.
    pub dropped_no_ack: usize,
}

/// Monotonic counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: u64,
    pub coalesced: u64,
    pub dropped_stale: u64,
    pub rejected: u64,
    pub no_ack_enqueued: u64,
    /// No-ACK messages lost to the capacity limit or a disconnect.
    pub no_ack_dropped: u64,
    pub sent_no_ack: u64,
    pub sent_first: u64,
    pub retransmitted: u64,
    /// In-flight messages abandoned for a newer pending version of their object.
    pub superseded: u64,
    pub acked: u64,
    /// ACKs for ids we do not hold: duplicates, or late ACKs of superseded messages.
    pub unknown_acks: u64,
}

/// One version of an object on its way to the edge.
#[derive(Debug)]
struct Entry {
    msg: Arc<Message>,
    rv: Option<u64>,
    /// Operation `delete`: ends the object's life on the edge.
    op_delete: bool,
    /// `op_delete` or a `deletionTimestamp`: the object is going away.
    deleting: bool,
    enqueued: Instant,
    first_sent: Option<Instant>,
    transmissions: u32,
    /// Index into the backoff sequence; restarts on a new connection, where the old
    /// connection's silence says nothing about the new one.
    backoff_step: u32,
}

#[derive(Debug)]
struct InFlight {
    key: ObjectKey,
    entry: Entry,
    deadline: Instant,
}

/// Invariants: `pending` is always newer than the in-flight version (or a delete); the key is
/// in `NodeQueue::ready` exactly when `pending` is set and nothing is in flight.
#[derive(Debug, Default)]
struct ObjectState {
    pending: Option<Entry>,
    /// Send sequence number of the in-flight version.
    in_flight: Option<u64>,
    /// Newest version the edge acknowledged while this queue existed, or the sync store's
    /// record when the object was first seen.
    acked_rv: Option<u64>,
}

/// Where a live message id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdSlot {
    Pending,
    InFlight(u64),
}

/// Reliable delivery to one edge node; see the crate docs for the model.
#[derive(Debug)]
pub struct NodeQueue {
    node: String,
    window: usize,
    initial_retry: Duration,
    backoff_factor: u32,
    max_retry: Duration,
    jitter: f64,
    no_ack_capacity: usize,

    objects: HashMap<ObjectKey, ObjectState>,
    /// Objects with a pending version and nothing in flight, in the order they became ready.
    ready: VecDeque<ObjectKey>,
    /// Keyed by send sequence number.
    in_flight: BTreeMap<u64, InFlight>,
    ids: HashMap<String, IdSlot>,
    deadlines: BTreeSet<(Instant, u64)>,
    no_ack: VecDeque<Arc<Message>>,
    pending_count: usize,
    next_seq: u64,
    stats: QueueStats,
}

impl NodeQueue {
    pub fn new(node: impl Into<String>, config: QueueConfig) -> NodeQueue {
        NodeQueue {
            node: node.into(),
            window: config.window.max(1),
            initial_retry: config.initial_retry.max(Duration::from_millis(1)),
            backoff_factor: config.backoff_factor.max(1),
            max_retry: config.max_retry.max(config.initial_retry),
            jitter: if config.jitter.is_nan() {
                0.0
            } else {
                config.jitter.clamp(0.0, 0.5)
            },
            no_ack_capacity: config.no_ack_capacity,
            objects: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: BTreeMap::new(),
            ids: HashMap::new(),
            deadlines: BTreeSet::new(),
            no_ack: VecDeque::new(),
            pending_count: 0,
            next_seq: 0,
            stats: QueueStats::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Accepts a cloud→edge message addressed to this node (either resource form).
    ///
    /// `store` is consulted only for objects the queue holds no state for, so a version the edge
    /// acknowledged before a cloudcore restart is not sent again.
    pub fn enqueue<S: SyncStore + ?Sized>(
        &mut self,
        mut msg: Message,
        now: Instant,
        store: &S,
    ) -> EnqueueOutcome {
        if classify(&msg) == Delivery::NoAck {
            trim(&mut msg);
            self.no_ack.push_back(Arc::new(msg));
            self.stats.no_ack_enqueued += 1;
            while self.no_ack.len() > self.no_ack_capacity {
                self.no_ack.pop_front();
                self.stats.no_ack_dropped += 1;
            }
            return EnqueueOutcome::NoAck;
        }
        let outcome = self.enqueue_ack(msg, now, store);
        match &outcome {
            EnqueueOutcome::Queued => self.stats.queued += 1,
            EnqueueOutcome::Coalesced => self.stats.coalesced += 1,
            EnqueueOutcome::DroppedStale => self.stats.dropped_stale += 1,
            EnqueueOutcome::Rejected(_) => self.stats.rejected += 1,
            EnqueueOutcome::NoAck => {}
        }
        outcome
    }

    fn enqueue_ack<S: SyncStore + ?Sized>(
        &mut self,
        mut msg: Message,
        now: Instant,
        store: &S,
    ) -> EnqueueOutcome {
        let msg_id = || msg.header.id.clone();
        let Some(key) = object_key(&msg) else {
            return EnqueueOutcome::Rejected(RejectReason::NoObjectKey { msg_id: msg_id() });
        };
        let delete = is_delete(&msg);
        let op_delete = msg.router.operation == ke_message::constants::operation::DELETE;
        let rv = match parse_rv(&msg.header.resource_version) {
            Ok(rv) => rv,
            Err(source) => {
                return EnqueueOutcome::Rejected(RejectReason::InvalidResourceVersion {
                    msg_id: msg_id(),
                    source,
                });
            }
        };
        if rv.is_none() && !delete {
            return EnqueueOutcome::Rejected(RejectReason::MissingResourceVersion {
                msg_id: msg_id(),
            });
        }
        if self.ids.contains_key(&msg.header.id) {
            return EnqueueOutcome::Rejected(RejectReason::DuplicateMessageId { msg_id: msg_id() });
        }

        // Only reached by messages that will be stored or that compare against a known version,
        // so the state created here is never empty for long.
        if !self.objects.contains_key(&key) {
            let acked_rv = store.acked_version(&self.node, &key);
            self.objects.insert(
                key.clone(),
                ObjectState {
                    acked_rv,
                    ..ObjectState::default()
                },
            );
        }
        let state = &self.objects[&key];
        let latest = state
            .pending
            .as_ref()
            .or_else(|| self.in_flight_entry(state.in_flight));
        // Deletion is final: once an object is going away, only further deletion events can
        // follow it (Kubernetes never clears a deletionTimestamp), and once it is deleted only
        // another delete. Anything else is an older event arriving late, and sending it would
        // resurrect the object on the edge.
        if latest.is_some_and(|e| (e.op_delete && !op_delete) || (e.deleting && !delete)) {
            return EnqueueOutcome::DroppedStale;
        }
        if !delete {
            let newest = [
                state.pending.as_ref().and_then(|e| e.rv),
                self.in_flight_entry(state.in_flight).and_then(|e| e.rv),
                state.acked_rv,
            ]
            .into_iter()
            .flatten()
            .max();
            if let (Some(rv), Some(newest)) = (rv, newest) {
                // A response answers a request the edge is blocked on, so an equal version still
                // goes out (re-sending what the edge has is harmless); an older one would move the
                // edge's copy backwards, which upstream allows and we do not.
                let stale = if msg.is_response() {
                    rv < newest
                } else {
                    rv <= newest
                };
                if stale {
                    return EnqueueOutcome::DroppedStale;
                }
            }
        }

        trim(&mut msg);
        self.ids.insert(msg.header.id.clone(), IdSlot::Pending);
        let entry = Entry {
            msg: Arc::new(msg),
            rv,
            op_delete,
            deleting: delete,
            enqueued: now,
            first_sent: None,
            transmissions: 0,
            backoff_step: 0,
        };
        let state = self
            .objects
            .get_mut(&key)
            .expect("object state inserted above");
        match state.pending.replace(entry) {
            Some(older) => {
                self.ids.remove(&older.msg.header.id);
                EnqueueOutcome::Coalesced
            }
            None => {
                self.pending_count += 1;
                if state.in_flight.is_none() {
                    self.ready.push_back(key);
                }
                EnqueueOutcome::Queued
            }
        }
    }

    fn in_flight_entry(&self, seq: Option<u64>) -> Option<&Entry> {
        seq.and_then(|seq| self.in_flight.get(&seq))
            .map(|f| &f.entry)
    }

    /// The next message to write, if any may be written at `now`: first the no-ACK FIFO, then
    /// retransmissions whose deadline has passed, then pending ACK messages while fewer than
    /// `window` are in flight. Call it until it returns `None`, then sleep until
    /// [`next_deadline`](Self::next_deadline) or the next enqueue / ACK.
    ///
    /// A retransmission whose object meanwhile got a newer pending version is not sent: the
    /// newer version replaces it in flight (the old id is forgotten, a late ACK for it is then
    /// ignored), which is the only way a message leaves without an ACK besides dropping the
    /// queue.
    pub fn next_to_send(&mut self, now: Instant) -> Option<Outgoing> {
        if let Some(message) = self.no_ack.pop_front() {
            self.stats.sent_no_ack += 1;
            return Some(Outgoing {
                message,
                kind: SendKind::NoAck,
            });
        }

        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(flight) = self.in_flight.get(&seq) else {
                continue;
            };
            let superseded = self
                .objects
                .get(&flight.key)
                .is_some_and(|s| s.pending.is_some());
            if superseded {
                let flight = self.in_flight.remove(&seq).expect("looked up above");
                self.ids.remove(&flight.entry.msg.header.id);
                if let Some(state) = self.objects.get_mut(&flight.key) {
                    state.in_flight = None;
                }
                // It takes the slot the old version held, ahead of objects that never had one.
                self.ready.push_front(flight.key);
                self.stats.superseded += 1;
                continue;
            }
            let flight = self.in_flight.get_mut(&seq).expect("looked up above");
            flight.entry.transmissions += 1;
            flight.entry.backoff_step += 1;
            let delay = retry_delay(
                self.initial_retry,
                self.backoff_factor,
                self.max_retry,
                self.jitter,
                &flight.entry.msg.header.id,
                flight.entry.backoff_step,
            );
            flight.deadline = now + delay;
            self.deadlines.insert((flight.deadline, seq));
            self.stats.retransmitted += 1;
            return Some(Outgoing {
                message: Arc::clone(&flight.entry.msg),
                kind: SendKind::Retransmit {
                    attempt: flight.entry.transmissions - 1,
                },
            });
        }

        while self.in_flight.len() < self.window {
            let key = self.ready.pop_front()?;
            let Some(state) = self.objects.get_mut(&key) else {
                continue;
            };
            let Some(mut entry) = state.pending.take() else {
                continue;
            };
            self.pending_count -= 1;
            let seq = self.next_seq;
            self.next_seq += 1;
            state.in_flight = Some(seq);
            entry.first_sent.get_or_insert(now);
            entry.transmissions += 1;
            let deadline = now
                + retry_delay(
                    self.initial_retry,
                    self.backoff_factor,
                    self.max_retry,
                    self.jitter,
                    &entry.msg.header.id,
                    entry.backoff_step,
                );
            self.ids
                .insert(entry.msg.header.id.clone(), IdSlot::InFlight(seq));
            self.deadlines.insert((deadline, seq));
            let message = Arc::clone(&entry.msg);
            self.in_flight.insert(
                seq,
                InFlight {
                    key,
                    entry,
                    deadline,
                },
            );
            self.stats.sent_first += 1;
            return Some(Outgoing {
                message,
                kind: SendKind::First,
            });
        }
        None
    }

    /// The edge acknowledged `parent_msg_id` (any edge→cloud `response` carries it). Unknown
    /// ids — duplicates, ACKs of superseded versions, responses to no-ACK traffic — return
    /// `None` and change nothing.
    ///
    /// An id that [`on_disconnect`](Self::on_disconnect) put back to pending is accepted too:
    /// the edge did persist it, the ACK just lost the race with the disconnect.
    pub fn on_ack(&mut self, parent_msg_id: &str, now: Instant) -> Option<Acked> {
        let Some(&slot) = self.ids.get(parent_msg_id) else {
            self.stats.unknown_acks += 1;
            return None;
        };
        let (key, entry) = match slot {
            IdSlot::InFlight(seq) => {
                let flight = self.in_flight.remove(&seq)?;
                self.deadlines.remove(&(flight.deadline, seq));
                if let Some(state) = self.objects.get_mut(&flight.key) {
                    state.in_flight = None;
                    if state.pending.is_some() {
                        self.ready.push_back(flight.key.clone());
                    }
                }
                (flight.key, flight.entry)
            }
            IdSlot::Pending => {
                let key = self.objects.iter().find_map(|(key, state)| {
                    state
                        .pending
                        .as_ref()
                        .filter(|e| e.msg.header.id == parent_msg_id && e.first_sent.is_some())
                        .map(|_| key.clone())
                });
                // Never sent: the edge cannot have seen it, so this is not its ACK.
                let Some(key) = key else {
                    self.stats.unknown_acks += 1;
                    return None;
                };
                let state = self.objects.get_mut(&key)?;
                let entry = state.pending.take()?;
                self.pending_count -= 1;
                self.ready.retain(|k| k != &key);
                (key, entry)
            }
        };
        self.ids.remove(parent_msg_id);
        self.stats.acked += 1;

        if let Some(state) = self.objects.get_mut(&key) {
            if entry.op_delete {
                // Forget the object like upstream drops its store entry, so deleted objects do
                // not accumulate; a pending (second) delete keeps the state alive.
                state.acked_rv = None;
                if state.pending.is_none() && state.in_flight.is_none() {
                    self.objects.remove(&key);
                }
            } else {
                state.acked_rv = state.acked_rv.max(entry.rv);
            }
        }

        let record = (entry.msg.router.group == group::RESOURCE && key.uid().is_some())
            .then(|| {
                let object = ObjectRef::from_message(&entry.msg);
                if entry.op_delete {
                    Some(SyncRecord::Deleted {
                        key: key.clone(),
                        object,
                    })
                } else {
                    entry.rv.map(|resource_version| SyncRecord::Acked {
                        key: key.clone(),
                        object,
                        resource_version,
                    })
                }
            })
            .flatten();

        Some(Acked {
            key,
            resource_version: entry.rv,
            was_delete: entry.op_delete,
            latency: entry
                .first_sent
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            since_enqueue: now.saturating_duration_since(entry.enqueued),
            transmissions: entry.transmissions,
            record,
        })
    }

    /// The connection is gone. In-flight messages go back to pending, ahead of everything else
    /// and in their original send order, to be sent first on the next connection (an in-flight
    /// version that already has a newer pending one is simply dropped). Unsent no-ACK messages
    /// are discarded, as upstream loses its whole pool: they are replies the edge re-requests
    /// and streams the next message supersedes.
    pub fn on_disconnect(&mut self) -> DisconnectSummary {
        let mut summary = DisconnectSummary {
            dropped_no_ack: self.no_ack.len(),
            ..DisconnectSummary::default()
        };
        self.stats.no_ack_dropped += self.no_ack.len() as u64;
        self.no_ack.clear();
        self.deadlines.clear();

        let in_flight = std::mem::take(&mut self.in_flight);
        for (_, flight) in in_flight.into_iter().rev() {
            let InFlight { key, mut entry, .. } = flight;
            let Some(state) = self.objects.get_mut(&key) else {
                continue;
            };
            state.in_flight = None;
            if state.pending.is_some() {
                self.ids.remove(&entry.msg.header.id);
                summary.superseded += 1;
                self.stats.superseded += 1;
            } else {
                entry.backoff_step = 0;
                self.ids
                    .insert(entry.msg.header.id.clone(), IdSlot::Pending);
                state.pending = Some(entry);
                self.pending_count += 1;
                summary.requeued += 1;
            }
            self.ready.push_front(key);
        }
        summary
    }

    /// When the earliest retransmission falls due; `None` when nothing is in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Objects with a version waiting to be sent (blocked behind an in-flight one or not).
    pub fn pending_len(&self) -> usize {
        self.pending_count
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn no_ack_len(&self) -> usize {
        self.no_ack.len()
    }

    /// Objects the queue remembers (pending, in flight or with a known acknowledged version).
    pub fn tracked_objects(&self) -> usize {
        self.objects.len()
    }

    /// Time since the first transmission of the oldest unacknowledged message.
    pub fn oldest_in_flight_age(&self, now: Instant) -> Option<Duration> {
        self.in_flight
            .values()
            .filter_map(|f| f.entry.first_sent)
            .min()
            .map(|t| now.saturating_duration_since(t))
    }

    /// Nothing pending, in flight or queued without ACK.
    pub fn is_idle(&self) -> bool {
        self.pending_count == 0 && self.in_flight.is_empty() && self.no_ack.is_empty()
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Checks the internal invariants; for tests.
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        assert!(self.in_flight.len() <= self.window, "window exceeded");
        let mut pending = 0;
        for (key, state) in &self.objects {
            let queued = self.ready.iter().filter(|k| *k == key).count();
            let want = usize::from(state.pending.is_some() && state.in_flight.is_none());
            assert_eq!(queued, want, "ready queue membership of {key}");
            if let Some(entry) = &state.pending {
                pending += 1;
                assert_eq!(self.ids.get(&entry.msg.header.id), Some(&IdSlot::Pending));
                if let Some(flight) = self.in_flight_entry(state.in_flight) {
                    assert!(
                        (!flight.op_delete || entry.op_delete)
                            && (!flight.deleting || entry.deleting),
                        "update pending behind a delete"
                    );
                }
            }
            if let Some(seq) = state.in_flight {
                let flight = &self.in_flight[&seq];
                assert_eq!(&flight.key, key);
                assert!(self.deadlines.contains(&(flight.deadline, seq)));
            }
        }
        assert_eq!(pending, self.pending_count);
        assert_eq!(self.ready.len(), {
            let mut keys: Vec<_> = self.ready.iter().collect();
            keys.sort();
            keys.dedup();
            keys.len()
        });
        assert_eq!(self.deadlines.len(), self.in_flight.len());
        for (seq, flight) in &self.in_flight {
            assert_eq!(self.objects[&flight.key].in_flight, Some(*seq));
        }
        assert_eq!(self.ids.len(), pending + self.in_flight.len());
    }
}

/// Moves the message to wire form once, so every (re)transmission is ready to write.
fn trim(msg: &mut Message) {
    if let Some((_, rest)) = split_node_prefix(&msg.router.resource) {
        msg.router.resource = rest.to_owned();
    }
}

fn parse_rv(rv: &str) -> Result<Option<u64>, ResourceVersionError> {
    if rv.is_empty() {
        return Ok(None);
    }
    // Validate exactly like ke-message's comparison (rejects '+', signs, overflow), then parse.
    compare_resource_versions(rv, "0")?;
    rv.parse().map(Some).map_err(|_| ResourceVersionError {
        value: rv.to_owned(),
    })
}

/// `initial * factor^step`, capped at `max`, minus up to `jitter` of itself.
pub(crate) fn retry_delay(
    initial: Duration,
    factor: u32,
    max: Duration,
    jitter: f64,
    msg_id: &str,
    step: u32,
) -> Duration {
    let base = factor
        .checked_pow(step)
        .map_or(max, |f| initial.saturating_mul(f))
        .min(max);
    if jitter <= 0.0 {
        return base;
    }
    let unit = (mix(msg_id, step) >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(1.0 - jitter * unit)
}

/// FNV-1a over the id, then a splitmix64 finaliser: a stable, well-spread hash that does not
/// depend on std's unspecified `Hasher` algorithms.
fn mix(msg_id: &str, step: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in msg_id.bytes().chain(step.to_le_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
