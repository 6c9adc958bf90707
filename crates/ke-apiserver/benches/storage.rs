//! Throughput of the SQLite store: sustained durable writes/s (create + update of ~3 KiB
//! pod-like JSON) with 1 and 16 concurrent writers, and LIST of 10,000 objects under a prefix.
//!
//! `cargo bench -p ke-apiserver --bench storage` (set `KE_BENCH_SECS` to change the 3 s runs).

use std::time::{Duration, Instant};

use ke_apiserver::storage::sqlite::{Durability, SqliteOptions, SqliteStorage};
use ke_apiserver::storage::{ListOptions, Storage};

fn pod_json(name: &str, generation: u64) -> Vec<u8> {
    let mut pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"6f1c2a9e-0000-4000-8000-{generation:012}","labels":{{"app":"bench","tier":"backend"}},"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":""#
    );
    // Pad to about 3 KiB, like a real pod with its status and managed fields.
    while pod.len() < 2900 {
        pod.push_str("abcdefghijklmnopqrstuvwxyz0123456789");
    }
    pod.push_str(r#""}},"spec":{"containers":[{"name":"app","image":"registry.example/app:1.2.3"}]},"status":{"phase":"Running"}}"#);
    pod.into_bytes()
}

async fn writes_per_sec(store: &SqliteStorage, writers: usize, secs: f64, tag: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("/core/pods/default/{tag}-{w}-{i}");
                let created = store.create(&key, pod_json(&key, i)).await.expect("create");
                store
                    .update(&key, pod_json(&key, i + 1), Some(created.mod_revision))
                    .await
                    .expect("update");
                n += 2;
                i += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("KE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (durability, label) in [
            (Durability::Full, "synchronous=FULL (default)"),
            (Durability::Normal, "synchronous=NORMAL"),
        ] {
            for writers in [1, 16] {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStorage::open_with(
                    dir.path().join("bench.db"),
                    SqliteOptions {
                        durability,
                        ..SqliteOptions::default()
                    },
                )
                .expect("open");
                let rate = writes_per_sec(&store, writers, secs, "w").await;
                println!(
                    "writes  {label:<28} {writers:>2} writer(s): {rate:>8.0} writes/s \
                     (create+update, ~3 KiB values)"
                );
                store.close().await;
            }
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStorage::open_with(
            dir.path().join("bench.db"),
            SqliteOptions {
                durability: Durability::Normal,
                ..SqliteOptions::default()
            },
        )
        .expect("open");
        // 10,000 objects in the listed namespace, as many around it.
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..20_000).step_by(16) {
                    let ns = if i % 2 == 0 { "listed" } else { "other" };
                    let key = format!("/core/pods/{ns}/pod-{i:05}");
                    store.create(&key, pod_json(&key, 0)).await.expect("create");
                }
            }));
        }
        for t in tasks {
            t.await.expect("fill");
        }
        let mut best = f64::MAX;
        let mut total = 0.0;
        let runs = 10;
        for _ in 0..runs {
            let start = Instant::now();
            let page = store
                .list("/core/pods/listed/", ListOptions::default())
                .await
                .expect("list");
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(page.items.len(), 10_000);
            best = best.min(ms);
            total += ms;
        }
        println!(
            "list    10,000 objects (~3 KiB) under a prefix: {:.1} ms mean, {best:.1} ms best \
             of {runs}",
            total / runs as f64
        );
        let start = Instant::now();
        let mut start_after = None;
        let mut n = 0;
        loop {
            let page = store
                .list(
                    "/core/pods/listed/",
                    ListOptions {
                        limit: Some(500),
                        start_after,
                    },
                )
                .await
                .expect("list page");
            n += page.items.len();
            match page.continue_after {
                Some(k) => start_after = Some(k),
                None => break,
            }
        }
        assert_eq!(n, 10_000);
        println!(
            "list    10,000 objects in pages of 500: {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        store.close().await;
    });
}
