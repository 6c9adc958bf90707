//! Which node's tunnel is where: one tunnel per node, a newer one replacing the older.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ke_stream::Tunnel;

/// The connected edges' tunnels; cheap to clone.
#[derive(Clone, Default)]
pub struct Tunnels {
    by_node: Arc<Mutex<HashMap<String, Tunnel>>>,
}

impl Tunnels {
    pub fn new() -> Tunnels {
        Tunnels::default()
    }

    /// The node's live tunnel.
    pub fn get(&self, node: &str) -> Option<Tunnel> {
        self.map().get(node).filter(|t| !t.is_ended()).cloned()
    }

    /// Nodes with a live tunnel, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, t)| !t.is_ended())
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Registers `tunnel` for `node`, ending the one it replaces (its sessions end with it).
    pub(crate) fn insert(&self, node: &str, tunnel: Tunnel) {
        if let Some(old) = self.map().insert(node.to_owned(), tunnel) {
            old.shutdown("replaced by a newer tunnel from the same node");
        }
    }

    /// Forgets `tunnel` if it is still the node's.
    pub(crate) fn remove(&self, node: &str, tunnel: &Tunnel) {
        let mut map = self.map();
        if map.get(node).is_some_and(|t| t.same(tunnel)) {
            map.remove(node);
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tunnel>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }
}
