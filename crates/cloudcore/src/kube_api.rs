//! The API server cloudcore works against: the embedded control plane started in this process
//! (`kubeAPIConfig.embedded`), or any Kubernetes API server reached through `kubeConfig`,
//! `master`, or the in-cluster service account.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ke_apiserver::PodStreams;
use ke_apiserver::standalone::{self, Options};
use ke_config::{EmbeddedControlPlane, KubeApiConfig};
use ke_controllers::ControlLoops;
use tokio_util::sync::CancellationToken;

/// A client, and what must stay alive for it to work.
pub struct KubeApi {
    pub client: kube::Client,
    pub embedded: Option<Embedded>,
}

/// The embedded control plane: API server, scheduler and controllers.
pub struct Embedded {
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    _controllers: ControlLoops,
}

impl Embedded {
    /// Stops serving kubectl and waits for the server to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        match self.serving.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "embedded API server stopped with an error")
            }
            Err(err) => tracing::warn!(error = %err, "embedded API server task failed"),
        }
    }
}

/// `streams` answers the embedded API server's pod stream subresources (cloudstream's tunnels);
/// a real cluster reaches the node's kubelet endpoint instead.
pub async fn connect(
    config: &KubeApiConfig,
    streams: Option<Arc<dyn PodStreams>>,
) -> anyhow::Result<KubeApi> {
    if let Some(embedded) = &config.embedded {
        return start_embedded(embedded, streams).await;
    }
    let client_config = if !config.kube_config.is_empty() {
        let kubeconfig = kube::config::Kubeconfig::read_from(&config.kube_config)
            .with_context(|| format!("read kubeAPIConfig.kubeConfig {}", config.kube_config))?;
        let mut client_config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .context("kubeAPIConfig.kubeConfig")?;
        if !config.master.is_empty() {
            client_config.cluster_url = config.master.parse().context("kubeAPIConfig.master")?;
        }
        client_config
    } else if !config.master.is_empty() {
        kube::Config::new(config.master.parse().context("kubeAPIConfig.master")?)
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().context("in-cluster API server config")?
    } else {
        anyhow::bail!(
            "kubeAPIConfig names no API server and this is not a pod in a cluster: set \
             kubeAPIConfig.embedded (the built-in control plane), kubeConfig or master"
        )
    };
    tracing::info!(server = %client_config.cluster_url, "using the Kubernetes API server");
    let client = kube::Client::try_from(client_config).context("build the Kubernetes client")?;
    Ok(KubeApi {
        client,
        embedded: None,
    })
}

async fn start_embedded(
    config: &EmbeddedControlPlane,
    streams: Option<Arc<dyn PodStreams>>,
) -> anyhow::Result<KubeApi> {
    let options = Options {
        data_dir: PathBuf::from(&config.data_dir),
        bind: config
            .bind_address
            .parse()
            .context("kubeAPIConfig.embedded.bindAddress")?,
        tls_sans: Vec::new(),
        insecure_http: false,
        keep_revisions: ke_apiserver::storage::sqlite::SqliteOptions::default().keep_revisions,
    };
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let running =
        standalone::start_with_streams(options, streams, async move { stopped.cancelled().await })
            .await
            .context("start the embedded API server")?;
    let mut settings = ke_controllers::Settings::default();
    let grace = Duration::from_secs(u64::try_from(config.node_monitor_grace_period).unwrap_or(40));
    settings.node_lifecycle.grace = grace;
    settings.node_lifecycle.period =
        (grace / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let controllers = ke_controlplane::start_controllers(&running.server, settings);
    tracing::info!(
        addr = %running.addr,
        kubeconfig = ?running.kubeconfig,
        "embedded control plane serving (kubectl --kubeconfig <kubeconfig>)"
    );
    Ok(KubeApi {
        client: ke_controlplane::in_process_client(&running.server),
        embedded: Some(Embedded {
            stop,
            serving: running.serving,
            _controllers: controllers,
        }),
    })
}
