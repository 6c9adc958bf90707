//! MQTT 3.1.1 for edgecore's eventbus, written for the edge: small, on our own runtime, and
//! following the specification where KubeEdge depends on it — every KubeEdge topic starts with
//! `$hw/`, and a subscription starting with a wildcard must not match those (spec 4.7.2).
//!
//! - [`codec`]: the packets, decoded from a byte buffer as they arrive (a partial packet is
//!   not an error, a malformed one is) and encoded into one.
//! - [`topic`]: topic names, filters and matching.
//!
//! - [`broker`]: the broker edgecore embeds, over TCP and for in-process subscribers.
//! - [`client`]: a client that stays connected to an external broker (mosquitto).

pub mod broker;
pub mod client;
pub mod codec;
pub mod topic;

pub use codec::{CodecError, Packet, QoS};
