use std::time::Duration;

/// Everything that can go wrong addressing or registering a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    #[error("unknown module {module:?}")]
    UnknownModule { module: String },
    #[error("unknown group {group:?}")]
    UnknownGroup { group: String },
    #[error("module {module:?} is already registered")]
    DuplicateModule { module: String },
    #[error("mailbox capacity for module {module:?} must be at least 1")]
    ZeroCapacity { module: String },
    #[error("mailbox of module {module:?} is closed")]
    MailboxClosed { module: String },
    #[error("mailbox of module {module:?} is full")]
    MailboxFull { module: String },
    #[error("no reply from module {module:?} to message {msg_id} within {timeout:?}")]
    Timeout {
        module: String,
        msg_id: String,
        timeout: Duration,
    },
    #[error("message {msg_id} is already waiting for a reply")]
    DuplicateWaiter { msg_id: String },
    #[error("reply channel for message {msg_id} closed without a reply")]
    ReplyDropped { msg_id: String },
}
