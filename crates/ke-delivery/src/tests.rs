//! Behaviour of `NodeQueue`, driven with explicit instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ke_message::Message;
use proptest::prelude::*;
use serde_json::json;

use crate::queue::retry_delay;
use crate::{
    EnqueueOutcome, MemorySyncStore, NodeQueue, ObjectKey, Outgoing, QueueConfig, RejectReason,
    SendKind, SyncRecord, SyncStore,
};

const NODE: &str = "edge-1";

fn config(window: usize) -> QueueConfig {
    QueueConfig {
        window,
        jitter: 0.0,
        ..QueueConfig::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn object_msg(uid: &str, rv: Option<u64>, op: &str, id: &str) -> Message {
    let mut msg = Message::default()
        .with_route(
            "edgecontroller",
            "resource",
            format!("node/{NODE}/default/configmap/cm-{uid}"),
            op,
        )
        .with_content(json!({"metadata": {
            "name": format!("cm-{uid}"),
            "namespace": "default",
            "uid": uid,
            "resourceVersion": rv.map(|rv| rv.to_string()).unwrap_or_default(),
        }}));
    msg.header.id = id.to_owned();
    if let Some(rv) = rv {
        msg.header.resource_version = rv.to_string();
    }
    msg
}

fn update(uid: &str, rv: u64, id: &str) -> Message {
    object_msg(uid, Some(rv), "update", id)
}

fn drain(q: &mut NodeQueue, now: Instant) -> Vec<Outgoing> {
    std::iter::from_fn(|| q.next_to_send(now)).collect()
}

fn ids(out: &[Outgoing]) -> Vec<&str> {
    out.iter().map(|o| o.message.header.id.as_str()).collect()
}

struct Fixture {
    q: NodeQueue,
    store: MemorySyncStore,
    t0: Instant,
}

impl Fixture {
    fn new(config: QueueConfig) -> Fixture {
        Fixture {
            q: NodeQueue::new(NODE, config),
            store: MemorySyncStore::new(),
            t0: Instant::now(),
        }
    }

    fn at(&self, s: u64) -> Instant {
        self.t0 + secs(s)
    }

    fn drain(&mut self, now: Instant) -> Vec<Outgoing> {
        let out = drain(&mut self.q, now);
        self.q.assert_invariants();
        out
    }

    /// Enqueues a message that must be accepted.
    fn put(&mut self, msg: Message) {
        let out = self.enqueue(msg);
        assert!(
            matches!(out, EnqueueOutcome::Queued | EnqueueOutcome::Coalesced),
            "{out:?}"
        );
    }

    fn enqueue(&mut self, msg: Message) -> EnqueueOutcome {
        let out = self.q.enqueue(msg, self.t0, &self.store);
        self.q.assert_invariants();
        out
    }
}

#[test]
fn ten_rapid_updates_while_one_is_in_flight_cost_exactly_two_sends() {
    let mut f = Fixture::new(config(32));
    assert_eq!(f.enqueue(update("a", 1, "m1")), EnqueueOutcome::Queued);
    let first = f.drain(f.at(0));
    assert_eq!(ids(&first), ["m1"]);

    assert_eq!(f.enqueue(update("a", 2, "m2")), EnqueueOutcome::Queued);
    for rv in 3..=11 {
        assert_eq!(
            f.enqueue(update("a", rv, &format!("m{rv}"))),
            EnqueueOutcome::Coalesced
        );
    }
    // The newer version waits for the in-flight one: never two in flight for one object.
    assert!(f.drain(f.at(1)).is_empty());
    assert_eq!(f.q.pending_len(), 1);

    let acked = f.q.on_ack("m1", f.at(2)).expect("in flight");
    assert_eq!(acked.resource_version, Some(1));
    let second = f.drain(f.at(2));
    assert_eq!(ids(&second), ["m11"]);
    assert_eq!(second[0].message.header.resource_version, "11");
    assert!(f.q.on_ack("m11", f.at(3)).is_some());
    assert!(f.q.is_idle());
    assert_eq!(f.q.stats().sent_first, 2);
    assert_eq!(f.q.stats().coalesced, 9);
}

#[test]
fn stale_versions_are_dropped_against_pending_in_flight_and_acked() {
    let mut f = Fixture::new(config(32));
    assert_eq!(f.enqueue(update("a", 5, "m5")), EnqueueOutcome::Queued);
    assert_eq!(
        f.enqueue(update("a", 5, "m5b")),
        EnqueueOutcome::DroppedStale
    );
    assert_eq!(
        f.enqueue(update("a", 4, "m4")),
        EnqueueOutcome::DroppedStale
    );
    f.drain(f.at(0));
    // In flight now: still the gate.
    assert_eq!(
        f.enqueue(update("a", 3, "m3")),
        EnqueueOutcome::DroppedStale
    );
    f.q.on_ack("m5", f.at(1)).unwrap();
    // Acknowledged: still the gate.
    assert_eq!(
        f.enqueue(update("a", 5, "m5c")),
        EnqueueOutcome::DroppedStale
    );
    assert_eq!(f.enqueue(update("a", 6, "m6")), EnqueueOutcome::Queued);
    assert_eq!(f.q.stats().dropped_stale, 4);
}

#[test]
fn the_sync_store_gates_objects_the_queue_has_not_seen() {
    let mut f = Fixture::new(config(32));
    let key = ObjectKey::Uid("a".into());
    let object = crate::ObjectRef::from_message(&update("a", 1, "x"));
    f.store.record_acked(NODE, &key, 10, &object);
    f.store
        .record_acked("other-node", &ObjectKey::Uid("b".into()), 10, &object);

    assert_eq!(
        f.enqueue(update("a", 9, "m9")),
        EnqueueOutcome::DroppedStale
    );
    assert_eq!(
        f.enqueue(update("a", 10, "m10")),
        EnqueueOutcome::DroppedStale
    );
    assert_eq!(f.enqueue(update("a", 11, "m11")), EnqueueOutcome::Queued);
    // Records are per node.
    assert_eq!(f.enqueue(update("b", 1, "b1")), EnqueueOutcome::Queued);
}

#[test]
fn stale_traffic_for_unknown_objects_leaves_no_state_behind() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 2, "a2"));
    f.drain(f.at(0));
    f.q.on_ack("a2", f.at(0)).unwrap();
    assert_eq!(f.q.tracked_objects(), 1, "the acked version is remembered");
    let no_uid = Message::default()
        .with_route(
            "edgecontroller",
            "resource",
            "default/configmap/x",
            "update",
        )
        .with_content(json!({"data": {}}));
    assert!(matches!(
        f.enqueue(no_uid),
        EnqueueOutcome::Rejected(RejectReason::MissingResourceVersion { .. })
    ));
    assert_eq!(f.q.tracked_objects(), 1);
}

