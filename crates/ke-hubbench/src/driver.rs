//! `run <scenario>`: starts the cloud and the edges as two child processes of this binary,
//! steers them over their stdin/stdout, and prints result lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::sys;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Sessions,
    Throughput,
    Latency,
    Reconnect,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    pub scenario: Scenario,
    /// Default: 10000 for sessions and reconnect, 1000 otherwise.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Messages for throughput (default 200000) and latency (default 50000).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Fixed send rate for latency, messages/s.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Working directory for certificates; default a fresh one under the temp dir, removed
    /// afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    pub dial_concurrency: usize,
    /// QueueConfig::window of the hub.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
}

/// One child process and its line protocol.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(name: &'static str, args: &[String]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("locate the current executable")?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn the {name} process"))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Proc {
            name,
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line starting with `prefix`; `progress` lines are echoed as comments.
    async fn expect(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| format!("{}: no {prefix:?} line within {limit:?}", self.name))?
                .with_context(|| format!("{}: read stdout", self.name))?
                .with_context(|| format!("{}: exited before {prefix:?}", self.name))?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
            if line.starts_with("error") {
                bail!("{}: {line}", self.name);
            }
            println!("#   {}: {line}", self.name);
        }
    }

    async fn ask(
        &mut self,
        command: &str,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .with_context(|| format!("{}: send {command:?}", self.name))?;
        self.stdin.flush().await?;
        self.expect(prefix, limit).await
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = self.stdin.flush().await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `key=value` from a result line.
fn field<T: std::str::FromStr>(line: &str, key: &str) -> anyhow::Result<T> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {line:?}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{key}= in {line:?} is not a number"))
}

struct Run {
    args: RunArgs,
    dir: PathBuf,
    nodes: usize,
}

impl Run {
    fn cloud_args(&self, ws_port: u16, https_port: u16) -> Vec<String> {
        vec![
            "cloud".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--ws-port".into(),
            ws_port.to_string(),
            "--https-port".into(),
            https_port.to_string(),
            "--window".into(),
            self.args.window.to_string(),
        ]
    }

    fn edges_args(&self, ws_port: u16) -> Vec<String> {
        vec![
            "edges".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--port".into(),
            ws_port.to_string(),
            "--dial-concurrency".into(),
            self.args.dial_concurrency.to_string(),
        ]
    }

    async fn start_cloud(&self, ws_port: u16, https_port: u16) -> anyhow::Result<(Proc, String)> {
        let mut cloud = Proc::spawn("cloud", &self.cloud_args(ws_port, https_port))?;
        // Signing 10,000 edge certificates takes a while on two cores.
        let ready = cloud.expect("ready", Duration::from_secs(300)).await?;
        println!("#   cloud: {ready}");
        Ok((cloud, ready))
    }

