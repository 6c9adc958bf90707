//! The API server as kubectl and controllers see it: the release `ke-apiserver` binary in its
//! own process (durable SQLite, `synchronous=FULL`), driven over loopback HTTP by this one.
//!
//! * sustained writes/s: create + update of pods through the whole request path (validation,
//!   defaults, managedFields), 1 and 16 concurrent clients;
//! * LIST of 10,000 pods with a `spec.nodeName` field selector, and without one;
//! * watch fan-out: event delivery latency with 1,000 open watches;
//! * server RSS idle and with 10,000 pods stored.
//!
//! `cargo bench -p ke-apiserver --bench api` (`KE_BENCH_SECS` sets the write runs, default 3).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

const PODS: &str = "/api/v1/namespaces/default/pods";

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ke-apiserver"))
            .args(["--insecure-http", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ke-apiserver");
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(port: u16) -> SendRequest<Full<Bytes>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (send, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                return send;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("ke-apiserver did not come up: {e}"),
        }
    }
}

async fn call(
    conn: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    conn.ready().await.expect("connection ready");
    let resp = conn.send_request(req).await.expect("send");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, bytes)
}

fn pod(name: &str, node: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "backend"},
            "annotations": {"note": "x".repeat(1500)}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1.2.3",
            "ports": [{"containerPort": 8080}], "env": [{"name": "MODE", "value": "bench"}]}]}
    }))
    .expect("json")
}

async fn writes_per_sec(port: u16, clients: usize, secs: f64, tag: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(port).await;
            let mut n = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let name = format!("{tag}-{c}-{i}");
                let (code, _) = call(
                    &mut conn,
                    "POST",
                    PODS,
                    "application/json",
                    pod(&name, "node-0"),
                )
                .await;
                assert_eq!(code, 201);
                let patch = br#"{"metadata":{"labels":{"rev":"2"}}}"#.to_vec();
                let (code, _) = call(
                    &mut conn,
                    "PATCH",
                    &format!("{PODS}/{name}"),
                    "application/merge-patch+json",
                    patch,
                )
                .await;
                assert_eq!(code, 200);
                n += 2;
                i += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Opens a watch on pods and reports, for every MODIFIED event carrying a `sent-us`
/// annotation, the delay until it arrived here.
async fn watcher(
    port: u16,
    rv: String,
    latencies: Arc<std::sync::Mutex<Vec<u64>>>,
    ready: Arc<AtomicU64>,
) {
    let mut conn = connect(port).await;
    let req = Request::builder()
        .uri(format!(
            "{PODS}?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dwatched"
        ))
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = conn.send_request(req).await.expect("watch");
    ready.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let got = now_us();
        buf.extend_from_slice(data);
        // Only the stamp is read, by a byte search: a JSON parse per event here would make this
        // client, not the server, the bottleneck.
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Some(sent) = stamp(&line) {
                latencies
                    .lock()
                    .expect("lock")
                    .push(got.saturating_sub(sent));
            }
        }
    }
}

/// The `sent-us` annotation's value in an event line.
fn stamp(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent-us\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
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
        let server = Server::start();
        let port = server.port;
        let mut conn = connect(port).await;
        // Settle, then the idle footprint.
        let _ = call(&mut conn, "GET", "/version", "application/json", vec![]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("rss     idle: {} KiB", server.rss_kib());

        for clients in [1, 16] {
            let rate = writes_per_sec(port, clients, secs, &format!("w{clients}")).await;
            println!("writes  {clients:>2} client(s): {rate:>7.0} writes/s (POST + PATCH of ~2 KiB pods, durable)");
        }

        // 10,000 pods on 100 nodes (100 per node), beside the ones written above.
        let filled = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..16 {
            tasks.push(tokio::spawn(async move {
                let mut conn = connect(port).await;
                for i in (w..10_000).step_by(16) {
                    let name = format!("pod-{i:05}");
                    let (code, _) = call(&mut conn, "POST", PODS, "application/json", pod(&name, &format!("node-{}", i % 100))).await;
                    assert_eq!(code, 201);
                }
            }));
        }
        for t in tasks {
            t.await.expect("fill");
        }
        println!("fill    10,000 pods in {:.1} s", filled.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("rss     with 10,000+ pods stored: {} KiB", server.rss_kib());

        // The first connection has idled through the fill; the server may have closed it.
        let mut conn = connect(port).await;
        for (label, query) in [
            ("fieldSelector=spec.nodeName=node-7 (100 of 10,000+)", "?fieldSelector=spec.nodeName%3Dnode-7"),
            ("all pods", ""),
        ] {
            let mut ms = Vec::new();
            let mut items = 0;
            for _ in 0..10 {
                let start = Instant::now();
                let (code, body) = call(&mut conn, "GET", &format!("{PODS}{query}"), "application/json", vec![]).await;
                ms.push(start.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(code, 200);
                items = serde_json::from_slice::<Value>(&body).expect("list")["items"].as_array().map_or(0, Vec::len);
            }
            ms.sort_by(f64::total_cmp);
            println!("list    {label}: {items} items, median {:.0} ms, max {:.0} ms (10 runs)", percentile(&ms, 0.5), ms[9]);
        }

        println!("rss     after the lists: {} KiB", server.rss_kib());

        // Watch fan-out: 1,000 watches, 200 changes of one watched pod.
        let (code, _) = call(&mut conn, "POST", PODS, "application/json", pod("watched-pod", "watched")).await;
        assert_eq!(code, 201);
        let (_, body) = call(&mut conn, "GET", &format!("{PODS}?limit=1"), "application/json", vec![]).await;
        let rv = serde_json::from_slice::<Value>(&body).expect("list")["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_owned();
        let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ready = Arc::new(AtomicU64::new(0));
        let watchers = 1000;
        let mut handles = Vec::new();
        for _ in 0..watchers {
            handles.push(tokio::spawn(watcher(port, rv.clone(), Arc::clone(&latencies), Arc::clone(&ready))));
        }
        while ready.load(Ordering::Relaxed) < watchers {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let changes = 200;
        for i in 0..changes {
            let patch = json!({"metadata": {"annotations": {"sent-us": now_us().to_string(), "i": i.to_string()}}});
            let (code, _) = call(&mut conn, "PATCH", &format!("{PODS}/watched-pod"), "application/merge-patch+json", serde_json::to_vec(&patch).expect("json")).await;
            assert_eq!(code, 200);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let want = (watchers * changes) as usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        while latencies.lock().expect("lock").len() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut l: Vec<f64> = latencies.lock().expect("lock").iter().map(|us| *us as f64 / 1000.0).collect();
        l.sort_by(f64::total_cmp);
        println!(
            "watch   {watchers} watches x {changes} changes: {} of {want} delivered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(0.0)
        );
        println!("rss     with {watchers} open watches: {} KiB", server.rss_kib());
        for h in handles {
            h.abort();
        }
    });
}
