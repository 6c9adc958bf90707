//! The `ke-apiserver` binary killed and restarted under a real Kubernetes client (kube-rs):
//! acknowledged writes survive `kill -9`, a watch resumed from its last resourceVersion sees
//! every change after it exactly once and in order, a resume from compacted history gets
//! 410 Gone, and kube-runtime's watcher rides through the restart by itself.
//!
//! Plain HTTP on loopback (`--insecure-http`) keeps TLS out of the client under test.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use ke_testkit::Daemon;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(dir: &Path, port: u16, keep: u64) -> Daemon {
    let bind = format!("127.0.0.1:{port}");
    let keep = keep.to_string();
    let mut d = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_ke-apiserver")),
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--bind",
            &bind,
            "--insecure-http",
            "--keep-revisions",
            &keep,
        ],
    );
    d.wait_for_log("serving plain http", WAIT);
    d
}

fn client(port: u16) -> Client {
    let config = Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    Client::try_from(config).unwrap()
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"v": value}
    }))
    .unwrap()
}

fn rv(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// `(type, name, resourceVersion)` of the next `n` events, or fewer if the stream is quiet for
/// a second.
async fn events<S>(stream: &mut S, n: usize) -> Vec<(String, String, u64)>
where
    S: futures_util::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await else {
            break;
        };
        let (kind, obj) = match ev.expect("watch event") {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        };
        out.push((
            kind.to_owned(),
            obj.metadata.name.clone().unwrap(),
            rv(&obj),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_watches_resume_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(dir.path(), port, 100);
    let api: Api<ConfigMap> = Api::namespaced(client(port), "default");
    let pp = PostParams::default();

    for i in 0..5 {
        api.create(&pp, &cm(&format!("cm-{i}"), "a")).await.unwrap();
    }
    let list_rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &list_rv)
        .await
        .unwrap()
        .boxed();
    let mut acknowledged = Vec::new();
    for i in 5..10 {
        acknowledged.push(api.create(&pp, &cm(&format!("cm-{i}"), "a")).await.unwrap());
    }
    let seen = events(&mut stream, 5).await;
    let names: Vec<&str> = seen.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["cm-5", "cm-6", "cm-7", "cm-8", "cm-9"]);
    let last_rv = seen.last().unwrap().2;

    // kill -9 while the watch is open: every acknowledged create is there after the restart.
    server.stop_with(Signal::SIGKILL, WAIT);
    drop(stream);
    let _server = start(dir.path(), port, 100);
    let api: Api<ConfigMap> = Api::namespaced(client(port), "default");
    let stored = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(stored.items.len(), 10);
    for created in &acknowledged {
        let got = api
            .get(created.metadata.name.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid);
        assert_eq!(rv(&got), rv(created));
    }

    // Changes made while the client was away, then a resume from its last resourceVersion.
    api.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"v": "b"}})),
    )
    .await
    .unwrap();
    api.delete("cm-1", &DeleteParams::default()).await.unwrap();
    api.create(&pp, &cm("cm-10", "a")).await.unwrap();
    let mut resumed = api
        .watch(&WatchParams::default(), &last_rv.to_string())
        .await
        .unwrap()
        .boxed();
    let after = events(&mut resumed, 10).await;
    let kinds: Vec<(&str, &str)> = after
        .iter()
        .map(|(k, n, _)| (k.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("MODIFIED", "cm-0"),
            ("DELETED", "cm-1"),
            ("ADDED", "cm-10")
        ]
    );
    assert!(
        after.windows(2).all(|w| w[0].2 < w[1].2),
        "in revision order: {after:?}"
    );
    assert!(after[0].2 > last_rv);

    // History older than the kept window is gone: resuming there is 410, as in Kubernetes.
    for i in 0..250 {
        api.patch(
            "cm-2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stale = api
        .watch(&WatchParams::default(), &last_rv.to_string())
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stale.next())
        .await
        .expect("an answer")
    {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_rides_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start(dir.path(), port, 10_000);
    let api: Api<ConfigMap> = Api::namespaced(client(port), "default");
    api.create(&PostParams::default(), &cm("before", "a"))
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watched = api.clone();
    let task = tokio::spawn(async move {
        // Errors while the server is down are yielded, and the stream carries on with backoff.
        let mut s = watcher(watched, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                && let Some(name) = o.metadata.name
            {
                let _ = tx.send(name);
            }
        }
    });
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "before");

    server.stop_with(Signal::SIGKILL, WAIT);
    let _server = start(dir.path(), port, 10_000);
    let api: Api<ConfigMap> = Api::namespaced(client(port), "default");
    api.create(&PostParams::default(), &cm("after", "a"))
        .await
        .unwrap();
    let next = loop {
        let n = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the watcher reconnects")
            .unwrap();
        if n == "after" {
            break n;
        }
    };
    assert_eq!(next, "after");
    task.abort();
}