    /// Cloud up, edges up, all sessions established. Returns the connect time too.
    async fn connect_all(&self) -> anyhow::Result<(Proc, Proc, u16, u16, u64, String)> {
        let (mut cloud, ready) = self.start_cloud(0, 0).await?;
        let ws_port: u16 = field(&ready, "ws_port")?;
        let https_port: u16 = field(&ready, "https_port")?;
        let before = cloud.ask("rss", "rss", Duration::from_secs(5)).await?;
        let started = Instant::now();
        let mut edges = Proc::spawn("edges", &self.edges_args(ws_port))?;
        let edges_ready = edges.expect("ready", Duration::from_secs(120)).await?;
        println!("#   edges: {edges_ready}");
        let connected = cloud
            .ask(
                &format!("wait-connected {} 180000", self.nodes),
                "connected",
                Duration::from_secs(200),
            )
            .await?;
        let connect_ms = started.elapsed().as_millis() as u64;
        if !field::<bool>(&connected, "ok")? {
            let stats = edges.ask("stats", "stats", Duration::from_secs(10)).await?;
            bail!("not every edge connected: {connected}; edges: {stats}");
        }
        Ok((cloud, edges, ws_port, https_port, connect_ms, before))
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let nodes = args.nodes.unwrap_or(match args.scenario {
        Scenario::Sessions | Scenario::Reconnect => 10_000,
        Scenario::Throughput | Scenario::Latency => 1_000,
    });
    let temporary = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ke-hubbench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!("# command: {command}");
    println!("# loadavg at start: {}", sys::loadavg());
    let run = Run { args, dir, nodes };
    // Bounded no matter what the children do.
    let result = tokio::time::timeout(Duration::from_secs(900), scenario(&run)).await;
    println!("# loadavg at end: {}", sys::loadavg());
    if temporary {
        let _ = std::fs::remove_dir_all(&run.dir);
    }
    result.context("scenario did not finish within 15 minutes")?
}

async fn scenario(run: &Run) -> anyhow::Result<()> {
    let nodes = run.nodes;
    match run.args.scenario {
        Scenario::Sessions => {
            let (mut cloud, mut edges, _, _, connect_ms, before) = run.connect_all().await?;
            // Let handshake garbage be freed and first keepalives flow before measuring.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let after = cloud.ask("rss", "rss", Duration::from_secs(5)).await?;
            let stats = edges.ask("stats", "stats", Duration::from_secs(5)).await?;
            let before_kib: u64 = field(&before, "kib")?;
            let after_kib: u64 = field(&after, "kib")?;
            let edges_kib: u64 = field(&stats, "rss_kib")?;
            println!(
                "RESULT sessions nodes={nodes} connect_all_ms={connect_ms} cloud_rss_before_kib={before_kib} cloud_rss_after_kib={after_kib} cloud_kib_per_session={:.1} edges_rss_kib={edges_kib} edges_kib_per_session={:.1} loadavg=\"{}\"",
                (after_kib.saturating_sub(before_kib)) as f64 / nodes as f64,
                edges_kib as f64 / nodes as f64,
                sys::loadavg()
            );
            println!("#   edges: {stats}");
            edges.quit().await;
            cloud.quit().await;
        }
        Scenario::Throughput | Scenario::Latency => {
            let latency = run.args.scenario == Scenario::Latency;
            let messages = run
                .args
                .messages
                .unwrap_or(if latency { 50_000 } else { 200_000 });
            let rate = if latency { run.args.rate } else { 0 };
            let (mut cloud, mut edges, _, _, connect_ms, _) = run.connect_all().await?;
            println!("#   {nodes} sessions up in {connect_ms} ms");
            // Warm-up: first messages per node allocate queues and buffers.
            cloud
                .ask(
                    &format!("load {} 0 {nodes} 60000", nodes * 2),
                    "load",
                    Duration::from_secs(70),
                )
                .await?;
            edges
                .ask("lat-reset", "lat-reset", Duration::from_secs(5))
                .await?;
            let edges_before = edges.ask("stats", "stats", Duration::from_secs(5)).await?;
            let load = cloud
                .ask(
                    &format!("load {messages} {rate} {nodes} 300000"),
                    "load",
                    Duration::from_secs(310),
                )
                .await?;
            let lat = edges.ask("lat", "lat", Duration::from_secs(30)).await?;
            let stats = edges.ask("stats", "stats", Duration::from_secs(5)).await?;
            let name = if latency { "latency" } else { "throughput" };
            let edges_cpu =
                field::<u64>(&stats, "cpu_ms")? - field::<u64>(&edges_before, "cpu_ms")?;
            println!(
                "RESULT {name} nodes={nodes} messages={messages} target_rate={rate} {} edges_cpu_ms={edges_cpu} | edge-observed enqueue->receipt: {} loadavg=\"{}\"",
                load.trim_start_matches("load "),
                lat.trim_start_matches("lat "),
                sys::loadavg()
            );
            println!("#   edges: {stats}");
            edges.quit().await;
            cloud.quit().await;
        }
        Scenario::Reconnect => {
            let (mut cloud, mut edges, ws_port, https_port, connect_ms, _) =
                run.connect_all().await?;
            println!("#   {nodes} sessions up in {connect_ms} ms");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let killed = Instant::now();
            cloud.child.kill().await.context("kill the cloud")?;
            drop(cloud);
            let down = edges
                .ask("wait-connected 0 1", "connected", Duration::from_secs(5))
                .await?;
            println!("#   edges right after the kill: {down}");
            let (mut cloud, _) = run.start_cloud(ws_port, https_port).await?;
            let ready_ms = killed.elapsed().as_millis();
            let connected = cloud
                .ask(
                    &format!("wait-connected {nodes} 120000"),
                    "connected",
                    Duration::from_secs(130),
                )
                .await?;
            let all_back_ms = killed.elapsed().as_millis();
            let stats = edges.ask("stats", "stats", Duration::from_secs(5)).await?;
            println!(
                "RESULT reconnect nodes={nodes} new_cloud_listening_after_ms={ready_ms} all_back_after_kill_ms={all_back_ms} ok={} | {} loadavg=\"{}\"",
                field::<bool>(&connected, "ok")?,
                stats.trim_start_matches("stats "),
                sys::loadavg()
            );
            edges.quit().await;
            cloud.quit().await;
        }
    }
    Ok(())
}
