//! Enqueue → send → ACK cycles per second through `NodeQueue`, with plain `Instant` timing.
//! Messages are built before the clock starts, so the numbers are the queue's own cost.
//!
//!     cargo bench -p ke-delivery --bench queue

use std::hint::black_box;
use std::time::{Duration, Instant};

use ke_delivery::{EnqueueOutcome, MemorySyncStore, NodeQueue, QueueConfig};
use ke_message::Message;
use serde_json::json;

const OBJECTS_PER_NODE: usize = 4;

fn message(node: usize, object: usize, rv: u64) -> Message {
    let uid = format!("{node:04}-{object}");
    let mut msg = Message::default()
        .with_route(
            "edgecontroller",
            "resource",
            format!("node/edge-{node}/default/configmap/cm-{object}"),
            "update",
        )
        .with_resource_version(rv.to_string())
        .with_content(json!({"metadata": {
            "name": format!("cm-{object}"),
            "namespace": "default",
            "uid": uid,
            "resourceVersion": rv.to_string(),
        }, "data": {"key": "value"}}));
    msg.header.id = format!("m-{node}-{object}-{rv}");
    msg
}

/// Runs `rounds` rounds over `nodes` queues; each round enqueues a new version of every object,
/// sends everything and ACKs everything. Returns cycles (one message enqueued, sent and acked)
/// per second.
fn run(nodes: usize, rounds: u64) -> (u64, Duration) {
    let store = MemorySyncStore::new();
    let mut queues: Vec<NodeQueue> = (0..nodes)
        .map(|n| NodeQueue::new(format!("edge-{n}"), QueueConfig::default()))
        .collect();
    let t0 = Instant::now();
    let mut elapsed = Duration::ZERO;
    let mut cycles = 0u64;
    let mut acks = Vec::with_capacity(OBJECTS_PER_NODE);
    // Build a chunk of rounds at a time so memory stays bounded and building is not timed.
    let chunk = (200_000 / (nodes * OBJECTS_PER_NODE) as u64).max(1);
    let mut round = 1;
    while round <= rounds {
        let last = (round + chunk - 1).min(rounds);
        let mut batches: Vec<Vec<Message>> = (round..=last)
            .flat_map(|rv| {
                (0..nodes).map(move |n| {
                    (0..OBJECTS_PER_NODE)
                        .map(|o| message(n, o, rv))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        batches.reverse();
        let started = Instant::now();
        for rv in round..=last {
            let now = t0 + Duration::from_millis(rv);
            for queue in queues.iter_mut() {
                for msg in batches.pop().expect("built above") {
                    let outcome = queue.enqueue(msg, now, &store);
                    assert_eq!(outcome, EnqueueOutcome::Queued);
                }
                while let Some(out) = queue.next_to_send(now) {
                    acks.push(out.message.header.id.clone());
                }
                for id in acks.drain(..) {
                    black_box(queue.on_ack(&id, now));
                    cycles += 1;
                }
            }
        }
        elapsed += started.elapsed();
        round = last + 1;
    }
    assert!(queues.iter().all(NodeQueue::is_idle));
    (cycles, elapsed)
}

fn main() {
    for (nodes, rounds) in [(1, 250_000), (1_000, 250)] {
        let (cycles, took) = run(nodes, rounds);
        println!(
            "ke-delivery NodeQueue: {nodes:>5} node(s) x {OBJECTS_PER_NODE} objects: {:>9.0} enqueue+send+ack cycles/s ({cycles} cycles in {:.2} s, window 32)",
            cycles as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
        );
    }
}
