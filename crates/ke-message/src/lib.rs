//! The message every kubeedge-rs module and every cloud–edge frame is made of.
//!
//! Upstream KubeEdge moves one struct, beehive's `model.Message`, both between the modules of a
//! process and over the WebSocket between cloudcore and edgecore (one JSON text frame per
//! message). Compatibility with stock KubeEdge therefore comes down to this crate:
//!
//! * [`Message`] has upstream's exact JSON field names and omission rules (`msg_id`,
//!   `parent_msg_id`, `timestamp` in ms, `resourceversion`, `sync`, `type`; `route` with
//!   `source`, `destination`, `group`, `operation`, `resource`; `content`).
//! * [`codec`] encodes the way Go's `encoding/json` does (HTML-safe escaping of `<`, `>`, `&`,
//!   U+2028/U+2029, Go's float format, the trailing newline of `json.Encoder`), so a frame that came
//!   from a Go peer re-encodes byte-for-byte. Decoding never panics: malformed, truncated, wrongly
//!   typed or absurdly nested input is a [`DecodeError`].
//! * `content` is schemaless JSON ([`serde_json::Value`]): Kubernetes objects, strings such as
//!   `"OK"`, JSON-in-a-string patches, and base64 strings where Go put a `[]byte`.
//! * [`resource`] parses and builds resource strings in both the cloud-internal form
//!   `node/<id>/<ns>/<type>/<name>` and the wire form `<ns>/<type>/<name>`.
//! * [`constants`] holds the operation, resource-type and group names peers agree on;
//!   [`kinds`] the Kubernetes kinds behind the resource-type tokens.
//! * [`compare_resource_versions`] orders resourceVersions numerically and returns an error for
//!   non-numeric input, where upstream panics.
//!
//! Invariant: this crate does no I/O and knows nothing about transports, the bus or SQLite.

pub mod application;
pub mod codec;
pub mod constants;
mod de;
pub mod kinds;
mod message;
pub mod resource;
mod version;

pub use codec::{DecodeError, decode, encode, encode_frame};
pub use message::{ContentError, Message, MessageHeader, MessageRoute, now_millis};
pub use version::{ResourceVersionError, compare_resource_versions};
