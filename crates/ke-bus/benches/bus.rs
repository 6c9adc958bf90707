//! Plain-timing benchmark of the bus (no criterion): `cargo bench -p ke-bus`.
//!
//! Prints lines meant to be pasted into BENCHMARKS.md.

use std::time::{Duration, Instant};

use ke_bus::{BoxFuture, BusRuntime, Message, Module, ModuleContext};
use tokio::sync::oneshot;

const THROUGHPUT_MESSAGES: u64 = 1_000_000;
const PRODUCERS: u64 = 4;
const SYNC_CALLS: usize = 100_000;
const SYNC_WARMUP: usize = 1_000;
const RUNS: usize = 5;

/// Counts messages and reports once it has seen `target` of them.
struct Counter {
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Module for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn group(&self) -> &str {
        "bench"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut seen = 0u64;
            while let Some(msg) = ctx.recv().await {
                std::hint::black_box(&msg);
                seen += 1;
                if seen == self.target {
                    // The bench may have given up waiting; nothing to report then.
                    let _ = self.done.take().map(|done| done.send(()));
                }
            }
            Ok(())
        })
    }
}

/// Answers every request with `send_resp`, like metamanager answering edged.
struct Echo;

impl Module for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn group(&self) -> &str {
        "bench"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(req) = ctx.recv().await {
                let mut resp = Message::new();
                resp.header.parent_id = req.header.id;
                resp.router = req.router;
                resp.router.operation = "response".to_owned();
                resp.content = serde_json::Value::String("OK".to_owned());
                ctx.bus().send_resp(resp);
            }
            Ok(())
        })
    }
}

fn sample_message() -> Message {
    let mut m = Message::new();
    m.router.source = "edgecontroller".to_owned();
    m.router.group = "resource".to_owned();
    m.router.operation = "insert".to_owned();
    m.router.resource = "default/pod/nginx-7c5d8bf9c4-abcde".to_owned();
    m.content = serde_json::Value::String("payload".to_owned());
    m
}

async fn throughput(producers: u64) -> anyhow::Result<f64> {
    let (done_tx, done_rx) = oneshot::channel();
    let mut rt = BusRuntime::new();
    rt.register(Counter {
        target: THROUGHPUT_MESSAGES,
        done: Some(done_tx),
    })?;
    let bus = rt.bus().clone();
    rt.start();

    let template = sample_message();
    let per_producer = THROUGHPUT_MESSAGES / producers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let bus = bus.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_producer {
                bus.send("counter", template.clone()).await?;
            }
            Ok::<_, ke_bus::BusError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    done_rx.await?;
    let elapsed = started.elapsed();
    rt.shutdown(Duration::from_secs(5)).await;
    Ok(THROUGHPUT_MESSAGES as f64 / elapsed.as_secs_f64())
}

/// Same workload over a bare `tokio::sync::mpsc` channel, to show what the bus
/// adds on top (name lookup, sender clone, supervision).
async fn raw_channel_baseline(producers: u64) -> anyhow::Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(ke_bus::DEFAULT_MAILBOX_CAPACITY);
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(msg) = rx.recv().await {
            std::hint::black_box(&msg);
            seen += 1;
        }
        seen
    });
    let template = sample_message();
    let per_producer = THROUGHPUT_MESSAGES / producers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let tx = tx.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_producer {
                tx.send(template.clone()).await?;
            }
            Ok::<_, tokio::sync::mpsc::error::SendError<Message>>(())
        }));
    }
    drop(tx);
    for task in tasks {
        task.await??;
    }
    let seen = consumer.await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(seen == THROUGHPUT_MESSAGES, "consumer saw {seen} messages");
    Ok(THROUGHPUT_MESSAGES as f64 / elapsed.as_secs_f64())
}

/// Runs a throughput scenario several times; on a shared 2-core machine single
/// runs swing by tens of percent.
async fn repeated<F, Fut>(mut scenario: F) -> anyhow::Result<(f64, f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut rates = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        rates.push(scenario().await?);
    }
    rates.sort_by(f64::total_cmp);
    let min = rates.first().copied().unwrap_or_default();
    let max = rates.last().copied().unwrap_or_default();
    let median = rates.get(rates.len() / 2).copied().unwrap_or_default();
    Ok((median, min, max))
}

fn print_rate(label: &str, (median, min, max): (f64, f64, f64)) {
    println!(
        "{label}: {THROUGHPUT_MESSAGES} msgs, median {:.2} M msgs/s (min {:.2}, max {:.2}, {RUNS} runs)",
        median / 1e6,
        min / 1e6,
        max / 1e6
    );
}

async fn sync_latency() -> anyhow::Result<Vec<Duration>> {
    let mut rt = BusRuntime::new();
    rt.register(Echo)?;
    let bus = rt.bus().clone();
    rt.start();

    let template = sample_message();
    let mut samples = Vec::with_capacity(SYNC_CALLS);
    for i in 0..SYNC_WARMUP + SYNC_CALLS {
        let mut request = template.clone();
        request.header.id = format!("bench-{i}");
        let started = Instant::now();
        let reply = bus
            .send_sync("echo", request, Duration::from_secs(30))
            .await?;
        let elapsed = started.elapsed();
        std::hint::black_box(reply);
        if i >= SYNC_WARMUP {
            samples.push(elapsed);
        }
    }
    rt.shutdown(Duration::from_secs(5)).await;
    samples.sort_unstable();
    Ok(samples)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let last = sorted.len().saturating_sub(1);
    let index = ((last as f64) * p).round() as usize;
    sorted.get(index.min(last)).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "ke-bus bench: tokio multi-thread runtime, {threads} worker threads, mailbox capacity {}",
            ke_bus::DEFAULT_MAILBOX_CAPACITY
        );
        print_rate(
            "send throughput, 1 producer -> 1 module",
            repeated(|| throughput(1)).await?,
        );
        print_rate(
            &format!("send throughput, {PRODUCERS} producers -> 1 module"),
            repeated(|| throughput(PRODUCERS)).await?,
        );
        print_rate(
            "baseline bare tokio mpsc(1024), 1 producer -> 1 task",
            repeated(|| raw_channel_baseline(1)).await?,
        );
        print_rate(
            &format!("baseline bare tokio mpsc(1024), {PRODUCERS} producers -> 1 task"),
            repeated(|| raw_channel_baseline(PRODUCERS)).await?,
        );
        let samples = sync_latency().await?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "send_sync round trip to echo module ({} calls): p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
            samples.len(),
            us(percentile(&samples, 0.50)),
            us(percentile(&samples, 0.90)),
            us(percentile(&samples, 0.99)),
            us(samples.last().copied().unwrap_or_default()),
        );
        Ok(())
    })
}
