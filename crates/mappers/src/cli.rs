//! The command line both mapper binaries share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ke_mapper::{Driver, MapperSettings};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
pub struct Args {
    /// The mapper's name, as edgecore records it.
    #[arg(long)]
    pub name: Option<String>,
    /// Where this mapper serves DMI's DeviceMapperService.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// edgecore's DMI socket (deviceTwin.dmiSockPath, then dmi.sock).
    #[arg(long, default_value = "/etc/kubeedge/dmi.sock")]
    pub edgecore_socket: PathBuf,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Parses the command line and runs `driver`'s mapper until SIGINT or SIGTERM.
pub fn main(driver: Arc<dyn Driver>) -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let protocol = driver.protocol().to_owned();
    let name = args.name.unwrap_or_else(|| format!("{protocol}-mapper"));
    let settings = MapperSettings {
        socket: args
            .socket
            .unwrap_or_else(|| PathBuf::from(format!("/etc/kubeedge/{name}.sock"))),
        name,
        version: env!("CARGO_PKG_VERSION").into(),
        edgecore_socket: args.edgecore_socket,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("install a SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                cancel.cancel();
            }
        });
        ke_mapper::run(settings, driver, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