#[test]
fn window_limits_messages_in_flight() {
    let mut f = Fixture::new(config(3));
    for i in 0..5 {
        f.put(update(&format!("o{i}"), 1, &format!("m{i}")));
    }
    assert_eq!(ids(&f.drain(f.at(0))), ["m0", "m1", "m2"]);
    assert_eq!((f.q.in_flight_len(), f.q.pending_len()), (3, 2));
    f.q.on_ack("m1", f.at(1)).unwrap();
    assert_eq!(ids(&f.drain(f.at(1))), ["m3"]);
    f.q.on_ack("m0", f.at(1)).unwrap();
    f.q.on_ack("m2", f.at(1)).unwrap();
    assert_eq!(ids(&f.drain(f.at(1))), ["m4"]);
    f.q.assert_invariants();
}

#[test]
fn window_one_is_stop_and_wait() {
    let mut f = Fixture::new(QueueConfig {
        jitter: 0.0,
        ..QueueConfig::stop_and_wait()
    });
    for i in 0..3 {
        f.put(update(&format!("o{i}"), 1, &format!("m{i}")));
    }
    for i in 0..3 {
        let sent = f.drain(f.at(i));
        assert_eq!(ids(&sent), [format!("m{i}").as_str()]);
        // Nothing else goes out until the ACK, only the retransmission of the same message.
        let retry = f.drain(f.at(i) + secs(5));
        assert_eq!(ids(&retry), [format!("m{i}").as_str()]);
        f.q.on_ack(&format!("m{i}"), f.at(i) + secs(6)).unwrap();
    }
    assert!(f.q.is_idle());
}

