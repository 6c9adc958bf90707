//! In-process module framework for cloudcore and edgecore: KubeEdge's
//! "beehive", on Tokio.
//!
//! # Model
//!
//! A process is a set of [`Module`]s. Each has a unique name, belongs to one
//! group, and owns a bounded mailbox. Modules talk only by sending
//! [`Message`]s through a shared [`Bus`]:
//!
//! * [`Bus::send`] to one module by name, [`Bus::send_to_group`] to every member
//!   of a group (upstream `Send` / `SendToGroup`);
//! * [`Bus::send_sync`] sends with `header.sync = true` and waits for a reply;
//!   the replying module answers with [`Bus::send_resp`] (upstream `SendSync` /
//!   `SendResp`).
//!
//! [`BusRuntime`] registers modules, runs each under a supervisor task that
//! restarts it according to its [`RestartPolicy`] (panics count as failures),
//! and shuts everything down on SIGINT/SIGTERM with a grace period.
//!
//! # Invariants
//!
//! * **Bounded mailboxes with back-pressure.** A mailbox holds at most its
//!   capacity (default [`DEFAULT_MAILBOX_CAPACITY`] = 1024, as upstream).
//!   [`Bus::send`] waits for room and never drops; [`Bus::try_send`] is the
//!   non-waiting variant and reports [`BusError::MailboxFull`].
//! * **Replies are matched only by parent id.** A `send_sync` call waits for
//!   the message whose `header.parent_id` equals its request's `header.id`;
//!   route, source and arrival order play no part. A reply nobody waits for
//!   (late, duplicate, or without parent id) is dropped with a warning. The
//!   waiter is removed on every exit path, so timeouts leak nothing.
//! * **A mailbox outlives restarts.** The supervisor owns the module's
//!   [`ModuleContext`] and lends it to each run, so messages queued while a
//!   module is failing or backing off are delivered to its next run. The
//!   mailbox closes only when the module stops for good; sends to it then
//!   fail with [`BusError::MailboxClosed`].
//! * **Shutdown wins.** Once shutdown begins, [`ModuleContext::recv`] returns
//!   `None` even if messages are queued, and nothing is restarted.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ke_bus::{BoxFuture, BusRuntime, Message, Module, ModuleContext, RestartPolicy};
//!
//! struct MetaManager;
//!
//! impl Module for MetaManager {
//!     fn name(&self) -> &str { "metamanager" }
//!     fn group(&self) -> &str { "meta" }
//!     fn restart_policy(&self) -> RestartPolicy { RestartPolicy::on_failure() }
//!     fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
//!         Box::pin(async move {
//!             while let Some(req) = ctx.recv().await {
//!                 let mut resp = Message::new();
//!                 resp.header.parent_id = req.header.id;
//!                 resp.content = "OK".into();
//!                 ctx.bus().send_resp(resp);
//!             }
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let mut runtime = BusRuntime::new();
//! runtime.register(MetaManager)?;
//! let bus = runtime.bus().clone();
//! runtime.start();
//!
//! let reply = bus.send_sync("metamanager", Message::new(), Duration::from_secs(1)).await?;
//! assert_eq!(reply.content, "OK");
//!
//! // A real binary would call `runtime.run_until_signal(grace)` instead.
//! assert!(runtime.shutdown(Duration::from_secs(5)).await.is_clean());
//! # Ok(())
//! # }
//! ```
//!
//! Differences from upstream: the `Never` restart kind is explicit and the
//! default; a run that stays healthy for [`RestartPolicy::reset_after`] resets
//! the backoff and retry count; `send_sync`'s timeout also bounds the wait for
//! mailbox room.

mod bus;
mod error;
mod module;
mod restart;
mod supervisor;

pub use bus::{Bus, DEFAULT_MAILBOX_CAPACITY, DEFAULT_SYNC_TIMEOUT};
pub use error::BusError;
pub use ke_message::Message;
pub use module::{Module, ModuleContext};
pub use restart::{
    Backoff, CORE_GROWTH_RATE, DEFAULT_INITIAL_INTERVAL, DEFAULT_MAX_INTERVAL, Decision, Exit,
    RestartKind, RestartPolicy,
};
pub use supervisor::{BusRuntime, ShutdownReport};

/// Re-exported so modules can name the return type of [`Module::run`].
pub use futures_util::future::BoxFuture;
