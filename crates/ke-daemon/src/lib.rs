//! What every kubeedge-rs daemon does around its modules, in one place: the upstream-compatible
//! flags (`--config`, `--defaultconfig`, `--minconfig`, `--version`, `--help`), logging, the Tokio
//! runtime, running the module bus until SIGINT/SIGTERM, and exit codes (0 ok, 1 runtime failure,
//! 2 usage error, as clap reports it).
//!
//! Binaries stay thin: they name themselves with a [`Component`] and hand [`main`] a closure that
//! loads their config and registers their modules.

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Arg, ArgAction, Command};
use ke_bus::BusRuntime;
use ke_config::HostInfo;

/// How long modules get to stop after SIGINT/SIGTERM before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Version string shown by `--version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (kubeedge-rs; wire-compatible with KubeEdge v1.23)"
);

/// The identity of a daemon binary.
pub struct Component {
    pub name: &'static str,
    pub about: &'static str,
    /// Where upstream looks for the config file when `--config` is not given.
    pub default_config_path: &'static str,
    pub render_default_config: fn(&HostInfo) -> String,
    pub render_min_config: fn(&HostInfo) -> String,
}

/// Parses the command line, prints a config if asked to, otherwise runs `serve` with the config
/// path on a multi-threaded Tokio runtime and turns its result into an exit code.
pub fn main<F, Fut>(component: &Component, serve: F) -> ExitCode
where
    F: FnOnce(PathBuf, HostInfo) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let matches = command(component).get_matches();
    let host = HostInfo::detect();
    if matches.get_flag("defaultconfig") {
        print!("{}", (component.render_default_config)(&host));
        return ExitCode::SUCCESS;
    }
    if matches.get_flag("minconfig") {
        print!("{}", (component.render_min_config)(&host));
        return ExitCode::SUCCESS;
    }
    let config_path = matches
        .get_one::<PathBuf>("config")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(component.default_config_path));

    init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(component.name)
        .build()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(config_path, host)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "load config: open ...: ...".
            eprintln!("{}: error: {err:#}", component.name);
            ExitCode::FAILURE
        }
    }
}

/// Starts every registered module and waits for SIGINT/SIGTERM, then shuts down within
/// [`SHUTDOWN_GRACE`]. Fails if a module did not stop in time, so supervisors notice.
pub async fn run_until_signal(runtime: BusRuntime) -> anyhow::Result<()> {
    let report = runtime
        .run_until_signal(SHUTDOWN_GRACE)
        .await
        .context("install signal handlers")?;
    if !report.is_clean() {
        anyhow::bail!("shutdown was not clean: {report:?}");
    }
    tracing::info!("stopped");
    Ok(())
}

fn command(component: &Component) -> Command {
    Command::new(component.name)
        .about(component.about)
        .version(VERSION)
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!(
                    "The config file to use [default: {}]",
                    component.default_config_path
                )),
        )
        .arg(
            Arg::new("defaultconfig")
                .long("defaultconfig")
                .action(ArgAction::SetTrue)
                .conflicts_with("minconfig")
                .help("Print the full default config, with every field, and exit"),
        )
        .arg(
            Arg::new("minconfig")
                .long("minconfig")
                .action(ArgAction::SetTrue)
                .help("Print a minimal config for getting started, and exit"),
        )
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in log files and pipes are noise.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component() -> Component {
        Component {
            name: "testcore",
            about: "test",
            default_config_path: "/etc/kubeedge/config/testcore.yaml",
            render_default_config: |_| String::new(),
            render_min_config: |_| String::new(),
        }
    }

    #[test]
    fn flags_parse_like_upstream() {
        let cmd = command(&component());
        cmd.clone().debug_assert();
        let m = cmd
            .clone()
            .try_get_matches_from(["testcore", "--config", "/tmp/x.yaml"])
            .unwrap();
        assert_eq!(
            m.get_one::<PathBuf>("config"),
            Some(&PathBuf::from("/tmp/x.yaml"))
        );
        assert!(
            cmd.clone()
                .try_get_matches_from(["testcore", "--defaultconfig", "--minconfig"])
                .is_err()
        );
        assert!(cmd.try_get_matches_from(["testcore", "--bogus"]).is_err());
    }
}
