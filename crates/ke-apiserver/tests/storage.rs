//! The SQLite store as the API server sees it: real database files in temporary directories.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ke_apiserver::storage::sqlite::{Durability, SqliteOptions, SqliteStorage};
use ke_apiserver::storage::{EventKind, ListOptions, Revision, Storage, StorageError, WatchEvent};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.db")
}

fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path).expect("open store")
}

/// Tests that are not about durability skip the fsync to keep the suite fast.
fn open_fast(path: &Path) -> SqliteStorage {
    SqliteStorage::open_with(
        path,
        SqliteOptions {
            durability: Durability::Normal,
            ..SqliteOptions::default()
        },
    )
    .expect("open store")
}

async fn next(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("watch event within 10 s")
        .expect("watch still open")
}

async fn expect_quiet(rx: &mut mpsc::Receiver<WatchEvent>) {
    if let Ok(event) = timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected watch event {event:?}");
    }
}

#[tokio::test]
async fn crud_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_fast(&db(&dir));
    let key = "/core/configmaps/default/a";

    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert!(s.get(key).await.unwrap().is_none());

    let created = s.create(key, b"v1".to_vec()).await.unwrap();
    assert_eq!(created.create_revision, 1);
    assert_eq!(created.mod_revision, 1);
    assert_eq!(s.get(key).await.unwrap(), Some(created.clone()));

    match s.create(key, b"again".to_vec()).await {
        Err(StorageError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match s.update(key, b"v2".to_vec(), Some(7)).await {
        Err(StorageError::Conflict {
            key: k,
            expected,
            current,
        }) => assert_eq!((k.as_str(), expected, current), (key, 7, 1)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    match s
        .update("/core/configmaps/default/nope", vec![], None)
        .await
    {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Failed writes do not consume revisions.
    assert_eq!(s.current_revision().await.unwrap(), 1);

    let updated = s.update(key, b"v2".to_vec(), Some(1)).await.unwrap();
    assert_eq!(
        (updated.create_revision, updated.mod_revision),
        (1, 2),
        "update keeps create_revision"
    );
    let unconditional = s.update(key, b"v3".to_vec(), None).await.unwrap();
    assert_eq!(unconditional.mod_revision, 3);
    assert_eq!(s.get(key).await.unwrap().unwrap().value, &b"v3"[..]);

    match s.delete(key, Some(2)).await {
        Err(StorageError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (2, 3)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let deleted = s.delete(key, Some(3)).await.unwrap();
    assert_eq!(deleted.value, &b"v3"[..], "delete returns the last value");
    assert_eq!(deleted.mod_revision, 4, "with the delete's revision");
    assert_eq!(deleted.create_revision, 1);
    assert!(s.get(key).await.unwrap().is_none());
    assert!(matches!(
        s.delete(key, None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.current_revision().await.unwrap(), 4);

    // A deleted key can be created again, as a new object.
    let recreated = s.create(key, b"new".to_vec()).await.unwrap();
    assert_eq!((recreated.create_revision, recreated.mod_revision), (5, 5));
    s.close().await;
}

#[tokio::test]
async fn revisions_strictly_increase_across_writes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut last = 0;
    for round in 0..3 {
        let s = open_fast(&path);
        assert_eq!(s.current_revision().await.unwrap(), last, "after reopen");
        for i in 0..20 {
            let key = format!("/core/pods/ns/p{round}-{i}");
            let o = s.create(&key, b"{}".to_vec()).await.unwrap();
            assert!(o.mod_revision > last);
            last = o.mod_revision;
            let o = s.update(&key, b"{}".to_vec(), Some(last)).await.unwrap();
            assert!(o.mod_revision > last);
            last = o.mod_revision;
        }
        if round == 1 {
            // Compacting the whole log must not let the counter restart.
            s.compact(last).await.unwrap();
        }
        s.close().await;
    }
    let s = open_fast(&path);
    assert_eq!(s.current_revision().await.unwrap(), last);
    let o = s.create("/core/pods/ns/after", vec![]).await.unwrap();
    assert_eq!(o.mod_revision, last + 1);
    s.close().await;
}

#[tokio::test]
async fn list_paging_returns_every_item_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_fast(&db(&dir));
    let prefix = "/core/configmaps/ns1/";
    let mut expected = Vec::new();
    for i in 0..250 {
        // `_` and `%` would be wildcards in LIKE; here they are plain characters.
        let key = format!("{prefix}cm_{i:03}%");
        s.create(&key, format!("{i}").into_bytes()).await.unwrap();
        expected.push(key);
    }
    for other in [
        "/core/configmaps/ns10/x",
        "/core/configmaps/ns0/x",
        "/core/configmaps/ns1",
        "/core/configmaps/ns2/x",
    ] {
        s.create(other, vec![]).await.unwrap();
    }
    expected.sort();

    let all = s.list(prefix, ListOptions::default()).await.unwrap();
    assert_eq!(all.revision, s.current_revision().await.unwrap());
    assert!(all.continue_after.is_none());
    let keys: Vec<_> = all.items.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, expected);

    for page_size in [1, 7, 100, 250, 1000] {
        let mut seen = Vec::new();
        let mut start_after = None;
        loop {
            let page = s
                .list(
                    prefix,
                    ListOptions {
                        limit: Some(page_size),
                        start_after: start_after.clone(),
                    },
                )
                .await
                .unwrap();
            assert!(page.items.len() <= page_size);
            seen.extend(page.items.iter().map(|o| o.key.clone()));
            match page.continue_after {
                Some(k) => {
                    assert_eq!(Some(&k), page.items.last().map(|o| &o.key));
                    start_after = Some(k);
                }
                None => break,
            }
        }
        assert_eq!(seen, expected, "page size {page_size}");
    }

    // Items written between pages: every object that exists throughout is seen exactly once.
    let first = s
        .list(
            prefix,
            ListOptions {
                limit: Some(100),
                start_after: None,
            },
        )
        .await
        .unwrap();
    s.create(&format!("{prefix}zzz-late"), vec![])
        .await
        .unwrap();
    s.delete(&expected[0], None).await.unwrap();
    let rest = s
        .list(
            prefix,
            ListOptions {
                limit: None,
                start_after: first.continue_after.clone(),
            },
        )
        .await
        .unwrap();
    assert!(rest.revision > first.revision);
    let mut seen: Vec<_> = first.items.iter().map(|o| o.key.clone()).collect();
    seen.extend(rest.items.iter().map(|o| o.key.clone()));
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate");
    for k in &expected[1..] {
        assert!(unique.contains(k), "{k} missing");
    }
    s.close().await;
}

#[tokio::test]
async fn prefix_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_fast(&db(&dir));
    let mut w1 = s.watch("/core/configmaps/ns1/", 0).await.unwrap();
    s.create("/core/configmaps/ns10/a", vec![]).await.unwrap();
    s.create("/core/configmaps/ns1", vec![]).await.unwrap();
    s.create("/core/configmaps/ns1/a", vec![]).await.unwrap();
    s.create("/core/configmaps/ns1/b_c", vec![]).await.unwrap();
    s.create("/core/configmaps/ns1a/x", vec![]).await.unwrap();

    assert_eq!(next(&mut w1).await.object.key, "/core/configmaps/ns1/a");
    assert_eq!(next(&mut w1).await.object.key, "/core/configmaps/ns1/b_c");
    expect_quiet(&mut w1).await;

    // Replay from the log applies the same range.
    let mut replay = s.watch("/core/configmaps/ns1/", 0).await.unwrap();
    assert_eq!(next(&mut replay).await.revision, 3);
    assert_eq!(next(&mut replay).await.revision, 4);
    expect_quiet(&mut replay).await;

    let list = s
        .list("/core/configmaps/ns1/", ListOptions::default())
        .await
        .unwrap();
    let keys: Vec<_> = list.items.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["/core/configmaps/ns1/a", "/core/configmaps/ns1/b_c"]);

    // The empty prefix selects everything.
    let all = s.list("", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 5);
    s.close().await;
}

/// Writes to `/core/pods/ns/` (watched) and `/core/pods/other/` (not); returns the revisions
/// of the watched writes.
async fn write_mixed(s: &SqliteStorage, tag: &str, n: usize) -> Vec<Revision> {
    let mut revs = Vec::new();
    for i in 0..n {
        let key = format!("/core/pods/ns/{tag}-{}", i % 10);
        let o = match s.get(&key).await.unwrap() {
            None => s.create(&key, format!("{tag}{i}").into_bytes()).await,
            Some(cur) if i % 7 == 3 => s.delete(&key, Some(cur.mod_revision)).await,
            Some(cur) => {
                s.update(
                    &key,
                    format!("{tag}{i}").into_bytes(),
                    Some(cur.mod_revision),
                )
                .await
            }
        }
        .unwrap();
        revs.push(o.mod_revision);
        s.create(&format!("/core/pods/other/{tag}-{i}"), vec![])
            .await
            .unwrap();
    }
    revs
}

#[tokio::test]
async fn watch_replays_then_goes_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_fast(&db(&dir));
    let revs = write_mixed(&s, "a", 100).await;
    let from = revs[39];

    let mut w = s.watch("/core/pods/ns/", from).await.unwrap();
    // Live writes race with the replay on purpose.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { write_mixed(&s, "b", 100).await })
    };
    let live_revs = writer.await.unwrap();
    let expected: Vec<Revision> = revs[40..].iter().chain(&live_revs).copied().collect();

    let mut got = Vec::new();
    let mut values = Vec::new();
    for _ in 0..expected.len() {
        let e = next(&mut w).await;
        assert_eq!(e.revision, e.object.mod_revision);
        got.push(e.revision);
        values.push(e);
    }
    assert_eq!(got, expected, "exactly the writes after {from}, in order");
    expect_quiet(&mut w).await;

    // Event kinds and values are the writes' own.
    for e in &values {
        let kind_ok = match e.kind {
            EventKind::Added => e.object.create_revision == e.revision,
            EventKind::Modified => e.object.create_revision < e.revision,
            EventKind::Deleted => !e.object.value.is_empty(),
        };
        assert!(kind_ok, "{e:?}");
    }
    s.close().await;
}

/// Watches started at random moments while writers run, from revisions both in the backlog
/// (more than one replay page back) and current: each sees every later write exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_started_during_writes_have_no_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_fast(&db(&dir));
    for i in 0..1500 {
        s.create(&format!("/core/events/ns/pre{i}"), vec![])
            .await
            .unwrap();
    }
    let total_per_writer = 600;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..total_per_writer {
                    s.create(&format!("/core/events/ns/w{w}-{i}"), vec![])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let final_rev = 1500 + 4 * total_per_writer as Revision;
    let mut watchers = Vec::new();
    for k in 0..12u64 {
        let now = s.current_revision().await.unwrap();
        let after = now.saturating_sub((k % 4) * 400);
        let mut w = s.watch("/core/events/", after).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut expected = after + 1;
            while expected <= final_rev {
                let e = next(&mut w).await;
                assert_eq!(e.revision, expected, "watch from {after}");
                expected += 1;
            }
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    for w in watchers {
        w.await.unwrap();
    }
    s.close().await;
}

#[tokio::test]
async fn watch_resumes_seamlessly_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let s = open_fast(&path);
    let first = write_mixed(&s, "a", 50).await;
    let mut w = s.watch("/core/pods/ns/", 0).await.unwrap();
    let mut last_seen = 0;
    for &rev in &first {
        let e = next(&mut w).await;
        assert_eq!(e.revision, rev);
        last_seen = e.revision;
    }
    // Closing the store ends the watch.
    s.close().await;
    assert!(
        timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get("/core/pods/ns/a-1").await.is_err(), "closed handle");

    let s = open_fast(&path);
    let second = write_mixed(&s, "b", 30).await;
    let mut w = s.watch("/core/pods/ns/", last_seen).await.unwrap();
    let third = write_mixed(&s, "c", 30).await;
    for &rev in second.iter().chain(&third) {
        assert_eq!(next(&mut w).await.revision, rev);
    }
    expect_quiet(&mut w).await;
    s.close().await;
}

#[tokio::test]
async fn watch_from_compacted_revision_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let s = open_fast(&path);
    write_mixed(&s, "a", 50).await;
    s.compact(60).await.unwrap();

    match s.watch("/core/pods/", 59).await {
        Err(StorageError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (59, 60))
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    // Exactly at the compaction point the history needed (> 60) is still there.
    let mut w = s.watch("/core/pods/", 60).await.unwrap();
    assert_eq!(next(&mut w).await.revision, 61);
    // Compacting backwards is a no-op; compacting the future is refused.
    s.compact(10).await.unwrap();
    assert!(s.compact(1_000_000).await.is_err());
    s.close().await;

    // The compaction point survives a restart.
    let s = open_fast(&path);
    assert!(matches!(
        s.watch("/core/pods/", 0).await,
        Err(StorageError::Compacted { oldest: 60, .. })
    ));
    s.close().await;
}

#[tokio::test]
async fn automatic_compaction_keeps_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open_with(
        db(&dir),
        SqliteOptions {
            durability: Durability::Normal,
            keep_revisions: 100,
            compact_every: 10,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    for i in 0..400 {
        s.create(&format!("/core/secrets/ns/s{i}"), vec![])
            .await
            .unwrap();
    }
    let current = s.current_revision().await.unwrap();
    assert_eq!(current, 400);
    assert!(matches!(
        s.watch("/core/secrets/", 0).await,
        Err(StorageError::Compacted { .. })
    ));
    // The last `keep_revisions` revisions stay watchable.
    let mut w = s.watch("/core/secrets/", current - 100).await.unwrap();
    assert_eq!(next(&mut w).await.revision, current - 99);
    // Objects themselves are never compacted.
    let list = s
        .list("/core/secrets/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 400);
    s.close().await;
}

#[tokio::test]
async fn slow_watcher_is_closed_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open_with(
        db(&dir),
        SqliteOptions {
            durability: Durability::Normal,
            watch_buffer: 4,
            broadcast_capacity: 4,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let mut w = s.watch("/core/", 0).await.unwrap();
    for i in 0..200 {
        s.create(&format!("/core/pods/ns/p{i}"), vec![])
            .await
            .unwrap();
    }
    let mut expected = 1;
    while let Some(e) = timeout(Duration::from_secs(10), w.recv()).await.unwrap() {
        assert_eq!(e.revision, expected, "no event skipped");
        expected += 1;
    }
    assert!(expected <= 200, "the lagging watcher was closed");
    // A fresh watch from the last delivered revision continues where it stopped.
    let mut w = s.watch("/core/", expected - 1).await.unwrap();
    for rev in expected..=200 {
        assert_eq!(next(&mut w).await.revision, rev);
    }
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_succeed_with_unique_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db(&dir));
    let mut w = s.watch("/core/configmaps/", 0).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                let key = format!("/core/configmaps/ns{t}/cm{i}");
                let o = s.create(&key, vec![b'x'; 100]).await.unwrap();
                revs.push(o.mod_revision);
                let o = s
                    .update(&key, vec![b'y'; 100], Some(o.mod_revision))
                    .await
                    .unwrap();
                revs.push(o.mod_revision);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let revs = t.await.unwrap();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "per-task order");
        all.extend(revs);
    }
    all.sort_unstable();
    let n = all.len() as Revision;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "unique and gap-free");
    for rev in 1..=n {
        assert_eq!(next(&mut w).await.revision, rev);
    }
    // Optimistic concurrency under contention: exactly one of many racing updates wins.
    let cur = s.create("/core/configmaps/race/x", vec![]).await.unwrap();
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update("/core/configmaps/race/x", vec![i], Some(cur.mod_revision))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    s.close().await;
}

