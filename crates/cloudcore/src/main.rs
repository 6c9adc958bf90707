//! cloudcore: the cloud side of kubeedge-rs. Talks to a Kubernetes API server as a client and to
//! every edge node over one edge-initiated connection. Modules are registered here as they are
//! built (cloudhub today; edgecontroller, devicecontroller, synccontroller, cloudstream next).

use std::process::ExitCode;

use anyhow::Context as _;
use ke_bus::BusRuntime;
use ke_cloudhub::{CloudHub, CloudHubSettings};
use ke_config::CloudCoreConfig;
use ke_daemon::Component;

const COMPONENT: Component = Component {
    name: "cloudcore",
    about: "The cloud part of kubeedge-rs: serves edge nodes for a Kubernetes API server",
    default_config_path: "/etc/kubeedge/config/cloudcore.yaml",
    render_default_config: ke_config::render_default_cloudcore,
    render_min_config: ke_config::render_min_cloudcore,
};

fn main() -> ExitCode {
    ke_daemon::main(&COMPONENT, |config_path, host| async move {
        let mut config = CloudCoreConfig::load(&config_path, &host).context("load config")?;
        if config.adjust_for_node_limit() {
            tracing::info!(
                node_limit = config.modules.cloud_hub.node_limit,
                "raised kube API rate limits and edgecontroller workers to fit nodeLimit"
            );
        }
        tracing::info!(config = %config_path.display(), "config loaded");
        let mut runtime = BusRuntime::new();
        for module in config.enabled_modules() {
            match module {
                ke_cloudhub::MODULE_NAME => {
                    let settings = CloudHubSettings::from_config(&config)?;
                    let hub = CloudHub::bind(settings, runtime.bus().clone())
                        .await
                        .context("start cloudhub")?;
                    runtime.register(hub)?;
                }
                other => tracing::warn!(
                    module = other,
                    "module is enabled in the config but not built yet; skipped"
                ),
            }
        }
        ke_daemon::run_until_signal(runtime).await
    })
}
