//! MetaManager (upstream module `metamanager`, group `meta`): the edge's memory.
//!
//! * What the cloud sends (objects for this node) is written to SQLite **before** it is
//!   acknowledged, in batches of whatever has arrived (one transaction, one fsync), so an ACK
//!   always means "stored" and a burst of 1,000 messages is a handful of fsyncs ([`store`]).
//! * What edge modules report (node and pod status, leases, pod deletions) is kept in an outbox
//!   until the cloud has answered it — newest per resource — and sent again when the link
//!   returns. Upstream drops these while disconnected.
//! * Queries are answered from SQLite; the kinds upstream fetches from the cloud
//!   (ConfigMaps, Secrets, leases, tokens…) go to the cloud first and fall back to SQLite when
//!   it cannot answer.
//! * Every stored change is published to [`MetaManager::subscribe`]rs (the metaserver).
//!
//! The database is upstream's file (`database.dataSource`, tables `meta` and `meta_v2` with
//! upstream's exact schema; [`db`]).

mod db;
mod process;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ke_bus::{Module, ModuleContext};
use tokio::sync::broadcast;

pub use db::{DbError, Tables};
pub use store::{Cached, Change, ChangeType, Reader};

pub const MODULE_NAME: &str = "metamanager";
pub const GROUP_NAME: &str = "meta";

/// How many queued messages one transaction takes at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct MetaManagerSettings {
    /// `database.dataSource`.
    pub database: PathBuf,
    /// `metaManager.remoteQueryTimeout`: how long a query waits for the cloud before the local
    /// copy answers.
    pub remote_query_timeout: Duration,
    /// Which other modules' tables the database gets (upstream creates them here too).
    pub tables: Tables,
}

impl MetaManagerSettings {
    pub fn from_config(config: &ke_config::EdgeCoreConfig) -> MetaManagerSettings {
        MetaManagerSettings {
            database: PathBuf::from(&config.database.data_source),
            remote_query_timeout: Duration::from_secs(
                config.modules.meta_manager.remote_query_timeout.max(1) as u64,
            ),
            tables: Tables {
                device_twin: config.modules.device_twin.enable,
                event_bus: config.modules.event_bus.enable,
                service_bus: config.modules.service_bus.enable,
            },
        }
    }
}

pub struct MetaManager {
    state: Arc<process::State>,
}

impl MetaManager {
    /// Opens (or creates) the database. Fails with a clear [`DbError`] for a file that is in
    /// use, corrupt or not a database — at startup, before any module runs.
    pub fn open(settings: MetaManagerSettings) -> Result<MetaManager, DbError> {
        let store = store::Store::open(&settings.database, settings.tables)?;
        // A receiver that falls this far behind is told it lagged (the metaserver then makes its
        // watchers relist); the buffer holds the objects' text, so it is kept moderate.
        let (changes, _) = broadcast::channel(1024);
        Ok(MetaManager {
            state: Arc::new(process::State::new(settings, Mutex::new(store), changes)),
        })
    }

    /// A read-only view of the cached objects, for another thread.
    pub fn reader(&self) -> Result<Reader, DbError> {
        self.state.reader()
    }

    /// A read-write connection to the database, for the modules whose tables live in it
    /// (eventbus's `sub_topics`, devicetwin's device tables).
    pub fn connection(&self) -> Result<rusqlite::Connection, DbError> {
        self.state.writer()
    }

    /// Every change stored from now on. A receiver that lags is told so (and must relist).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.state.changes.subscribe()
    }
}

impl Module for MetaManager {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(first) = ctx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match ctx.try_recv() {
                        Some(message) => batch.push(message),
                        None => break,
                    }
                }
                process::handle(&self.state, ctx.bus(), batch).await;
            }
            Ok(())
        })
    }
}
