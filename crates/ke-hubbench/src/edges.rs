//! The edges process: N simulated edgehubs, each one mTLS WebSocket session dialled the way
//! edgehub dials, pinging like edgehub, ACKing at once, and redialling with edgehub's policy.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ke_edgehub::reconnect::ReconnectPolicy;
use ke_message::Message;
use ke_message::constants::{content, group, operation, resource_type, source};
use ke_transport::{EdgeIdentity, MessageReceiver, MessageSender};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::pki::{Layout, load_edges};
use crate::sys;

const PROJECT_ID: &str = "e632aba927ea4ac2b575ec1603d56f10";

#[derive(clap::Args, Debug, Clone)]
pub struct EdgesArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub nodes: usize,
    /// The cloud's WebSocket port on 127.0.0.1 (the only address this tool ever dials).
    #[arg(long)]
    pub port: u16,
    /// edgehub's default heartbeat.
    #[arg(long, default_value_t = 15)]
    pub heartbeat_secs: u64,
    /// Dials in progress at most until a node's first session exists, so "time to connect
    /// all" measures the hub's handshake rate rather than SYN-queue overflow. Redials after a
    /// break are not limited: that is the reconnect storm a restarted cloudcore sees.
    #[arg(long, default_value_t = 200)]
    pub dial_concurrency: usize,
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    sessions: AtomicU64,
    connect_errors: AtomicU64,
    tls_errors: AtomicU64,
    ws_errors: AtomicU64,
    timeouts: AtomicU64,
    breaks: AtomicU64,
    received: AtomicU64,
    acked: AtomicU64,
    /// Enqueue-to-receipt, nanoseconds, since the last `lat-reset`.
    latencies: Mutex<Vec<u64>>,
}

struct Edge {
    node: String,
    tls: Arc<ClientConfig>,
    server: SocketAddr,
    heartbeat: Duration,
}

pub async fn run(args: EdgesArgs) -> anyhow::Result<()> {
    let nofile = sys::raise_nofile()?;
    anyhow::ensure!(
        (args.nodes as u64) + 64 <= nofile,
        "{} sessions need more than the nofile limit of {nofile}",
        args.nodes
    );
    let material = load_edges(&Layout::new(&args.dir), args.nodes)?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let stats = Arc::new(Stats::default());
    let gate = Arc::new(Semaphore::new(args.dial_concurrency.max(1)));
    for (node, cert) in material.certs {
        // One config per node, built once: its certificate differs, and edgehub's per-dial
        // rebuild from files would only add file-parsing CPU to the measurement.
        let tls = ke_pki::tls::client_config_mtls(&material.ca_der, &cert, &material.key)
            .with_context(|| format!("TLS config for {node}"))?;
        let edge = Edge {
            node,
            tls: Arc::new(tls),
            server,
            heartbeat: Duration::from_secs(args.heartbeat_secs),
        };
        tokio::spawn(edge.run(Arc::clone(&stats), Arc::clone(&gate)));
    }
    println!(
        "ready pid={} nodes={} nofile={nofile} rss_kib={}",
        std::process::id(),
        args.nodes,
        sys::rss_kib()
    );

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("read a command")? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stats"] => {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                println!(
                    "stats connected={} sessions={} connect_errors={} tls_errors={} ws_errors={} timeouts={} breaks={} received={} acked={} cpu_ms={} rss_kib={}",
                    get(&stats.connected),
                    get(&stats.sessions),
                    get(&stats.connect_errors),
                    get(&stats.tls_errors),
                    get(&stats.ws_errors),
                    get(&stats.timeouts),
                    get(&stats.breaks),
                    get(&stats.received),
                    get(&stats.acked),
                    sys::cpu_ms(),
                    sys::rss_kib(),
                );
            }
            ["wait-connected", n, ms] => {
                let (target, limit): (u64, u64) = (n.parse()?, ms.parse()?);
                let started = Instant::now();
                while stats.connected.load(Ordering::Relaxed) < target
                    && started.elapsed() < Duration::from_millis(limit)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let now = stats.connected.load(Ordering::Relaxed);
                println!(
                    "connected n={now} ms={} ok={}",
                    started.elapsed().as_millis(),
                    now >= target
                );
            }
            ["lat-reset"] => {
                stats.latencies.lock().expect("latency lock").clear();
                println!("lat-reset");
            }
            ["lat"] => {
                let mut samples =
                    std::mem::take(&mut *stats.latencies.lock().expect("latency lock"));
                samples.sort_unstable();
                let pick = |q: f64| {
                    if samples.is_empty() {
                        return 0.0;
                    }
                    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
                    samples[i] as f64 / 1e3
                };
                println!(
                    "lat count={} p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0}",
                    samples.len(),
                    pick(0.5),
                    pick(0.9),
                    pick(0.99),
                    pick(0.999),
                    pick(1.0)
                );
            }
            ["quit"] => break,
            _ => println!("error unknown command {line:?}"),
        }
    }
    Ok(())
}

