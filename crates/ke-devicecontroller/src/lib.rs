//! DeviceController (upstream module `devicecontroller`): Devices and DeviceModels
//! (`devices.kubeedge.io/v1beta1`) to the node a Device is bound to ([`downstream`]), and the
//! node's twin and state reports into the Device's DeviceStatus ([`upstream`], [`twin`]).
//! A plain client of any API server.

mod downstream;
mod kinds;
mod twin;
mod upstream;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext, RestartPolicy};
use tokio::task::JoinSet;

pub use twin::apply_twin_update;

pub const MODULE_NAME: &str = "devicecontroller";
pub const GROUP_NAME: &str = "devicecontroller";

pub struct DeviceController {
    client: kube::Client,
}

impl DeviceController {
    pub fn new(client: kube::Client) -> DeviceController {
        DeviceController { client }
    }
}

impl Module for DeviceController {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::on_failure()
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let devices = downstream::Devices::default();
            let mut tasks = JoinSet::new();
            tasks.spawn(downstream::run(
                self.client.clone(),
                ctx.bus().clone(),
                Arc::clone(&devices),
            ));
            let upstream = upstream::Upstream::new(self.client.clone(), ctx.bus().clone(), devices);
            // Reports are handled in order: a device's twin reports must not overtake each other.
            while let Some(message) = ctx.recv().await {
                upstream.handle(message).await;
            }
            tasks.shutdown().await;
            Ok(())
        })
    }
}
