//! Edged (upstream module `edged`): the kubelet of an edge node: the node's own lifecycle
//! ([`node`]: registration, status, lease) and its pods ([`pods`], through CRI with
//! [`runtime`]), both through metamanager.
//!
//! Everything edged asks of the cloud goes through metamanager (`send_sync` to module
//! `metamanager`, group `meta`, as upstream's kubelet bridge does), so an offline start is not
//! fatal: the node runs from local state and registers once the cloud answers.

mod clock;
mod cloud;
mod downward;
mod env;
mod events;
mod host;
mod logs;
mod model;
mod node;
mod objects;
mod pods;
mod probes;
mod resources;
mod runtime;
mod security;
mod static_pods;
mod status;
mod volumes;

use std::time::Duration;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext};

pub use host::Machine;
pub use node::{EDGE_ROLE_LABEL, NodeSettings};

pub const MODULE_NAME: &str = "edged";
pub const GROUP_NAME: &str = "edged";
/// The module every request of edged goes to.
const METAMANAGER: &str = "metamanager";

/// How often an unregistered node retries registration (and a failed pod set load).
pub(crate) const REGISTER_RETRY: Duration = Duration::from_secs(1);
/// kubelet's `containerLogMaxSize` default, 10Mi.
const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
/// How often `staticPodPath` is read (kubelet's `fileCheckFrequency`).
const STATIC_POD_SCAN: Duration = Duration::from_secs(20);
/// How often the pods are compared with the runtime (and the runtime redialled when down).
const POD_SYNC: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct EdgedSettings {
    pub node: NodeSettings,
    /// `modules.edged.rootDirectory`: whose filesystem is the node's ephemeral storage.
    pub root_directory: String,
    /// `tailoredKubeletConfig.containerRuntimeEndpoint`.
    pub runtime_endpoint: String,
    /// `tailoredKubeletConfig.podLogsDir`: where container logs go.
    pub pod_logs_dir: String,
    /// `tailoredKubeletConfig.staticPodPath`: manifests of static pods ("" for none).
    pub static_pod_path: String,
    /// `containerLogMaxSize` and `containerLogMaxFiles`.
    pub log_policy: logs::LogPolicy,
    /// `containerLogMonitorInterval`.
    pub log_check: Duration,
}

impl EdgedSettings {
    pub fn from_config(config: &ke_config::EdgeCoreConfig, host: &ke_config::HostInfo) -> Self {
        let edged = &config.modules.edged;
        let kubelet = &edged.tailored_kubelet_config;
        let ip = if edged.node_ip.is_empty() {
            host.ip.to_string()
        } else {
            edged.node_ip.clone()
        };
        EdgedSettings {
            node: NodeSettings {
                name: edged.hostname_override.clone(),
                ip,
                labels: edged.node_labels.clone(),
                status_update_frequency: kubelet
                    .node_status_update_frequency
                    .to_std()
                    .unwrap_or(Duration::from_secs(10))
                    .max(Duration::from_secs(1)),
                lease_duration_seconds: kubelet.node_lease_duration_seconds.max(1),
                max_pods: kubelet.max_pods,
                kubelet_version: format!("v1.32.10-kubeedge-rs-{}", env!("CARGO_PKG_VERSION")),
            },
            root_directory: edged.root_directory.clone(),
            runtime_endpoint: kubelet.container_runtime_endpoint.clone(),
            pod_logs_dir: kubelet.pod_logs_dir.clone(),
            static_pod_path: kubelet.static_pod_path.clone(),
            log_policy: logs::LogPolicy {
                max_size: model::Quantity(kubelet.container_log_max_size.clone())
                    .bytes()
                    .and_then(|b| u64::try_from(b).ok())
                    .filter(|b| *b > 0)
                    .unwrap_or(DEFAULT_LOG_MAX_SIZE),
                max_files: kubelet
                    .container_log_max_files
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(5)
                    .max(2),
            },
            log_check: kubelet
                .container_log_monitor_interval
                .and_then(|d| d.to_std())
                .unwrap_or(Duration::from_secs(10))
                .max(Duration::from_secs(1)),
        }
    }
}

pub struct Edged {
    settings: EdgedSettings,
}

impl Edged {
    pub fn new(settings: EdgedSettings) -> Edged {
        Edged { settings }
    }
}