#[test]
fn retransmits_with_the_same_id_and_capped_exponential_backoff() {
    let mut f = Fixture::new(QueueConfig {
        window: 4,
        initial_retry: secs(5),
        backoff_factor: 2,
        max_retry: secs(30),
        jitter: 0.0,
        no_ack_capacity: 16,
    });
    f.put(update("a", 1, "m1"));
    let mut now = f.at(0);
    assert_eq!(f.drain(now)[0].kind, SendKind::First);

    let mut gaps = Vec::new();
    for attempt in 1..=6 {
        let deadline = f.q.next_deadline().expect("in flight");
        gaps.push(deadline - now);
        // Not a moment early.
        assert!(f.drain(deadline - Duration::from_millis(1)).is_empty());
        now = deadline;
        let sent = f.drain(now);
        assert_eq!(ids(&sent), ["m1"]);
        assert_eq!(sent[0].kind, SendKind::Retransmit { attempt });
        f.q.assert_invariants();
    }
    assert_eq!(
        gaps,
        [secs(5), secs(10), secs(20), secs(30), secs(30), secs(30)]
    );
    // No retry limit: still in flight, and the ACK of any copy completes it.
    let acked = f.q.on_ack("m1", now).unwrap();
    assert_eq!(acked.transmissions, 7);
    assert_eq!(acked.latency, secs(125));
    assert_eq!(f.q.next_deadline(), None);
}

#[test]
fn jitter_only_shortens_waits_and_is_deterministic() {
    let (initial, max) = (secs(5), secs(60));
    for step in 0..10 {
        let plain = retry_delay(initial, 2, max, 0.0, "m1", step);
        let mut distinct = std::collections::HashSet::new();
        for id in ["m1", "m2", "m3", "m4", "m5", "m6"] {
            let d = retry_delay(initial, 2, max, 0.2, id, step);
            assert!(d <= plain && d >= plain.mul_f64(0.8), "{d:?} vs {plain:?}");
            assert_eq!(d, retry_delay(initial, 2, max, 0.2, id, step));
            distinct.insert(d);
        }
        assert!(distinct.len() > 1, "jitter spreads messages apart");
    }
    // Huge steps saturate at the cap instead of overflowing.
    assert_eq!(retry_delay(initial, 2, max, 0.0, "m", 200), max);
}

#[test]
fn duplicate_and_late_acks_are_harmless() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 1, "m1"));
    f.drain(f.at(0));
    // Retransmitted once; both copies get ACKed.
    f.drain(f.at(5));
    assert!(f.q.on_ack("m1", f.at(6)).is_some());
    assert!(f.q.on_ack("m1", f.at(7)).is_none());
    assert!(f.q.on_ack("never-sent", f.at(7)).is_none());
    assert!(f.q.on_ack("", f.at(7)).is_none());
    assert_eq!(f.q.stats().unknown_acks, 3);
    assert!(f.q.is_idle());
    f.q.assert_invariants();
}

