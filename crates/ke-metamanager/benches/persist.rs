//! How fast the edge stores and acknowledges what the cloud sends: metamanager on a real SQLite
//! file (WAL, `synchronous=FULL`), fed through the bus as edgehub feeds it, with a stand-in
//! edgehub module counting the ACKs.
//!
//! `cargo bench -p ke-metamanager --bench persist` prints persisted+ACKed messages per second
//! for a burst of pod inserts, with 32 and 1,024 messages in flight (cloudhub's default window
//! is 32 per node), and for updates of pods already stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use ke_bus::{Bus, BusRuntime, Module, ModuleContext};
use ke_message::Message;
use ke_metamanager::{MetaManager, MetaManagerSettings, Tables};
use serde_json::json;
use tokio::sync::Semaphore;

const MESSAGES: usize = 20_000;

/// Counts ACKs and gives the sender a permit back for each, like the cloud's window.
struct Hub {
    window: Arc<Semaphore>,
}

impl Module for Hub {
    fn name(&self) -> &str {
        "websocket"
    }
    fn group(&self) -> &str {
        "hub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                if message.router.operation == "response" {
                    self.window.add_permits(1);
                }
            }
            Ok(())
        })
    }
}

fn pod(i: usize, version: usize) -> Message {
    let name = format!("pod-{i}");
    Message::new()
        .with_route("edgecontroller", "resource", format!("default/pod/{name}"), if version == 1 { "insert" } else { "update" })
        .with_content(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{i}"),
                         "resourceVersion": (i * 10 + version).to_string(), "labels": {"app": "bench"}},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "app", "image": "busybox:1.36",
                     "command": ["sleep", "3600"], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            "status": {"phase": "Pending"},
        }))
}

async fn run(bus: &Bus, window: &Arc<Semaphore>, in_flight: usize, version: usize) -> f64 {
    // Wait for the previous phase's ACKs to come home.
    let all = window.acquire_many(in_flight as u32).await.unwrap();
    drop(all);
    let started = Instant::now();
    for i in 0..MESSAGES {
        window.acquire().await.unwrap().forget();
        bus.send("metamanager", pod(i, version)).await.unwrap();
    }
    let done = window.acquire_many(in_flight as u32).await.unwrap();
    drop(done);
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for in_flight in [32, 1024] {
            let dir = tempfile::tempdir().unwrap();
            let meta = MetaManager::open(MetaManagerSettings {
                database: dir.path().join("edgecore.db"),
                remote_query_timeout: Duration::from_secs(5),
                tables: Tables {
                    device_twin: false,
                    event_bus: false,
                    service_bus: false,
                },
            })
            .unwrap();
            let window = Arc::new(Semaphore::new(in_flight));
            let mut modules = BusRuntime::new();
            modules.register(meta).unwrap();
            modules
                .register(Hub {
                    window: Arc::clone(&window),
                })
                .unwrap();
            modules.start();
            let bus = modules.bus().clone();
            let inserts = run(&bus, &window, in_flight, 1).await;
            let updates = run(&bus, &window, in_flight, 2).await;
            println!(
                "{MESSAGES} pods, {in_flight} in flight: inserts {inserts:.0} msg/s, updates {updates:.0} msg/s (persisted, then ACKed)"
            );
            modules.shutdown(Duration::from_secs(5)).await;
        }
    });
}
