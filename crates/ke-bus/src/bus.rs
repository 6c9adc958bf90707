//! The message bus: named bounded mailboxes, groups, and sync reply matching.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use ke_message::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::BusError;

/// Mailbox size upstream uses for every module (`ChannelSizeDefault`).
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;
/// Upstream `MessageTimeoutDefault` for `SendSync`.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Cheap, cloneable handle to the process-wide module registry.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: RwLock<Registry>,
    waiters: Mutex<HashMap<String, Waiter>>,
    next_waiter: AtomicU64,
}

struct Waiter {
    /// Lets a finished call remove its own entry without clobbering a later
    /// call that reused the same message id.
    token: u64,
    reply: oneshot::Sender<Message>,
}

#[derive(Default)]
struct Registry {
    modules: HashMap<String, mpsc::Sender<Message>>,
    groups: HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.registry();
        let mut modules: Vec<_> = registry.modules.keys().collect();
        modules.sort();
        f.debug_struct("Bus")
            .field("modules", &modules)
            .field("pending_sync", &self.pending_sync())
            .finish()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    // Every critical section below is a single map operation, so a panic cannot
    // leave the maps half-updated; recovering from poisoning is therefore sound
    // and keeps one panicking module from taking the whole bus down.
    fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<String, Waiter>> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates the mailbox for `module`, adds it to `group` and returns the
    /// receiving end.
    ///
    /// [`crate::BusRuntime::register`] calls this for supervised modules; call
    /// it directly only for endpoints that are not modules (bridges, tests).
    pub fn register_mailbox(
        &self,
        module: &str,
        group: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Message>, BusError> {
        if capacity == 0 {
            return Err(BusError::ZeroCapacity {
                module: module.to_owned(),
            });
        }
        let mut registry = self.registry_mut();
        let Entry::Vacant(slot) = registry.modules.entry(module.to_owned()) else {
            return Err(BusError::DuplicateModule {
                module: module.to_owned(),
            });
        };
        let (tx, rx) = mpsc::channel(capacity);
        slot.insert(tx);
        registry
            .groups
            .entry(group.to_owned())
            .or_default()
            .push(module.to_owned());
        Ok(rx)
    }

    /// Whether a mailbox named `module` exists (it may be closed).
    pub fn contains(&self, module: &str) -> bool {
        self.registry().modules.contains_key(module)
    }

    /// Members of `group`, in registration order.
    pub fn group_members(&self, group: &str) -> Option<Vec<String>> {
        self.registry().groups.get(group).cloned()
    }

    fn sender(&self, module: &str) -> Result<mpsc::Sender<Message>, BusError> {
        self.registry()
            .modules
            .get(module)
            .cloned()
            .ok_or_else(|| BusError::UnknownModule {
                module: module.to_owned(),
            })
    }

    /// Puts `msg` in the mailbox if there is room; hands it back if full.
    ///
    /// Runs under the read lock and does not clone the sender: cloning and
    /// dropping it are two more atomic updates on a counter that every
    /// producer of this mailbox contends on.
    fn deliver_now(&self, module: &str, msg: Message) -> Result<Option<Message>, BusError> {
        let registry = self.registry();
        let tx = registry
            .modules
            .get(module)
            .ok_or_else(|| BusError::UnknownModule {
                module: module.to_owned(),
            })?;
        match tx.try_send(msg) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(msg)) => Ok(Some(msg)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BusError::MailboxClosed {
                module: module.to_owned(),
            }),
        }
    }

    /// Delivers `msg` to `module`, waiting while its mailbox is full.
    ///
    /// Never drops: a slow consumer slows its producers down instead.
    pub async fn send(&self, module: &str, msg: Message) -> Result<(), BusError> {
        let Some(msg) = self.deliver_now(module, msg)? else {
            return Ok(());
        };
        // Full: wait for room with an owned sender, outside the lock.
        let tx = self.sender(module)?;
        tx.send(msg).await.map_err(|_| BusError::MailboxClosed {
            module: module.to_owned(),
        })
    }

    /// Delivers `msg` to `module` only if its mailbox has room right now;
    /// the message is dropped when this returns an error.
    pub fn try_send(&self, module: &str, msg: Message) -> Result<(), BusError> {
        match self.deliver_now(module, msg)? {
            None => Ok(()),
            Some(_) => Err(BusError::MailboxFull {
                module: module.to_owned(),
            }),
        }
    }

    /// Sends a clone of `msg` to every member of `group` and returns how many
    /// accepted it.
    ///
    /// Members are fed concurrently, so one full mailbox does not hold up the
    /// others (upstream uses one goroutine per member for the same reason). A
    /// member whose mailbox is closed is skipped with a warning.
    pub async fn send_to_group(&self, group: &str, msg: Message) -> Result<usize, BusError> {
        let targets: Vec<(String, mpsc::Sender<Message>)> = {
            let registry = self.registry();
            let members = registry
                .groups
                .get(group)
                .ok_or_else(|| BusError::UnknownGroup {
                    group: group.to_owned(),
                })?;
            members
                .iter()
                .filter_map(|m| registry.modules.get(m).map(|tx| (m.clone(), tx.clone())))
                .collect()
        };
        let sends = targets.into_iter().map(|(module, tx)| {
            let msg = msg.clone();
            async move {
                let delivered = tx.send(msg).await.is_ok();
                if !delivered {
                    tracing::warn!(%module, group, "group member mailbox closed; skipped");
                }
                delivered
            }
        });
        let delivered = futures_util::future::join_all(sends).await;
        Ok(delivered.into_iter().filter(|ok| *ok).count())
    }

    /// Sends `msg` to `module` with `header.sync = true` and waits for the reply
    /// whose `parent_id` equals `msg.header.id`.
    ///
    /// `timeout` covers both waiting for mailbox room and waiting for the reply.
    /// The waiter is removed on every exit path, including cancellation of the
    /// returned future, so abandoned calls leave nothing behind.
    pub async fn send_sync(
        &self,
        module: &str,
        mut msg: Message,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        msg.header.sync = true;
        let msg_id = msg.header.id.clone();
        let (reply, rx) = oneshot::channel();
        let token = self.inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        // Registered before sending: the reply can arrive before `send` returns.
        match self.waiters().entry(msg_id.clone()) {
            Entry::Occupied(_) => return Err(BusError::DuplicateWaiter { msg_id }),
            Entry::Vacant(slot) => {
                slot.insert(Waiter { token, reply });
            }
        }
        let _waiter = WaiterGuard {
            bus: self,
            msg_id: &msg_id,
            token,
        };
        let exchange = async {
            self.send(module, msg).await?;
            rx.await.map_err(|_| BusError::ReplyDropped {
                msg_id: msg_id.clone(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Timeout {
                module: module.to_owned(),
                msg_id: msg_id.clone(),
                timeout,
            }),
        }
    }

    /// Hands `resp` to the `send_sync` call waiting for `resp.header.parent_id`.
    ///
    /// Never blocks. Returns false, and logs, when nobody waits (no parent id,
    /// the caller already timed out, or a duplicate reply).
    pub fn send_resp(&self, resp: Message) -> bool {
        let parent_id = resp.header.parent_id.clone();
        let waiter = self.waiters().remove(&parent_id);
        let Some(waiter) = waiter else {
            tracing::warn!(
                parent_id,
                msg_id = %resp.header.id,
                "no send_sync waits for this reply; dropped"
            );
            return false;
        };
        if waiter.reply.send(resp).is_err() {
            // The caller's future was dropped between our remove and send.
            tracing::warn!(parent_id, "send_sync caller went away; reply dropped");
            return false;
        }
        true
    }

    /// Number of `send_sync` calls currently waiting for a reply.
    pub fn pending_sync(&self) -> usize {
        self.waiters().len()
    }
}

/// Removes a `send_sync` waiter however the call ends.
struct WaiterGuard<'a> {
    bus: &'a Bus,
    msg_id: &'a str,
    token: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self.bus.waiters();
        if waiters
            .get(self.msg_id)
            .is_some_and(|w| w.token == self.token)
        {
            waiters.remove(self.msg_id);
        }
    }
}
