//! Upstream's classification of real cloud→edge frames, and one full round trip of a golden
//! pod through the queue.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ke_delivery::{
    Delivery, EnqueueOutcome, MemorySyncStore, NodeQueue, ObjectKey, QueueConfig, SendKind,
    SyncRecord, SyncStore, classify,
};
use ke_message::{Message, decode, encode_frame};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ke-message/tests/golden/messages")
}

fn golden_bytes(prefix: &str) -> Vec<u8> {
    let entry = std::fs::read_dir(golden_dir())
        .expect("golden directory")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}-")))
        })
        .unwrap_or_else(|| panic!("golden frame {prefix}"));
    std::fs::read(entry).expect("readable frame")
}

fn golden(prefix: &str) -> Message {
    decode(&golden_bytes(prefix)).expect("golden frame decodes")
}

#[test]
fn golden_cloud_to_edge_frames_are_classified_like_upstream() {
    for prefix in ["01", "16", "25", "26"] {
        assert_eq!(classify(&golden(prefix)), Delivery::Ack, "frame {prefix}");
    }
    for prefix in ["05", "06", "08", "10", "12", "14", "19", "24", "28", "21"] {
        assert_eq!(classify(&golden(prefix)), Delivery::NoAck, "frame {prefix}");
    }
}

#[test]
fn golden_frames_classify_the_same_in_cloud_internal_form() {
    // Controllers hand cloudhub `node/<id>/...`; the goldens show the trimmed wire form.
    for prefix in [
        "01", "16", "25", "26", "05", "06", "08", "10", "12", "14", "19", "21",
    ] {
        let wire = golden(prefix);
        let mut internal = wire.clone();
        internal.router.resource = format!("node/edge-node-1/{}", wire.router.resource);
        assert_eq!(classify(&internal), classify(&wire), "frame {prefix}");
    }
}

#[test]
fn a_golden_pod_goes_out_byte_for_byte_and_its_golden_ack_completes_it() {
    let store = MemorySyncStore::new();
    let mut q = NodeQueue::new("edge-node-1", QueueConfig::default());
    let t0 = Instant::now();
    let mut pod = golden("01");
    pod.router.resource = format!("node/edge-node-1/{}", pod.router.resource);
    assert_eq!(q.enqueue(pod, t0, &store), EnqueueOutcome::Queued);

    let out = q.next_to_send(t0).expect("the pod is sent");
    assert_eq!(out.kind, SendKind::First);
    assert_eq!(encode_frame(&out.message), golden_bytes("01"));

    let ack = golden("02");
    let acked = q.on_ack(&ack.header.parent_id, t0).expect("02 acks 01");
    assert_eq!(
        acked.key,
        ObjectKey::Uid("3c1d0a9e-5b7f-4c2a-9e61-2f8b7a4d9c10".into())
    );
    assert_eq!(acked.resource_version, Some(1_200_345));
    let Some(SyncRecord::Acked { object, .. }) = &acked.record else {
        panic!("{acked:?}");
    };
    assert_eq!(object.resource_type, "pod");
    assert_eq!(object.name, "nginx-6799fc88d8-4xk2p");

    let mut store = store;
    store.apply("edge-node-1", acked.record.as_slice());
    assert_eq!(
        store.acked_version("edge-node-1", &acked.key),
        Some(1_200_345)
    );
    // Re-delivering the same pod version (e.g. after a cloudcore restart) is now stale.
    let mut q = NodeQueue::new("edge-node-1", QueueConfig::default());
    assert_eq!(
        q.enqueue(golden("01"), t0, &store),
        EnqueueOutcome::DroppedStale
    );
}

#[test]
fn golden_no_ack_replies_go_through_the_fifo_unchanged() {
    let store = MemorySyncStore::new();
    let mut q = NodeQueue::new("edge-node-1", QueueConfig::default());
    let t0 = Instant::now();
    for prefix in ["05", "10", "19"] {
        assert_eq!(q.enqueue(golden(prefix), t0, &store), EnqueueOutcome::NoAck);
    }
    for prefix in ["05", "10", "19"] {
        let out = q.next_to_send(t0).expect("queued");
        assert_eq!(out.kind, SendKind::NoAck);
        assert_eq!(encode_frame(&out.message), golden_bytes(prefix));
    }
    assert!(q.is_idle());
}