#[tokio::test]
async fn unusable_database_is_a_backend_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    match SqliteStorage::open(&garbage) {
        Err(StorageError::Backend(msg)) => {
            assert!(msg.contains(&*garbage.to_string_lossy()), "{msg}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    let missing_dir = dir.path().join("no/such/dir/store.db");
    match SqliteStorage::open(&missing_dir) {
        Err(StorageError::Backend(msg)) => {
            assert!(msg.contains(&*missing_dir.to_string_lossy()), "{msg}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    match SqliteStorage::open(dir.path()) {
        Err(StorageError::Backend(msg)) => {
            assert!(msg.contains(&*dir.path().to_string_lossy()), "{msg}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

const CHILD_ENV: &str = "KE_STORAGE_KILL9_CHILD_DB";

/// Not a test on its own: the child process of `acknowledged_writes_survive_kill_9`. It writes
/// until killed, printing every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = open(Path::new(&path));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/core/pods/ns/t{t}-{i}");
                let o = s.create(&key, vec![b'p'; 3000]).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {key} {}", o.mod_revision).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let parse = |line: &str| -> Option<(String, Revision)> {
        let mut parts = line.strip_prefix("ack ")?.split(' ');
        Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
    };
    for line in lines.by_ref() {
        if let Some(ack) = parse(&line.unwrap()) {
            acked.push(ack);
            if acked.len() == 500 {
                break;
            }
        }
    }
    assert_eq!(acked.len(), 500, "child wrote");
    child.kill().unwrap(); // SIGKILL
    // Acknowledgements already in the pipe count too.
    for line in lines {
        match line {
            Ok(line) => acked.extend(parse(&line)),
            Err(_) => break,
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed mid-way");

    let s = open(&path);
    for (key, rev) in &acked {
        let o = s
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} at {rev} lost"));
        assert_eq!(o.mod_revision, *rev);
    }
    let max = acked.iter().map(|(_, r)| *r).max().unwrap();
    let current = s.current_revision().await.unwrap();
    assert!(current >= max);
    // The store keeps working, and revisions continue above everything acknowledged.
    let o = s.create("/core/pods/ns/after-crash", vec![]).await.unwrap();
    assert_eq!(o.mod_revision, current + 1);
    s.close().await;
}
