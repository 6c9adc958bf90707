//! Encode/decode throughput for real upstream frames. Plain timing, no harness: prints one line
//! per frame that can be pasted into BENCHMARKS.md.
//!
//!     cargo bench -p ke-message --bench codec

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn measure(mut op: impl FnMut()) -> (u64, Duration) {
    // Run for at least a second so the rate is stable on a busy machine.
    let started = Instant::now();
    let mut iterations = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            op();
        }
        iterations += 100;
    }
    (iterations, started.elapsed())
}

fn main() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/messages");
    for name in [
        "01-pod-insert.json",
        "02-pod-insert-ack.json",
        "27-twin-edge-updated.json",
    ] {
        let bytes = std::fs::read(golden.join(name)).expect("golden frame");
        let message = ke_message::decode(&bytes).expect("golden frame decodes");

        let (n, took) = measure(|| {
            black_box(ke_message::decode(black_box(&bytes)).expect("decodes"));
        });
        let decode_rate = n as f64 / took.as_secs_f64();
        let (n, took) = measure(|| {
            black_box(ke_message::encode_frame(black_box(&message)));
        });
        let encode_rate = n as f64 / took.as_secs_f64();
        println!(
            "{name:<28} {:>6} B  decode {:>9.0} msg/s ({:>6.1} MB/s)  encode {:>9.0} msg/s ({:>6.1} MB/s)",
            bytes.len(),
            decode_rate,
            decode_rate * bytes.len() as f64 / 1e6,
            encode_rate,
            encode_rate * bytes.len() as f64 / 1e6,
        );
    }
}
