//! keadm: installs kubeedge-rs the way upstream's keadm installs KubeEdge.
//!
//! * `keadm init` starts cloudcore (the embedded control plane by default, or an existing
//!   cluster with `--kube-config`) under a keadm supervisor, and prints how to use it.
//! * `keadm gettoken` prints the join token.
//! * `keadm join` checks the name is free and the runtime answers, writes `edgecore.yaml`,
//!   starts edgecore under a supervisor and waits until the node is Ready.
//! * `keadm debug check` says, one line per check, whether what is installed works;
//!   `keadm debug diagnose node|pod` shows what an edge node's own cache says, with hints.
//! * `keadm reset edge|cloud` stops what keadm started and removes its files (and, on the edge,
//!   the containers of the pods edgecore ran) — nothing else.
//!
//! Daemons run as systemd units where systemd runs and keadm installs at `/`; otherwise (in
//! containers, and under `--root`) under a detached `keadm supervise` process that restarts its
//! daemon when it dies (and does not survive a reboot) — see [`daemon`].

mod check;
mod cloud;
mod cluster;
mod daemon;
mod diagnose;
mod edge;
mod metaserver;
mod paths;
mod supervise;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::paths::Root;

#[derive(Debug, Parser)]
#[command(
    name = "keadm",
    version,
    about = "Install kubeedge-rs: a cloud with keadm init, edge nodes with keadm join"
)]
struct Cli {
    /// Install under this directory instead of / (its etc/kubeedge, var/lib/kubeedge, …).
    #[arg(long, global = true, default_value = "/")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start cloudcore on this machine (with its own control plane unless --kube-config).
    Init {
        /// The address edge nodes reach cloudcore at (put in its certificate).
        #[arg(long)]
        advertise_address: Option<String>,
        /// Use this cluster (kubeconfig) instead of the embedded control plane.
        #[arg(long)]
        kube_config: Option<PathBuf>,
    },
    /// Print the token edge nodes join with.
    Gettoken {
        /// Read it from the cluster (Secret kubeedge/tokensecret) through this kubeconfig, as
        /// upstream's keadm does, instead of from this machine's cloudcore.
        #[arg(long)]
        kube_config: Option<PathBuf>,
    },
    /// Join this machine to a cloudcore as an edge node.
    Join {
        /// cloudcore's WebSocket address, host:port (port 10000 by default on the cloud).
        #[arg(long, short = 'e')]
        cloudcore_ipport: String,
        /// The join token (keadm gettoken on the cloud).
        #[arg(long, short = 't')]
        token: String,
        /// The node's name (default: this machine's hostname).
        #[arg(long, short = 'i')]
        edgenode_name: Option<String>,
        /// cloudcore's certificate port.
        #[arg(long, short = 's', default_value_t = 10002)]
        certport: u16,
        /// The container runtime's CRI socket.
        #[arg(
            long,
            short = 'p',
            default_value = "unix:///run/containerd/containerd.sock"
        )]
        remote_runtime_endpoint: String,
        /// Node labels, key=value[,key=value…].
        #[arg(long, short = 'l')]
        labels: Vec<String>,
    },
    /// Troubleshooting.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
    /// Stop what keadm started here and remove its files.
    Reset {
        #[arg(value_enum)]
        side: Side,
    },
    /// (internal) Run and restart a daemon; started by init and join.
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        pid_file: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Check what is installed here: daemons running, ports open, runtime reachable,
    /// certificates valid (and for how long), node Ready.
    Check,
    /// On an edge node: what its own cache says about the node or a pod.
    Diagnose {
        #[command(subcommand)]
        what: Diagnose,
    },
}

#[derive(Debug, Subcommand)]
enum Diagnose {
    /// The node's conditions and runtime.
    Node,
    /// A pod's phase, conditions and containers, with what their state usually means.
    Pod {
        name: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Side {
    Edge,
    Cloud,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = Root::new(&cli.root);
    let result = match cli.command {
        Command::Init {
            advertise_address,
            kube_config,
        } => cloud::init(&root, advertise_address.as_deref(), kube_config.as_deref()),
        Command::Gettoken { kube_config } => cloud::gettoken(&root, kube_config.as_deref()),
        Command::Join {
            cloudcore_ipport,
            token,
            edgenode_name,
            certport,
            remote_runtime_endpoint,
            labels,
        } => edge::join(
            &root,
            &edge::Join {
                cloudcore_ipport: &cloudcore_ipport,
                token: &token,
                node_name: edgenode_name.as_deref(),
                certport,
                runtime_endpoint: &remote_runtime_endpoint,
                labels: &labels,
            },
        ),
        Command::Debug { command } => match command {
            DebugCommand::Check => check::check(&root),
            DebugCommand::Diagnose {
                what: Diagnose::Node,
            } => diagnose::node(&root),
            DebugCommand::Diagnose {
                what: Diagnose::Pod { name, namespace },
            } => diagnose::pod(&root, &namespace, &name),
        },
        Command::Reset { side: Side::Edge } => edge::reset(&root),
        Command::Reset { side: Side::Cloud } => cloud::reset(&root),
        Command::Supervise { pid_file, command } => supervise::supervise(pid_file, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Removes `paths` (files or directories), then the directories keadm made that are left
/// empty.
fn remove_files(root: &Root, paths: &[PathBuf]) {
    for path in paths {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        if let Err(err) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: {} not removed: {err}", path.display());
        }
    }
    let etc = root.etc();
    let var_lib = root.var_lib();
    for dir in [
        etc.join("config"),
        etc.join("certs"),
        etc.join("ca"),
        etc.clone(),
        var_lib.join("keadm"),
        var_lib.clone(),
        root.logs(),
    ] {
        remove_if_empty(&dir);
    }
}

fn remove_if_empty(dir: &Path) {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none()) {
        let _ = std::fs::remove_dir(dir);
    }
}