impl Edged {
    /// The container runtime, or `None` (logged) while it cannot be reached.
    async fn connect_runtime(&self) -> Option<runtime::Runtime> {
        match ke_cri::CriClient::connect(&self.settings.runtime_endpoint).await {
            Ok(cri) => {
                tracing::info!(endpoint = %self.settings.runtime_endpoint, "container runtime connected");
                Some(runtime::Runtime::new(
                    cri,
                    self.settings.pod_logs_dir.clone(),
                ))
            }
            Err(err) => {
                tracing::debug!(error = %err, "container runtime not reachable; pods wait for it");
                None
            }
        }
    }
}

impl Module for Edged {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let machine = Machine::detect(&self.settings.root_directory);
            // A request to metamanager can outlive metamanager during shutdown: every wait
            // on one also watches for cancellation.
            let cancel = ctx.cancellation_token();
            // The node's heartbeat runs on its own, so no pod work (an image pull over a slow
            // link, a slow ConfigMap query) can delay it and make the cloud think the node
            // is gone.
            let agent = node::NodeAgent::new(
                self.settings.node.clone(),
                machine.clone(),
                ctx.bus().clone(),
            );
            let (runtime_info, runtime_info_rx) =
                tokio::sync::watch::channel(runtime::RuntimeInfo::default());
            let (registered_tx, mut registered) = tokio::sync::watch::channel(false);
            let heartbeat = tokio::spawn(agent.run(cancel.clone(), runtime_info_rx, registered_tx));
            let facts = pods::NodeFacts {
                host_ip: self.settings.node.ip.clone(),
                allocatable: resources::Allocatable {
                    cpu_millis: machine.cpus as i64 * 1000,
                    memory_bytes: machine.memory_kib as i64 * 1024,
                },
            };
            let mut pods = pods::Pods::new(
                self.settings.node.name.clone(),
                ctx.bus().clone(),
                facts,
                &self.settings.root_directory,
                &self.settings.static_pod_path,
            );
            loop {
                match cancel.run_until_cancelled(pods.load()).await {
                    Some(true) => break,
                    Some(false) => {}
                    None => {
                        heartbeat.abort();
                        return Ok(());
                    }
                }
                let retry = tokio::time::sleep(REGISTER_RETRY);
                if cancel.run_until_cancelled(retry).await.is_none() {
                    heartbeat.abort();
                    return Ok(());
                }
            }
            // Before the first sync, or it would stop the running static pods as orphans.
            pods.load_static();
            let mut log_check = tokio::time::interval(self.settings.log_check);
            log_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut static_scan = tokio::time::interval(STATIC_POD_SCAN);
            static_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Just read by `load_static`; the next read is a period away (or at registration).
            static_scan.reset();
            let mut runtime: Option<runtime::Runtime> = None;
            let mut pod_sync = tokio::time::interval(POD_SYNC);
            pod_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut runtime_check =
                tokio::time::interval(self.settings.node.status_update_frequency);
            runtime_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let probes_changed = pods.probes_changed();
                tokio::select! {
                    Ok(()) = registered.changed() => {
                        if *registered.borrow() {
                            // The static pods get their mirrors.
                            static_scan.reset_immediately();
                        }
                    }
                    _ = runtime_check.tick() => {
                        if let Some(runtime) = &runtime {
                            match runtime.info().await {
                                Ok(info) => {
                                    runtime_info.send_replace(info);
                                }
                                Err(err) => tracing::debug!(error = %err, "runtime version and images not read"),
                            }
                        }
                    }
                    _ = log_check.tick() => {
                        if let Some(runtime) = &runtime {
                            let ids = pods.running_containers();
                            self.settings.log_policy.rotate(runtime, ids).await;
                        }
                    }
                    _ = static_scan.tick() => {
                        let mirrors = pods.load_static();
                        let registered = *registered.borrow();
                        if registered
                            && cancel.run_until_cancelled(pods.sync_mirrors(mirrors)).await.is_none()
                        {
                            break;
                        }
                        pod_sync.reset_immediately();
                    }
                    _ = pod_sync.tick() => {
                        if runtime.is_none() {
                            runtime = self.connect_runtime().await;
                        }
                        if let Some(runtime) = &runtime
                            && cancel.run_until_cancelled(pods.sync(runtime)).await.is_none()
                        {
                            break;
                        }
                    }
                    done = pods.next_done() => {
                        pods.finish(done).await;
                        pod_sync.reset_immediately();
                    }
                    _ = probes_changed => pod_sync.reset_immediately(),
                    message = ctx.recv() => match message {
                        Some(message) => {
                            pods.apply(&message);
                            pod_sync.reset_immediately();
                            if pods.take_mirror_lost() {
                                static_scan.reset_immediately();
                            }
                        }
                        None => break,
                    },
                }
            }
            heartbeat.abort();
            Ok(())
        })
    }
}