#[test]
fn a_newer_pending_version_replaces_an_unacked_one_at_its_deadline() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 1, "m1"));
    f.drain(f.at(0));
    f.put(update("a", 2, "m2"));
    // At the deadline the stale version is not resent; the newest goes out instead.
    let sent = f.drain(f.at(5));
    assert_eq!(ids(&sent), ["m2"]);
    assert_eq!(sent[0].kind, SendKind::First);
    assert_eq!(f.q.stats().superseded, 1);
    // The old copy's ACK arriving late changes nothing.
    assert!(f.q.on_ack("m1", f.at(6)).is_none());
    assert_eq!(f.q.in_flight_len(), 1);
    assert_eq!(f.q.on_ack("m2", f.at(6)).unwrap().resource_version, Some(2));
    f.q.assert_invariants();
}

#[test]
fn deletes_always_enqueue_go_without_a_version_and_are_never_overwritten() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 5, "u5"));
    f.drain(f.at(0));
    f.q.on_ack("u5", f.at(0)).unwrap();

    // A delete goes out even without a version, and even with an old one.
    assert_eq!(
        f.enqueue(object_msg("a", None, "delete", "d1")),
        EnqueueOutcome::Queued
    );
    assert_eq!(
        f.enqueue(object_msg("a", Some(3), "delete", "d2")),
        EnqueueOutcome::Coalesced
    );
    // Updates cannot replace or follow it, however new.
    assert_eq!(
        f.enqueue(update("a", 99, "u99")),
        EnqueueOutcome::DroppedStale
    );
    let sent = f.drain(f.at(1));
    assert_eq!(ids(&sent), ["d2"]);
    assert_eq!(
        f.enqueue(update("a", 100, "u100")),
        EnqueueOutcome::DroppedStale
    );

    let acked = f.q.on_ack("d2", f.at(2)).unwrap();
    assert!(acked.was_delete);
    assert!(matches!(acked.record, Some(SyncRecord::Deleted { .. })));
    // Forgotten afterwards, as upstream drops its store entry, so memory does not grow with
    // deleted objects.
    assert_eq!(f.q.tracked_objects(), 0);
}

#[test]
fn a_delete_behind_an_in_flight_update_waits_its_turn() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 1, "u1"));
    f.drain(f.at(0));
    assert_eq!(
        f.enqueue(object_msg("a", Some(2), "delete", "d")),
        EnqueueOutcome::Queued
    );
    assert!(f.drain(f.at(1)).is_empty());
    f.q.on_ack("u1", f.at(1)).unwrap();
    assert_eq!(ids(&f.drain(f.at(1))), ["d"]);
}

