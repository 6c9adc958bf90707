//! `ke-controlplane`: the embedded control plane in one process — the API server (same flags
//! as `ke-apiserver`), the scheduler and the built-in controllers.

use std::time::Duration;

use clap::Parser;
use ke_apiserver::standalone::{self, Options};
use ke_controllers::Settings;

#[derive(Debug, Parser)]
#[command(name = "ke-controlplane", version, about)]
struct Args {
    #[command(flatten)]
    options: Options,
    /// Seconds without a lease renewal before a node is marked Unknown and tainted unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    standalone::init_logging();
    let args = Args::parse();
    let mut settings = Settings::default();
    settings.node_lifecycle.grace = Duration::from_secs(args.node_monitor_grace_period);
    // Look a few times per grace period, so a node goes Unknown soon after its grace ends.
    settings.node_lifecycle.period = (settings.node_lifecycle.grace / 4)
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    standalone::run(args.options, |server| {
        ke_controlplane::start_controllers(server, settings)
    })
    .await
}
