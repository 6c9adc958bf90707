//! The embedded control plane's scheduler and built-in controllers: what kube-scheduler and
//! kube-controller-manager do for the workloads edge users run. Each is an ordinary kube-rs
//! client, so they work against any API server; cloudcore runs them only in embedded mode,
//! with a [`kube::Client`] that calls the embedded API server in-process.
//!
//! Every controller is level-triggered: a reconcile reads the current state from the API
//! server and acts on the difference, so restarts, resyncs and duplicated events are harmless.

pub mod common;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod nodelifecycle;
pub mod quantity;
pub mod replicaset;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::controller::Action;
use serde_json::Value;
use tokio::task::JoinSet;

/// How often a reconciled object is looked at again without an event.
pub(crate) const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("invalid object: {0}")]
    Invalid(String),
}

/// A failed reconcile is retried soon; the error is logged, not lost.
pub(crate) fn retry_later<K, C>(obj: Arc<K>, error: &Error, _ctx: Arc<C>) -> Action
where
    K: kube::Resource,
{
    tracing::info!(object = %kube::ResourceExt::name_any(obj.as_ref()), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Whether every field of `new` already has that value in `current` (missing counts as 0/false).
pub(crate) fn same_fields(current: &Value, new: &Value) -> bool {
    let Some(fields) = new.as_object() else {
        return current == new;
    };
    fields.iter().all(|(k, v)| match current.get(k) {
        Some(c) => c == v,
        None => matches!(v, Value::Null) || v == &Value::from(0) || v == &Value::Bool(false),
    })
}

/// Settings of the control loops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub node_lifecycle: nodelifecycle::Settings,
}

/// Runs `start()` again whenever it ends, a second later.
fn supervise<F, Fut>(tasks: &mut JoinSet<()>, name: &'static str, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tasks.spawn(async move {
        loop {
            start().await;
            tracing::warn!(controller = name, "control loop ended; restarting it");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// The running control loops; dropping this stops them.
pub struct ControlLoops {
    _tasks: JoinSet<()>,
}

impl ControlLoops {
    /// Starts the scheduler and every controller on `client`. A loop that ends (its watches
    /// gave up) is logged and started again, so one bad stretch cannot leave a controller dead.
    pub fn spawn(client: Client, settings: Settings) -> ControlLoops {
        let mut tasks = JoinSet::new();
        let c = client.clone();
        supervise(&mut tasks, "scheduler", move || scheduler::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "replicaset", move || replicaset::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "deployment", move || deployment::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "daemonset", move || daemonset::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "statefulset", move || {
            statefulset::run(c.clone())
        });
        let c = client.clone();
        supervise(&mut tasks, "job", move || job::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "endpoints", move || endpoints::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "garbage-collector", move || gc::run(c.clone()));
        let c = client.clone();
        supervise(&mut tasks, "serviceaccount", move || {
            serviceaccount::run(c.clone())
        });
        supervise(&mut tasks, "node-lifecycle", move || {
            nodelifecycle::run(client.clone(), settings.node_lifecycle)
        });
        ControlLoops { _tasks: tasks }
    }
}
