//! MetaServer: a Kubernetes-style list/watch API on the edge node (`127.0.0.1:10550` by
//! default), serving the objects metamanager has cached — pods, ConfigMaps, Secrets, Services,
//! Endpoints, Nodes, Leases — so edge applications and `kubectl --server` keep working when the
//! cloud is unreachable.
//!
//! * [`api`]: discovery, GET, LIST (label and field selectors, `ke-selectors`) and WATCH (resume from a
//!   resourceVersion, bookmarks, `410 Expired` once the window has moved on) over HTTP.
//! * [`history`]: metamanager's change feed, numbered and windowed for watch resumption.
//!
//! * [`write`]: create, update, patch and delete, forwarded to the cloud's dynamiccontroller as
//!   upstream's `Application` (503 without the cloud).
//!
//! Reads come from metamanager's SQLite file through a read-only connection; the server holds
//! no copy of the objects.

mod api;
mod history;
mod write;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use hyper_util::rt::TokioIo;
use ke_bus::{Module, ModuleContext};
use ke_metamanager::{Change, Reader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

pub const MODULE_NAME: &str = "metaserver";
pub const GROUP_NAME: &str = "metaserver";

#[derive(Debug, thiserror::Error)]
pub enum MetaServerError {
    #[error("metaManager.metaServer.server {0:?} is not host:port")]
    Address(String),
    #[error("bind the metaserver on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("read the edge database: {0}")]
    Database(#[from] rusqlite::Error),
}

pub struct MetaServer {
    listener: Option<TcpListener>,
    api: Arc<api::Api>,
}

impl MetaServer {
    /// Binds `address` now, so a port in use fails edgecore's start rather than a module later.
    /// Writes go to the cloud through `bus` (edgehub) in the name of `node`.
    pub async fn bind(
        address: &str,
        reader: Reader,
        changes: broadcast::Receiver<Change>,
        bus: ke_bus::Bus,
        node: &str,
    ) -> Result<MetaServer, MetaServerError> {
        let address: SocketAddr = address
            .parse()
            .map_err(|_| MetaServerError::Address(address.to_owned()))?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetaServerError::Bind { address, source })?;
        let bound = listener.local_addr().unwrap_or(address);
        let history = history::History::start(reader.revision()?, changes);
        tracing::info!(address = %bound, "metaserver listening");
        Ok(MetaServer {
            listener: Some(listener),
            api: Arc::new(api::Api {
                reader: Mutex::new(reader),
                history,
                address: bound.to_string(),
                bus,
                node: node.to_owned(),
            }),
        })
    }
}

impl Module for MetaServer {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(listener) = self.listener.take() else {
                anyhow::bail!("the metaserver's listener is gone (it does not restart)");
            };
            let cancel = ctx.cancellation_token();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = cancel.cancelled() => break,
                    // Nothing is addressed to the metaserver; keep the mailbox empty.
                    message = ctx.recv() => match message {
                        Some(_) => continue,
                        None => break,
                    },
                };
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "metaserver accept failed");
                        continue;
                    }
                };
                let api = Arc::clone(&self.api);
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let api = Arc::clone(&api);
                        async move { Ok::<_, std::convert::Infallible>(api.serve(request).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        result = connection => {
                            if let Err(err) = result {
                                tracing::debug!(error = %err, "metaserver connection ended");
                            }
                        }
                        () = cancel.cancelled() => {}
                    }
                });
            }
            Ok(())
        })
    }
}
