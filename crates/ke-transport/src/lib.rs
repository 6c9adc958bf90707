//! The cloud–edge WebSocket lane, wire-compatible with upstream KubeEdge's viaduct.
//!
//! Upstream facts this crate encodes (see kubeedge-facts §2.4.1):
//!
//! * the edge dials `wss://<server>/<projectID>/<nodeName>/events`; the server ignores the path
//!   and identifies the edge by the `node_id` and `project_id` upgrade headers, matched
//!   case-insensitively (Go sends them as `Node_id`, `Project_id`), plus `ConnectionUse: msg`;
//! * after the upgrade there is no application handshake: each message is one text frame holding
//!   the message's JSON and a trailing newline (Go's `json.Encoder`); frames of any type are read.
//!
//! What we add: a frame-size limit enforced while reading (upstream has none on WebSocket), an
//! admission callback that refuses an upgrade with an HTTP status and a reason the edge can log
//! (upstream leaves refused edges hanging), and typed errors that say what went wrong.
//!
//! TLS is not done here: callers hand in an already-established stream (tokio-rustls in
//! production, an in-memory duplex in tests), so this crate never sees certificates.

mod connection;
mod handshake;

pub use connection::{Connection, MessageReceiver, MessageSender};
pub use handshake::{
    EdgeIdentity, HEADER_CONNECTION_USE, HEADER_NODE_ID, HEADER_PROJECT_ID, Refusal, accept,
    connect, edge_url,
};

/// Frames larger than this are refused. Upstream's QUIC packer caps payloads at 32 MiB; its
/// WebSocket lane has no cap at all, which lets one peer make the other allocate without bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 32 << 20;

/// Why the lane failed. Messages name what to look at.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("websocket handshake failed: {0}")]
    Handshake(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("the server refused the connection with HTTP {status}: {reason}")]
    Refused { status: u16, reason: String },
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    #[error("frame is not a valid message: {0}")]
    Decode(#[from] ke_message::DecodeError),
    #[error("connection closed by peer{}", reason_suffix(.reason))]
    Closed { reason: String },
    #[error("websocket error: {0}")]
    WebSocket(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("invalid edge url or header: {0}")]
    InvalidRequest(String),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
