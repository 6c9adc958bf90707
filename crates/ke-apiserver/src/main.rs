//! `ke-apiserver`: the embedded Kubernetes-compatible API server, on SQLite, over mutual TLS.
//! `ke-controlplane` is the same server with the scheduler and controllers beside it.

use clap::Parser;
use ke_apiserver::standalone::{self, Options};

#[derive(Debug, Parser)]
#[command(name = "ke-apiserver", version, about)]
struct Args {
    #[command(flatten)]
    options: Options,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    standalone::init_logging();
    standalone::run(Args::parse().options, |_| ()).await
}
