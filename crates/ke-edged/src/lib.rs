//! Edged (upstream module `edged`): the kubelet of an edge node. Today it runs the node's own
//! lifecycle ([`node`]: registration, status, lease) through metamanager; pods come next.
//!
//! Everything edged asks of the cloud goes through metamanager (`send_sync` to module
//! `metamanager`, group `meta`, as upstream's kubelet bridge does), so an offline start is not
//! fatal: the node runs from local state and registers once the cloud answers.

mod host;
mod node;

use std::time::Duration;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext};

pub use host::Machine;
pub use node::{EDGE_ROLE_LABEL, NodeSettings};

pub const MODULE_NAME: &str = "edged";
pub const GROUP_NAME: &str = "edged";

/// How often an unregistered node retries registration.
const REGISTER_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EdgedSettings {
    pub node: NodeSettings,
    /// `modules.edged.rootDirectory`: whose filesystem is the node's ephemeral storage.
    pub root_directory: String,
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
            let mut agent =
                node::NodeAgent::new(self.settings.node.clone(), machine, ctx.bus().clone());
            let every = self.settings.node.status_update_frequency;
            let mut report = tokio::time::interval(every);
            report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut register = tokio::time::interval(REGISTER_RETRY);
            register.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A request to metamanager can outlive metamanager during shutdown: every wait
            // on one also watches for cancellation.
            let cancel = ctx.cancellation_token();
            loop {
                tokio::select! {
                    _ = register.tick(), if !agent.registered() => {
                        if cancel.run_until_cancelled(agent.register()).await.is_none() {
                            break;
                        }
                        if agent.registered() {
                            // Report at once rather than up to a period later.
                            report.reset_immediately();
                        }
                    }
                    _ = report.tick() => {
                        if cancel.run_until_cancelled(agent.report()).await.is_none() {
                            break;
                        }
                    }
                    message = ctx.recv() => match message {
                        // Pods and the objects they use arrive here; running them is the next
                        // part of edged. Draining keeps metamanager's sends from waiting.
                        Some(message) => tracing::trace!(resource = %message.router.resource, "edged: not handled yet"),
                        None => break,
                    },
                }
            }
            Ok(())
        })
    }
}
