//! What the `ke-apiserver` and `ke-controlplane` binaries share: their flags, opening the store,
//! the PKI and admin kubeconfig, and serving until SIGINT/SIGTERM. A binary's edge, so errors
//! here are `anyhow` with context.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::kubeconfig::Pki;
use crate::storage::sqlite::{SqliteOptions, SqliteStorage};
use crate::{ApiServer, PodStreams, ServerConfig, serve};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Where the database, the PKI and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/ke-apiserver")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub bind: SocketAddr,
    /// Extra IP addresses or DNS names for the serving certificate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Serve plain HTTP without authentication. For tests only.
    #[arg(long)]
    pub insecure_http: bool,
    /// Revisions of change history kept for watches to resume from; a watch from an older
    /// resourceVersion gets 410 Gone and must relist (0 = never compact).
    #[arg(long, default_value_t = SqliteOptions::default().keep_revisions)]
    pub keep_revisions: u64,
}

/// Logs to stderr (`RUST_LOG`, default `info`), without colours unless it is a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// A started API server: serving in a background task until the `shutdown` future given to
/// [`start`] resolves.
pub struct Running {
    pub server: ApiServer<SqliteStorage>,
    /// Where it listens (the real port when the bind address asked for port 0).
    pub addr: SocketAddr,
    /// The admin kubeconfig for kubectl; `None` with `--insecure-http`.
    pub kubeconfig: Option<PathBuf>,
    /// Resolves when serving has stopped.
    pub serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Opens the store, binds, writes the PKI and admin kubeconfig, and serves in the background
/// until `shutdown` resolves.
pub async fn start(
    args: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    start_with_streams(args, None, shutdown).await
}

/// [`start`], with `pods/{log,exec,attach,portforward}` answered by `streams`.
pub async fn start_with_streams(
    args: Options,
    streams: Option<Arc<dyn PodStreams>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let db = args.data_dir.join("apiserver.db");
    let options = SqliteOptions {
        keep_revisions: args.keep_revisions,
        // Compact in steps of a tenth of the history, as the default policy does.
        compact_every: (args.keep_revisions / 10).max(1),
        ..SqliteOptions::default()
    };
    let storage = SqliteStorage::open_with(&db, options)
        .with_context(|| format!("opening {}", db.display()))?;
    let mut server = ApiServer::new(storage, ServerConfig::default())
        .await
        .context("initialising the store")?;
    if let Some(streams) = streams {
        server = server.with_pod_streams(streams);
    }
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;

    if args.insecure_http {
        tracing::warn!(%addr, "serving plain http without authentication (--insecure-http)");
        let router = server.router();
        let serving = tokio::spawn(async move {
            serve::serve_plain(listener, router, shutdown).await?;
            Ok(())
        });
        return Ok(Running {
            server,
            addr,
            kubeconfig: None,
            serving,
        });
    }

    // The address clients dial: a wildcard bind is reached over loopback locally.
    let dial_ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    let mut ips = vec![dial_ip];
    let mut names = vec!["localhost".to_owned()];
    for san in &args.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => names.push(san.clone()),
        }
    }
    let pki = Pki::load_or_create(&args.data_dir, &ips, &names).context("pki")?;
    let kubeconfig = args.data_dir.join("admin.kubeconfig");
    let url = format!("https://{}", SocketAddr::new(dial_ip, addr.port()));
    pki.write_admin_kubeconfig(&kubeconfig, &url)
        .context("writing admin kubeconfig")?;
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "serving");
    let tls = pki.tls_config()?;
    let router = server.router();
    let serving = tokio::spawn(async move {
        serve::serve_tls(listener, tls, router, shutdown).await;
        Ok(())
    });
    Ok(Running {
        server,
        addr,
        kubeconfig: Some(kubeconfig),
        serving,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Starts the server, calls `started` with it (to attach what runs beside it), and serves until
/// SIGINT or SIGTERM.
pub async fn run<T>(
    args: Options,
    started: impl FnOnce(&ApiServer<SqliteStorage>) -> T,
) -> anyhow::Result<()> {
    let running = start(args, termination_signal()).await?;
    // Kept alive for as long as the server serves.
    let _beside = started(&running.server);
    running.serving.await.context("serving task")?
}
