//! The stream tunnel between edgestream and cloudstream (upstream `pkg/stream`): how `kubectl
//! logs/exec/attach/port-forward` reach a pod on an edge node that the cloud cannot dial.
//!
//! * [`frame`]: upstream's tunnel message (`uvarint connectID, uvarint type, data`).
//! * [`request`]: what a `*_CONNECT` message carries — the kubelet-style HTTP request the edge
//!   is asked to serve — and the kubelet paths.
//! * [`tunnel`]: sessions multiplexed over one WebSocket, both ends; [`textframes`] lets a Go
//!   peer's text frames (which are not UTF-8) through.
//!
//! No TLS here: the callers hand in an established stream.

pub mod frame;
pub mod relay;
pub mod request;
pub mod textframes;
pub mod tunnel;

pub use frame::{FrameError, MessageType, TunnelMessage};
pub use relay::relay;
pub use tunnel::{Incoming, Session, SessionSender, Side, Tunnel, TunnelClosed};

/// The tunnel's URL path (upstream's `/v1/kubeedge/connect`).
pub const TUNNEL_PATH: &str = "/v1/kubeedge/connect";
/// The upgrade header naming the node (upstream `SessionHostNameOverride`).
pub const HEADER_HOSTNAME_OVERRIDE: &str = "SessionHostNameOverride";
/// The upgrade header with the node's internal IP (upstream `SessionInternalIP`).
pub const HEADER_INTERNAL_IP: &str = "SessionInternalIP";