#[test]
fn graceful_deletion_updates_count_as_deletes_but_yield_to_a_real_delete() {
    let mut f = Fixture::new(config(32));
    let graceful = |rv: u64, id: &str| {
        let mut m = update("a", rv, id);
        m.content["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        m
    };
    f.put(update("a", 7, "u7"));
    f.drain(f.at(0));
    f.q.on_ack("u7", f.at(0)).unwrap();
    // Enqueued even though not newer than the acknowledged version.
    assert_eq!(f.enqueue(graceful(6, "g6")), EnqueueOutcome::Queued);
    // A plain update cannot overtake a deletion in progress, however new (upstream drops it too).
    assert_eq!(
        f.enqueue(update("a", 9, "u9")),
        EnqueueOutcome::DroppedStale
    );
    assert_eq!(f.enqueue(graceful(9, "g9")), EnqueueOutcome::Coalesced);
    assert_eq!(
        f.enqueue(object_msg("a", None, "delete", "d")),
        EnqueueOutcome::Coalesced
    );
    assert_eq!(f.enqueue(graceful(8, "g8")), EnqueueOutcome::DroppedStale);
    let sent = f.drain(f.at(1));
    assert_eq!(ids(&sent), ["d"]);
}

#[test]
fn unusable_messages_are_rejected_not_panics() {
    let mut f = Fixture::new(config(32));
    for bad in ["abc", "+1", "-1", "1.5", "18446744073709551616", " 7"] {
        let mut m = update("a", 1, &format!("bad{bad}"));
        m.header.resource_version = bad.to_owned();
        match f.enqueue(m) {
            EnqueueOutcome::Rejected(RejectReason::InvalidResourceVersion { source, .. }) => {
                assert_eq!(source.value, bad)
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let mut no_rv = update("a", 1, "no-rv");
    no_rv.header.resource_version.clear();
    let rejected = f.enqueue(no_rv);
    assert!(matches!(
        rejected,
        EnqueueOutcome::Rejected(RejectReason::MissingResourceVersion { .. })
    ));
    if let EnqueueOutcome::Rejected(reason) = rejected {
        assert_eq!(
            reason.to_string(),
            "message no-rv requires an ack but has no resourceVersion"
        );
    }

    let mut unkeyable = Message::default().with_content(json!(null));
    unkeyable.header.resource_version = "1".into();
    assert!(matches!(
        f.enqueue(unkeyable),
        EnqueueOutcome::Rejected(RejectReason::NoObjectKey { .. })
    ));

    assert_eq!(f.enqueue(update("a", 1, "same-id")), EnqueueOutcome::Queued);
    assert!(matches!(
        f.enqueue(update("b", 1, "same-id")),
        EnqueueOutcome::Rejected(RejectReason::DuplicateMessageId { .. })
    ));
    assert_eq!(f.q.stats().rejected, 9);
}

#[test]
fn disconnect_requeues_in_flight_first_in_send_order() {
    let mut f = Fixture::new(config(2));
    f.put(update("a", 1, "a1"));
    f.put(update("b", 1, "b1"));
    f.put(update("c", 1, "c1"));
    assert_eq!(ids(&f.drain(f.at(0))), ["a1", "b1"]);
    // Retransmissions push the backoff up.
    assert_eq!(ids(&f.drain(f.at(5))), ["a1", "b1"]);
    // b gets a newer version while b1 is in flight: b1 will be superseded, not requeued.
    f.put(update("b", 2, "b2"));
    f.q.assert_invariants();

    let no_ack = Message::default()
        .with_route(
            "edgecontroller",
            "resource",
            "node/edge-1/default/podstatus/p",
            "response",
        )
        .with_content("OK");
    assert_eq!(f.enqueue(no_ack), EnqueueOutcome::NoAck);

    let summary = f.q.on_disconnect();
    f.q.assert_invariants();
    assert_eq!(
        (summary.requeued, summary.superseded, summary.dropped_no_ack),
        (1, 1, 1)
    );
    assert_eq!(
        (f.q.in_flight_len(), f.q.pending_len(), f.q.no_ack_len()),
        (0, 3, 0)
    );
    assert_eq!(f.q.next_deadline(), None);

    // New connection: what was in flight goes first, then the rest in order.
    let t = f.at(100);
    assert_eq!(ids(&f.drain(t)), ["a1", "b2"]);
    // Backoff restarted for the new connection.
    assert_eq!(f.q.next_deadline(), Some(t + secs(5)));
    f.q.on_ack("a1", t).unwrap();
    assert_eq!(ids(&f.drain(t)), ["c1"]);
}

#[test]
fn an_ack_that_races_the_disconnect_still_counts() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 1, "a1"));
    f.put(update("b", 1, "b1"));
    f.drain(f.at(0));
    f.q.on_disconnect();
    let acked = f.q.on_ack("a1", f.at(1)).expect("the edge persisted it");
    assert_eq!(acked.latency, secs(1));
    f.q.assert_invariants();
    assert_eq!(ids(&f.drain(f.at(2))), ["b1"]);
}

#[test]
fn no_ack_messages_go_first_in_fifo_order_within_capacity() {
    let mut f = Fixture::new(QueueConfig {
        no_ack_capacity: 2,
        ..config(32)
    });
    f.put(update("a", 1, "a1"));
    for i in 0..3 {
        let mut m = Message::default()
            .with_route(
                "devicecontroller",
                "twin",
                "node/edge-1/membership",
                "update",
            )
            .with_content(json!({"added_devices": []}));
        m.header.id = format!("n{i}");
        assert_eq!(f.enqueue(m), EnqueueOutcome::NoAck);
    }
    let sent = f.drain(f.at(0));
    assert_eq!(ids(&sent), ["n1", "n2", "a1"]);
    assert_eq!(sent[0].kind, SendKind::NoAck);
    assert_eq!(sent[0].message.router.resource, "membership");
    assert_eq!(f.q.stats().no_ack_dropped, 1);
}

#[test]
fn outgoing_messages_are_in_wire_form() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 1, "a1"));
    let sent = f.drain(f.at(0));
    assert_eq!(sent[0].message.router.resource, "default/configmap/cm-a");
}

