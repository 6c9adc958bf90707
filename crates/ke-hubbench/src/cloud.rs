//! The cloud process: a real CloudHub on a bus, a load generator that sends through the bus as
//! a controller would, and a line protocol on stdin/stdout for the driver.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ke_bus::{Bus, BusRuntime, Message};
use ke_cloudhub::{CloudHub, CloudHubSettings, Metrics, SessionPolicy};
use ke_delivery::QueueConfig;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

use crate::pki::{Layout, node_name, prepare_edges};
use crate::sys;

#[derive(clap::Args, Debug, Clone)]
pub struct CloudArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub nodes: usize,
    /// 0 picks a free port; a restarted cloud passes the first one's.
    #[arg(long, default_value_t = 0)]
    pub ws_port: u16,
    #[arg(long, default_value_t = 0)]
    pub https_port: u16,
    /// In-flight ACK messages per node (QueueConfig::window).
    #[arg(long, default_value_t = QueueConfig::default().window)]
    pub window: usize,
}

fn settings(args: &CloudArgs, layout: &Layout) -> CloudHubSettings {
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    CloudHubSettings {
        ca_cert_file: layout.ca_cert.clone(),
        ca_key_file: layout.ca_key.clone(),
        cert_file: layout.server_cert.clone(),
        key_file: layout.server_key.clone(),
        advertise_address: vec!["127.0.0.1".into()],
        dns_names: vec![],
        websocket_addr: local(args.ws_port),
        https_addr: local(args.https_port),
        monitor_addr: None,
        edge_cert_validity: Duration::from_secs(30 * 86_400),
        token_refresh: Duration::from_secs(12 * 3600),
        token_file: None,
        session: SessionPolicy {
            node_limit: args.nodes + 16,
            // cloudcore.yaml's default keepaliveInterval; the edges ping every 15 s.
            keepalive_timeout: Duration::from_secs(30),
            authorize_node_identity: true,
            authorization_debug: false,
            max_frame_bytes: ke_transport::DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: ke_cloudhub::DEFAULT_HANDSHAKE_TIMEOUT,
        },
        queue: QueueConfig {
            window: args.window,
            ..QueueConfig::default()
        },
    }
}

pub async fn run(args: CloudArgs) -> anyhow::Result<()> {
    let nofile = sys::raise_nofile()?;
    let layout = Layout::new(&args.dir);
    let started = Instant::now();
    let signed = {
        let nodes = args.nodes;
        let dir = args.dir.clone();
        tokio::task::spawn_blocking(move || prepare_edges(&Layout::new(&dir), nodes))
            .await
            .context("certificate task")??
    };
    let signing_ms = started.elapsed().as_millis();
    let mut runtime = BusRuntime::new();
    let bus = runtime.bus().clone();
    let hub = CloudHub::bind(settings(&args, &layout), bus.clone())
        .await
        .context("bind cloudhub")?;
    let addresses = hub.addresses();
    let metrics = hub.metrics();
    runtime.register(hub).context("register cloudhub")?;
    runtime.start();
    println!(
        "ready pid={} ws_port={} https_port={} nofile={nofile} signed={signed} signing_ms={signing_ms} rss_kib={}",
        std::process::id(),
        addresses.websocket.port(),
        addresses.https.port(),
        sys::rss_kib()
    );

    let mut load = Load {
        bus,
        metrics,
        next_seq: 0,
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    // EOF means the driver is gone: stop rather than linger.
    while let Some(line) = lines.next_line().await.context("read a command")? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["rss"] => println!(
                "rss kib={} connected={}",
                sys::rss_kib(),
                load.metrics.connected_nodes()
            ),
            ["wait-connected", n, ms] => {
                let (n, ms) = (n.parse()?, ms.parse()?);
                load.wait_connected(n, Duration::from_millis(ms)).await;
            }
            ["load", count, rate, nodes, ms] => {
                load.run(
                    count.parse()?,
                    rate.parse()?,
                    nodes.parse()?,
                    Duration::from_millis(ms.parse()?),
                )
                .await?;
            }
            ["quit"] => break,
            _ => println!("error unknown command {line:?}"),
        }
    }
    let report = runtime.shutdown(Duration::from_secs(10)).await;
    if !report.is_clean() {
        eprintln!("cloud: shutdown was not clean");
    }
    Ok(())
}

