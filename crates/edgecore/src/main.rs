//! edgecore: the agent on each edge node. One small binary: it must never link API-server or
//! Kubernetes-client code. Modules are registered here as they are built (edgehub, metamanager,
//! edged, eventbus, devicetwin; servicebus, edgestream next).

use std::process::ExitCode;

use anyhow::Context as _;
use ke_bus::BusRuntime;
use ke_config::EdgeCoreConfig;
use ke_daemon::Component;
use ke_devicetwin::{DeviceTwin, DeviceTwinSettings};
use ke_edged::{Edged, EdgedSettings};
use ke_edgehub::{EdgeHub, EdgeHubSettings};
use ke_edgestream::{EdgeStream, EdgeStreamSettings};
use ke_eventbus::{EventBus, EventBusSettings, SubTopics};
use ke_metamanager::{MetaManager, MetaManagerSettings};
use ke_metaserver::MetaServer;

const COMPONENT: Component = Component {
    name: "edgecore",
    about: "The edge part of kubeedge-rs: runs pods and devices on this node, online or offline",
    default_config_path: "/etc/kubeedge/config/edgecore.yaml",
    render_default_config: ke_config::render_default_edgecore,
    render_min_config: ke_config::render_min_edgecore,
};

fn main() -> ExitCode {
    ke_daemon::main(&COMPONENT, |config_path, host| async move {
        let config = EdgeCoreConfig::load(&config_path, &host).context("load config")?;
        tracing::info!(
            config = %config_path.display(),
            node = %config.modules.edged.hostname_override,
            "config loaded"
        );
        let mut runtime = BusRuntime::new();
        // The database first: other modules keep their tables in it.
        let meta = if config.modules.meta_manager.enable {
            let settings = MetaManagerSettings::from_config(&config);
            Some(MetaManager::open(settings).context("open the edge database")?)
        } else {
            None
        };
        for module in config.enabled_modules() {
            match module {
                ke_edgehub::MODULE_NAME => {
                    runtime.register(EdgeHub::new(EdgeHubSettings::from_config(&config)))?;
                }
                // Registered last, below, once the others have their connections.
                ke_metamanager::MODULE_NAME => {}
                ke_eventbus::MODULE_NAME => {
                    let settings = EventBusSettings::from_config(&config)?;
                    let topics = match &meta {
                        Some(meta) => SubTopics::new(meta.connection()?),
                        None => SubTopics::in_memory(),
                    };
                    runtime.register(EventBus::bind(settings, topics).await?)?;
                }
                ke_devicetwin::MODULE_NAME => {
                    let meta = meta.as_ref().context(
                        "deviceTwin needs metaManager: the device tables are in its database",
                    )?;
                    let settings = DeviceTwinSettings::from_config(&config);
                    runtime.register(DeviceTwin::new(settings, meta.connection()?))?;
                }
                ke_edgestream::MODULE_NAME => {
                    runtime.register(EdgeStream::new(EdgeStreamSettings::from_config(&config)))?;
                }
                ke_edged::MODULE_NAME => {
                    runtime.register(Edged::new(EdgedSettings::from_config(&config, &host)))?;
                }
                other => tracing::warn!(
                    module = other,
                    "module is enabled in the config but not built yet; skipped"
                ),
            }
        }
        if let Some(meta) = meta {
            let server = &config.modules.meta_manager.meta_server;
            if server.enable {
                let reader = meta.reader().context("open the edge database")?;
                let metaserver = MetaServer::bind(
                    &server.server,
                    reader,
                    meta.subscribe(),
                    runtime.bus().clone(),
                    &config.modules.edged.hostname_override,
                )
                .await
                .context("start the metaserver")?;
                runtime.register(metaserver)?;
            }
            runtime.register(meta)?;
        }
        ke_daemon::run_until_signal(runtime).await
    })
}
