//! SyncController (upstream module `synccontroller`): what each edge node holds, durably, and
//! the reconcile that brings a node back to exactly the current objects.
//!
//! * [`ObjectSyncStore`] is cloudhub's [`SyncStore`](ke_delivery::SyncStore): the newest
//!   version each node acknowledged per object, answered from memory and written behind, in
//!   batches, to upstream's ObjectSync / ClusterObjectSync records ([`records`]).
//! * [`reconcile`] compares the records with the live objects: deleted objects get a `delete`,
//!   newer ones an `update` — when a node connects, and every `reconcile_interval`. Records
//!   of deleted Nodes are garbage-collected.
//!
//! The module receives cloudhub's `connected` events (resource `node/<id>`).

mod reconcile;
pub mod records;
mod store;

use std::time::Duration;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext, RestartPolicy};
use ke_message::constants::operation;

pub use reconcile::{Summary, reconcile};
pub use store::{Held, ObjectSyncStore, Record, Stats};

pub const MODULE_NAME: &str = "synccontroller";
pub const GROUP_NAME: &str = "synccontroller";

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often dirty records are written.
    pub flush_interval: Duration,
    /// How often every node is reconciled (upstream: 5 s from informer caches; here each pass
    /// lists each kind once, so it runs less often and on every connect).
    pub reconcile_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flush_interval: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(30),
        }
    }
}

pub struct SyncController {
    client: kube::Client,
    store: ObjectSyncStore,
    settings: Settings,
}

impl SyncController {
    pub fn new(client: kube::Client, store: ObjectSyncStore, settings: Settings) -> SyncController {
        SyncController {
            client,
            store,
            settings,
        }
    }
}

impl Module for SyncController {
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
            let bus = ctx.bus().clone();
            let mut flush = tokio::time::interval(self.settings.flush_interval);
            let mut full = tokio::time::interval(self.settings.reconcile_interval);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = flush.tick() => {
                        self.store.flush(false).await;
                    }
                    _ = full.tick() => {
                        let summary = reconcile(&self.client, &bus, &self.store, None).await;
                        if summary.updates + summary.deletes + summary.forgotten_nodes > 0 {
                            tracing::info!(?summary, "reconciled edge nodes with the API server");
                        }
                    }
                    message = ctx.recv() => {
                        let Some(message) = message else { break };
                        if message.router.operation == operation::CONNECTED
                            && let Some(node) = message.router.resource.strip_prefix("node/")
                        {
                            let summary = reconcile(&self.client, &bus, &self.store, Some(node)).await;
                            tracing::debug!(%node, ?summary, "reconciled a connecting node");
                        }
                    }
                }
            }
            self.store.flush(true).await;
            let stats = self.store.stats();
            tracing::info!(
                acks = stats.acks.load(std::sync::atomic::Ordering::Relaxed),
                api_calls = stats.api_calls.load(std::sync::atomic::Ordering::Relaxed),
                "sync records flushed"
            );
            Ok(())
        })
    }
}