type CloudStream = TlsStream<TcpStream>;

/// One session, through ke-transport's lane, as edgehub's.
struct Lane {
    tx: MessageSender<CloudStream>,
    rx: MessageReceiver<CloudStream>,
}

impl Lane {
    async fn recv(&mut self) -> Result<Option<Message>, String> {
        self.rx.recv().await.map_err(|e| e.to_string())
    }

    async fn send(&mut self, message: &Message) -> Result<(), String> {
        self.tx.send(message).await.map_err(|e| e.to_string())
    }
}

enum DialFailure {
    Connect,
    Tls,
    WebSocket,
}

impl Edge {
    async fn run(self, stats: Arc<Stats>, gate: Arc<Semaphore>) {
        let policy = ReconnectPolicy::default();
        // As edgehub: attempt 0 is the quick first redial after a break; before the first
        // session ever, failures start at 1.
        let mut attempt: u32 = 1;
        let mut ever_connected = false;
        // edgehub's websocket.handshakeTimeout default.
        let handshake = Duration::from_secs(30);
        loop {
            let permit = if ever_connected {
                None
            } else {
                gate.acquire().await.ok()
            };
            let dialled = tokio::time::timeout(handshake, self.dial()).await;
            drop(permit);
            match dialled {
                Ok(Ok(lane)) => {
                    ever_connected = true;
                    stats.sessions.fetch_add(1, Ordering::Relaxed);
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    self.session(lane, &stats).await;
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                    stats.breaks.fetch_add(1, Ordering::Relaxed);
                    attempt = 0;
                }
                Ok(Err(DialFailure::Connect)) => {
                    stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(DialFailure::Tls)) => {
                    stats.tls_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(DialFailure::WebSocket)) => {
                    stats.ws_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
            let delay = policy.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }

    async fn dial(&self) -> Result<Lane, DialFailure> {
        let tcp = TcpStream::connect(self.server)
            .await
            .map_err(|_| DialFailure::Connect)?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(self.server.ip().into());
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|_| DialFailure::Tls)?;
        let identity = EdgeIdentity {
            node_id: self.node.clone(),
            project_id: PROJECT_ID.into(),
        };
        let url = ke_transport::edge_url(&self.server.to_string(), PROJECT_ID, &self.node);
        let connection =
            ke_transport::connect(tls, &url, &identity, ke_transport::DEFAULT_MAX_FRAME_BYTES)
                .await
                .map_err(|_| DialFailure::WebSocket)?;
        let (tx, rx) = connection.split();
        Ok(Lane { tx, rx })
    }

    async fn session(&self, mut lane: Lane, stats: &Stats) {
        // A random phase, so ten thousand edges that connected together do not ping together.
        let first = tokio::time::Instant::now() + self.heartbeat.mul_f64(fastrand::f64());
        let mut keepalive = tokio::time::interval_at(first, self.heartbeat);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    let ping = Message::new()
                        .with_route(source::EDGE_HUB, group::RESOURCE, resource_type::NODE, operation::KEEPALIVE)
                        .with_content(content::KEEPALIVE_PING);
                    if lane.send(&ping).await.is_err() {
                        return;
                    }
                }
                incoming = lane.recv() => {
                    let Ok(Some(message)) = incoming else { return };
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    if let Some(sent) = message.content.get("bench_sent_ns").and_then(|v| v.as_u64()) {
                        let latency = sys::mono_ns().saturating_sub(sent);
                        stats.latencies.lock().expect("latency lock").push(latency);
                    }
                    // What metamanager ACKs: every cloud message that is not itself a reply.
                    if message.header.parent_id.is_empty() && message.router.operation != operation::RESPONSE {
                        if lane.send(&Message::ack_for(&message)).await.is_err() {
                            return;
                        }
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