#[test]
fn responses_enqueue_at_an_equal_version_but_never_go_backwards() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 5, "u5"));
    f.drain(f.at(0));
    f.q.on_ack("u5", f.at(0)).unwrap();
    let response = |rv: u64, id: &str| object_msg("a", Some(rv), "response", id);
    assert_eq!(f.enqueue(response(5, "r5")), EnqueueOutcome::Queued);
    assert_eq!(f.enqueue(response(4, "r4")), EnqueueOutcome::DroppedStale);
    assert_eq!(ids(&f.drain(f.at(1))), ["r5"]);
}

#[test]
fn acks_produce_sync_records_only_for_uid_keyed_resource_objects() {
    let mut f = Fixture::new(config(32));
    f.put(update("a", 3, "a3"));
    let mut twin = update("t", 1, "t1");
    twin.router.group = "twin".into();
    f.put(twin);
    let mut by_name = update("x", 1, "x1");
    by_name.content = json!({"data": {}});
    f.put(by_name);
    f.drain(f.at(0));

    let acked = f.q.on_ack("a3", f.at(2)).unwrap();
    let Some(SyncRecord::Acked {
        key,
        object,
        resource_version,
    }) = &acked.record
    else {
        panic!("{acked:?}")
    };
    assert_eq!(
        (key, resource_version, object.name.as_str()),
        (&ObjectKey::Uid("a".into()), &3, "cm-a")
    );
    assert_eq!(object.namespace.as_deref(), Some("default"));
    assert_eq!(acked.latency, secs(2));
    f.store.apply(NODE, acked.record.as_slice());
    assert_eq!(
        f.store.acked_version(NODE, &ObjectKey::Uid("a".into())),
        Some(3)
    );

    assert_eq!(f.q.on_ack("t1", f.at(2)).unwrap().record, None);
    let by_name = f.q.on_ack("x1", f.at(2)).unwrap();
    assert_eq!(
        by_name.key,
        ObjectKey::Resource("default/configmap/cm-x".into())
    );
    assert_eq!(by_name.record, None);
}

#[test]
fn introspection_reports_ages_and_deadlines() {
    let mut f = Fixture::new(config(32));
    assert_eq!(f.q.next_deadline(), None);
    assert_eq!(f.q.oldest_in_flight_age(f.at(0)), None);
    f.put(update("a", 1, "a1"));
    f.drain(f.at(1));
    f.put(update("b", 1, "b1"));
    f.drain(f.at(3));
    assert_eq!(f.q.oldest_in_flight_age(f.at(4)), Some(secs(3)));
    assert_eq!(f.q.next_deadline(), Some(f.at(6)));
    assert_eq!(f.q.node(), NODE);
}

// ---------------------------------------------------------------------------------------------
// Property: random interleavings never reorder an object's versions and never lose the newest.

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        object: usize,
        rv: u64,
        response: bool,
    },
    Send {
        max: usize,
    },
    Ack {
        pick: usize,
    },
    Advance {
        secs: u64,
    },
    Disconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 1..40u64, prop::bool::weighted(0.15))
            .prop_map(|(object, rv, response)| Op::Enqueue { object, rv, response }),
        3 => (1..6usize).prop_map(|max| Op::Send { max }),
        3 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => (0..40u64).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Disconnect),
    ]
}

