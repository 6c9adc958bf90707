//! ke-hubbench: measures cloudhub with simulated edges in a separate process.
//!
//! * `cloud`: a real CloudHub on a bus plus a load generator, steered over stdin;
//! * `edges`: N mTLS WebSocket sessions dialled like edgehub, ACKing every message;
//! * `run <scenario>`: starts both and prints results (see BENCHMARKS.md).
//!
//! Everything listens on and dials 127.0.0.1 only.

mod cloud;
mod driver;
mod edges;
mod pki;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ke-hubbench",
    about = "Benchmark cloudhub with simulated edges"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run CloudHub and the load generator (driven over stdin).
    Cloud(cloud::CloudArgs),
    /// Run N simulated edges (driven over stdin).
    Edges(edges::EdgesArgs),
    /// Run a scenario end to end: spawns `cloud` and `edges` and prints results.
    Run(driver::RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Cloud(args) => cloud::run(args).await,
        Cmd::Edges(args) => edges::run(args).await,
        Cmd::Run(args) => driver::run(args).await,
    }
}
