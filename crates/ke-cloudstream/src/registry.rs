//! Which node's tunnel is where: one tunnel per node, a newer one replacing the older.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ke_stream::Tunnel;

use crate::Peers;

/// The connected edges' tunnels; cheap to clone.
#[derive(Clone, Default)]
pub struct Tunnels {
    by_node: Arc<Mutex<HashMap<String, Entry>>>,
    /// The other cloudcores, once known (they need the API client and the CA, which come after
    /// the embedded API server that already holds this registry).
    peers: Arc<OnceLock<Peers>>,
}

#[derive(Clone)]
struct Entry {
    tunnel: Tunnel,
}

impl Tunnels {
    pub fn new() -> Tunnels {
        Tunnels::default()
    }

    /// Tells the registry about the other cloudcores (once; later calls are ignored).
    pub fn set_peers(&self, peers: Peers) {
        let _ = self.peers.set(peers);
    }

    pub(crate) fn peers(&self) -> Option<&Peers> {
        self.peers.get()
    }

    /// The node's live tunnel.
    pub fn get(&self, node: &str) -> Option<Tunnel> {
        self.map()
            .get(node)
            .filter(|e| !e.tunnel.is_ended())
            .map(|e| e.tunnel.clone())
    }

    /// Nodes with a live tunnel, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, e)| !e.tunnel.is_ended())
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Prometheus text for cloudhub's `/metrics`: how many nodes have a live tunnel here.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let name = "cloudcore_stream_tunnels";
        let _ = writeln!(
            out,
            "# HELP {name} Edge nodes whose stream tunnel (kubectl logs/exec) is connected here.\n# TYPE {name} gauge\n{name} {}",
            self.nodes().len()
        );
    }

    /// Registers `tunnel` for `node`, ending the one it replaces (its sessions end with it).
    pub(crate) fn insert(&self, node: &str, tunnel: Tunnel) {
        let entry = Entry { tunnel };
        if let Some(old) = self.map().insert(node.to_owned(), entry) {
            old.tunnel
                .shutdown("replaced by a newer tunnel from the same node");
        }
    }

    /// Forgets `tunnel` if it is still the node's.
    pub(crate) fn remove(&self, node: &str, tunnel: &Tunnel) {
        let mut map = self.map();
        if map.get(node).is_some_and(|e| e.tunnel.same(tunnel)) {
            map.remove(node);
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }
}