fn uid(object: usize) -> String {
    format!("obj-{object}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn per_object_order_holds_and_the_newest_version_always_arrives(
        window in 1..5usize,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut q = NodeQueue::new(NODE, QueueConfig { window, ..QueueConfig::default() });
        let mut store = MemorySyncStore::new();
        let mut now = Instant::now();
        let mut next_id = 0u64;
        // Every id the edge has received (acks may be duplicated, late or stale).
        let mut wire: Vec<String> = Vec::new();
        let mut sent_rvs: HashMap<String, Vec<u64>> = HashMap::new();
        let mut newest: HashMap<String, u64> = HashMap::new();
        let mut acked: HashMap<String, u64> = HashMap::new();

        let mut record = |out: &Outgoing, wire: &mut Vec<String>| {
            let m = &out.message;
            let rv: u64 = m.header.resource_version.parse().unwrap();
            let uid = m.content["metadata"]["uid"].as_str().unwrap().to_owned();
            let seq = sent_rvs.entry(uid.clone()).or_default();
            if let Some(&last) = seq.last() {
                prop_assert!(rv >= last, "{uid}: sent {rv} after {last}");
            }
            seq.push(rv);
            wire.push(m.header.id.clone());
            Ok(())
        };

        for op in ops {
            match op {
                Op::Enqueue { object, rv, response } => {
                    next_id += 1;
                    let mut m = update(&uid(object), rv, &format!("id-{next_id}"));
                    if response {
                        m.router.operation = "response".into();
                    }
                    let outcome = q.enqueue(m, now, &store);
                    prop_assert!(!matches!(outcome, EnqueueOutcome::Rejected(_)), "{outcome:?}");
                    let n = newest.entry(uid(object)).or_insert(0);
                    *n = (*n).max(rv);
                }
                Op::Send { max } => {
                    for _ in 0..max {
                        let Some(out) = q.next_to_send(now) else { break };
                        record(&out, &mut wire)?;
                    }
                }
                Op::Ack { pick } => {
                    if !wire.is_empty() {
                        let id = wire[pick % wire.len()].clone();
                        if let Some(a) = q.on_ack(&id, now) {
                            let uid = match &a.key { ObjectKey::Uid(u) => u.clone(), k => panic!("{k}") };
                            let rv = a.resource_version.unwrap();
                            let prev = acked.insert(uid.clone(), rv);
                            prop_assert!(prev.is_none_or(|p| p <= rv), "{uid}: acked {rv} after {prev:?}");
                            store.apply(NODE, a.record.as_slice());
                        }
                    }
                }
                Op::Advance { secs } => now += Duration::from_secs(secs),
                Op::Disconnect => { q.on_disconnect(); }
            }
            q.assert_invariants();
            prop_assert!(q.in_flight_len() <= window);
        }

        // The edge now ACKs everything it receives: the queue must drain, delivering each
        // object's newest version.
        for _ in 0..1000 {
            if q.is_idle() { break; }
            now += Duration::from_secs(61);
            let round: Vec<_> = std::iter::from_fn(|| q.next_to_send(now)).collect();
            for out in &round {
                record(out, &mut wire)?;
            }
            for out in &round {
                if let Some(a) = q.on_ack(&out.message.header.id, now) {
                    let ObjectKey::Uid(uid) = &a.key else { unreachable!() };
                    acked.insert(uid.clone(), a.resource_version.unwrap());
                    store.apply(NODE, a.record.as_slice());
                }
            }
            q.assert_invariants();
        }
        prop_assert!(q.is_idle(), "queue did not drain");
        for (uid, rv) in &newest {
            prop_assert_eq!(acked.get(uid), Some(rv), "newest version of {} not acked", uid);
            prop_assert_eq!(store.acked_version(NODE, &ObjectKey::Uid(uid.clone())), Some(*rv));
        }
    }
}