struct Load {
    bus: Bus,
    metrics: Arc<Metrics>,
    next_seq: u64,
}

/// (ACKs counted, sum of first-write→ACK seconds) from the hub's Prometheus text: the public
/// surface of `Metrics`, so the benchmark sees what an operator would.
fn ack_stats(metrics: &Metrics) -> (u64, f64) {
    let text = metrics.render();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    (
        value("cloudhub_ack_latency_seconds_count") as u64,
        value("cloudhub_ack_latency_seconds_sum"),
    )
}

impl Load {
    async fn wait_connected(&self, target: u64, limit: Duration) {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            let now = self.metrics.connected_nodes();
            if now >= target || started.elapsed() >= limit {
                println!(
                    "connected n={now} ms={} ok={}",
                    started.elapsed().as_millis(),
                    now >= target
                );
                return;
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                println!(
                    "progress ms={} connected={now} rss_kib={}",
                    started.elapsed().as_millis(),
                    sys::rss_kib()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends `count` ACK-required pod updates round-robin over `nodes` nodes, each a distinct
    /// object (so nothing coalesces and every message costs one ACK), at `rate` per second or
    /// as fast as the hub takes them when `rate` is 0; then waits for every ACK.
    async fn run(
        &mut self,
        count: u64,
        rate: u64,
        nodes: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let (acked_before, sum_before) = ack_stats(&self.metrics);
        let names: Vec<String> = (0..nodes).map(node_name).collect();
        let started = Instant::now();
        let cpu_before = sys::cpu_ms();
        let mut sent = 0u64;
        while sent < count {
            if started.elapsed() >= limit {
                break;
            }
            if rate > 0 {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
            self.next_seq += 1;
            let seq = self.next_seq;
            let node = &names[usize::try_from(sent).unwrap_or(0) % nodes.max(1)];
            self.bus
                .send("cloudhub", pod(node, seq))
                .await
                .context("send to cloudhub")?;
            sent += 1;
        }
        let enqueued = started.elapsed();
        let (acked, sum) = loop {
            let (acked, sum) = ack_stats(&self.metrics);
            if acked - acked_before >= sent || started.elapsed() >= limit {
                break (acked - acked_before, sum - sum_before);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let elapsed = started.elapsed();
        println!(
            "load sent={sent} acked={acked} enqueue_ms={} ms={} rate={:.0} mean_ack_ms={:.3} cloud_cpu_ms={} rss_kib={} ok={}",
            enqueued.as_millis(),
            elapsed.as_millis(),
            acked as f64 / elapsed.as_secs_f64(),
            if acked > 0 {
                sum * 1e3 / acked as f64
            } else {
                0.0
            },
            sys::cpu_ms() - cpu_before,
            sys::rss_kib(),
            sent == count && acked >= sent
        );
        Ok(())
    }
}

/// A pod update as edgecontroller sends it: ACK-required (has a resourceVersion and a uid),
/// stamped with the shared monotonic clock for the edge to measure latency.
fn pod(node: &str, seq: u64) -> Message {
    let name = format!("p{seq}");
    Message::new()
        .with_route(
            "edgecontroller",
            "resource",
            format!("node/{node}/default/pod/{name}"),
            "update",
        )
        .with_resource_version(seq.to_string())
        .with_content(json!({
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": format!("uid-{seq}"),
                "resourceVersion": seq.to_string(),
            },
            "bench_sent_ns": sys::mono_ns(),
        }))
}
