//! EdgeController (upstream module `edgecontroller`): turns API-server state into per-node
//! messages and edge reports back into API objects. A plain client of any Kubernetes API server
//! (embedded or real); nothing here depends on which.
//!
//! * [`downstream`]: one watch per resource type; each change becomes an ACK-required message to
//!   exactly the edge nodes that need it, handed to cloudhub as `node/<node>/<ns>/<type>/<name>`.
//! * [`upstream`]: what edges send (node registration and status, leases, pod status and
//!   deletion, events, remote queries), applied to the API server and answered in upstream's
//!   formats.
//! * [`dynamic`]: `dynamiccontroller`, the writes an edge's metaserver forwards (upstream's
//!   `Application`s), limited to what is the node's own.
//! * [`locations`]: which node needs which ConfigMap/Secret; shared by both directions, so a
//!   node can neither receive nor query a Secret none of its pods reference.

mod downstream;
mod dynamic;
mod kinds;
mod locations;
mod reply;
mod upstream;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext, RestartPolicy};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use downstream::EDGE_ROLE_LABEL;
pub use dynamic::{DYNAMIC_GROUP_NAME, DYNAMIC_MODULE_NAME, DynamicController};
pub use upstream::CLOUDCORE_ANNOTATION;

use crate::locations::Locations;

pub const MODULE_NAME: &str = "edgecontroller";
pub const GROUP_NAME: &str = "edgecontroller";

/// How the controller behaves; everything else comes from the API server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Written as the `cloudcore` annotation on the Nodes whose sessions this cloudcore holds
    /// (upstream writes its advertise address).
    pub cloudcore_id: String,
    /// Upstream messages handled at once; more wait in the mailbox.
    pub upstream_workers: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cloudcore_id: String::new(),
            upstream_workers: 64,
        }
    }
}

pub struct EdgeController {
    client: kube::Client,
    settings: Settings,
}

impl EdgeController {
    pub fn new(client: kube::Client, settings: Settings) -> EdgeController {
        EdgeController { client, settings }
    }
}

impl Module for EdgeController {
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
            let locations = Arc::new(Locations::default());
            let mut tasks = JoinSet::new();
            tasks.spawn(downstream::run(
                self.client.clone(),
                ctx.bus().clone(),
                Arc::clone(&locations),
            ));
            let upstream = Arc::new(upstream::Upstream::new(
                self.client.clone(),
                ctx.bus().clone(),
                locations,
                self.settings.cloudcore_id.clone(),
            ));
            let workers = Arc::new(Semaphore::new(self.settings.upstream_workers.max(1)));
            while let Some(message) = ctx.recv().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else {
                    break;
                };
                let upstream = Arc::clone(&upstream);
                tasks.spawn(async move {
                    upstream.handle(message).await;
                    drop(permit);
                });
                // Reap finished handlers so the set does not grow with the message count.
                while tasks.try_join_next().is_some() {}
            }
            tasks.shutdown().await;
            Ok(())
        })
    }
}
