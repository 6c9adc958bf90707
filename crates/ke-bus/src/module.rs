//! The `Module` trait and the context a module runs in.

use futures_util::future::BoxFuture;
use ke_message::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, DEFAULT_MAILBOX_CAPACITY};
use crate::restart::RestartPolicy;

/// A long-running component of cloudcore/edgecore (beehive's `Module`).
///
/// `run` returns a boxed future rather than being an `async fn` because the
/// supervisor stores modules as `Box<dyn Module>`, and `async fn` in traits is
/// not dyn-compatible. Borrowing `self` and the context (instead of taking
/// them by value) lets the supervisor call `run` again after a failure with the
/// same mailbox, so messages queued during a restart are not lost.
///
/// After a panic `run` is called again on the same value: a module must not
/// rely on state that a panic could have left half-updated, and should
/// re-initialise what it needs at the top of `run`.
pub trait Module: Send + 'static {
    /// Address other modules use with [`Bus::send`]; unique per bus.
    fn name(&self) -> &str;

    /// Group this module joins for [`Bus::send_to_group`].
    fn group(&self) -> &str;

    /// Defaults to [`RestartPolicy::never`], as upstream without the
    /// `moduleRestart` feature gate.
    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::default()
    }

    /// Mailbox size; beehive uses 1024 for every module.
    fn mailbox_capacity(&self) -> usize {
        DEFAULT_MAILBOX_CAPACITY
    }

    /// The module's main loop. Return when [`ModuleContext::recv`] yields
    /// `None` or the context is cancelled.
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// What a running module gets from the framework: its mailbox, a bus handle
/// and its shutdown signal. Owned by the supervisor, so it outlives restarts.
#[derive(Debug)]
pub struct ModuleContext {
    name: String,
    group: String,
    mailbox: mpsc::Receiver<Message>,
    bus: Bus,
    cancel: CancellationToken,
}

impl ModuleContext {
    pub(crate) fn new(
        name: String,
        group: String,
        mailbox: mpsc::Receiver<Message>,
        bus: Bus,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            name,
            group,
            mailbox,
            bus,
            cancel,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Next message, or `None` once shutdown has begun.
    ///
    /// Shutdown wins over queued messages so a module with a busy mailbox
    /// still stops promptly. Cancel-safe: usable inside `tokio::select!`.
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            msg = self.mailbox.recv() => msg,
        }
    }

    /// A queued message if there is one, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        if self.cancel.is_cancelled() {
            return None;
        }
        self.mailbox.try_recv().ok()
    }

    /// Resolves when this module should stop; for modules that wait on other
    /// things than their mailbox.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A clone of the module's shutdown token, for tasks the module spawns.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}
