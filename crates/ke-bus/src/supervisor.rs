//! Starting, supervising and stopping modules.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bus::Bus;
use crate::error::BusError;
use crate::module::{Module, ModuleContext};
use crate::restart::{Backoff, Decision, Exit};

/// Owns the modules of one process: registers them on a [`Bus`], runs each
/// under its own supervisor task, and shuts them all down.
///
/// Dropping the runtime cancels every module, so supervisors never outlive it
/// unnoticed; call [`BusRuntime::shutdown`] to also wait for them.
pub struct BusRuntime {
    bus: Bus,
    root: CancellationToken,
    tracker: TaskTracker,
    pending: Vec<(Box<dyn Module>, ModuleContext)>,
    supervisors: Vec<(String, JoinHandle<()>)>,
    started: bool,
}

/// Outcome of [`BusRuntime::shutdown`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Modules still running when the grace period ended; their tasks were
    /// aborted at their next `.await`.
    pub unfinished: Vec<String>,
}

impl ShutdownReport {
    /// True when every module stopped within the grace period.
    pub fn is_clean(&self) -> bool {
        self.unfinished.is_empty()
    }
}

impl Default for BusRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for BusRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusRuntime")
            .field("bus", &self.bus)
            .field("started", &self.started)
            .field("supervisors", &self.supervisors.len())
            .finish()
    }
}

impl BusRuntime {
    pub fn new() -> Self {
        Self::with_bus(Bus::new())
    }

    /// A runtime registering its modules on an existing bus.
    pub fn with_bus(bus: Bus) -> Self {
        Self {
            bus,
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            pending: Vec::new(),
            supervisors: Vec::new(),
            started: false,
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Cancelling this token starts shutdown: every module's context reports
    /// cancellation and [`BusRuntime::run_until_signal`] returns.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.root.clone()
    }

    /// Creates the module's mailbox right away, so messages sent before
    /// [`BusRuntime::start`] wait in it. After `start` the module starts at once.
    pub fn register(&mut self, module: impl Module) -> Result<(), BusError> {
        self.register_boxed(Box::new(module))
    }

    pub fn register_boxed(&mut self, module: Box<dyn Module>) -> Result<(), BusError> {
        let name = module.name().to_owned();
        let group = module.group().to_owned();
        let mailbox = self
            .bus
            .register_mailbox(&name, &group, module.mailbox_capacity())?;
        let ctx = ModuleContext::new(
            name,
            group,
            mailbox,
            self.bus.clone(),
            self.root.child_token(),
        );
        if self.started {
            self.spawn(module, ctx);
        } else {
            self.pending.push((module, ctx));
        }
        Ok(())
    }

    /// Spawns one supervisor task per registered module. Must be called
    /// inside a Tokio runtime; calling it again is a no-op.
    pub fn start(&mut self) {
        self.started = true;
        for (module, ctx) in std::mem::take(&mut self.pending) {
            self.spawn(module, ctx);
        }
    }

    fn spawn(&mut self, module: Box<dyn Module>, ctx: ModuleContext) {
        let name = ctx.name().to_owned();
        let span = tracing::info_span!("module", module = %name, group = %ctx.group());
        let handle = self.tracker.spawn(supervise(module, ctx).instrument(span));
        self.supervisors.push((name, handle));
    }

    /// Cancels every module and waits up to `grace` for them to return.
    ///
    /// Modules still running after `grace` are named in the report, logged,
    /// and aborted (which takes effect at their next `.await`; a module stuck
    /// in blocking code cannot be stopped from here).
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        tracing::info!(?grace, "shutting down modules");
        self.root.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            tracing::info!("all modules stopped");
            return ShutdownReport::default();
        }
        let mut unfinished = Vec::new();
        for (name, handle) in std::mem::take(&mut self.supervisors) {
            if !handle.is_finished() {
                handle.abort();
                unfinished.push(name);
            }
        }
        tracing::error!(
            modules = ?unfinished,
            ?grace,
            "modules ignored cancellation and did not stop within the grace period; aborted"
        );
        ShutdownReport { unfinished }
    }

    /// Starts the modules if needed, waits for SIGINT, SIGTERM or the
    /// [`shutdown_token`](Self::shutdown_token), then shuts down with `grace`.
    pub async fn run_until_signal(mut self, grace: Duration) -> std::io::Result<ShutdownReport> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        self.start();
        // Logged only once the handlers are installed: a supervisor that sees this line and
        // sends SIGTERM gets a clean shutdown, not the default signal death.
        tracing::info!("running; send SIGINT or SIGTERM to stop");
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            () = self.root.cancelled() => tracing::info!("shutdown requested"),
        }
        Ok(self.shutdown(grace).await)
    }
}

impl Drop for BusRuntime {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

/// Runs a module until it stops for good, restarting it as its policy says.
async fn supervise(mut module: Box<dyn Module>, mut ctx: ModuleContext) {
    let mut backoff = Backoff::new(module.restart_policy());
    loop {
        if ctx.is_cancelled() {
            break;
        }
        tracing::debug!("module starting");
        let started = Instant::now();
        // `run` itself is called inside the guarded future so that a panic
        // while building the future is caught too.
        let outcome = AssertUnwindSafe(async { module.run(&mut ctx).await })
            .catch_unwind()
            .await;
        let exit = match outcome {
            Ok(Ok(())) => {
                tracing::info!("module returned");
                Exit::Completed
            }
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "module failed");
                Exit::Failed
            }
            Err(payload) => {
                tracing::error!(panic = panic_message(payload.as_ref()), "module panicked");
                Exit::Failed
            }
        };
        if ctx.is_cancelled() {
            break;
        }
        match backoff.on_exit(exit, started.elapsed()) {
            Decision::Stop => {
                if exit == Exit::Failed {
                    tracing::error!(
                        restarts = backoff.consecutive(),
                        "module will not be restarted"
                    );
                }
                break;
            }
            Decision::Restart(delay) => {
                tracing::warn!(
                    ?delay,
                    attempt = backoff.consecutive(),
                    "restarting module after backoff"
                );
                tokio::select! {
                    () = ctx.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    tracing::debug!("module supervisor exited");
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
