//! Sessions: admitting a connection, reading what the edge sends, and routing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ke_bus::Bus;
use ke_delivery::{QueueConfig, SyncStore};
use ke_message::Message;
use ke_message::constants::{group, operation, source};
use ke_message::resource::{add_node_prefix, node_id_of};
use ke_transport::{EdgeIdentity, Refusal, TransportError};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::node::{NODE_COMMAND_CAPACITY, NodeCommand, run_node};
use crate::stream::EdgeStream;

/// Bus names upstream messages are routed to (upstream's `PubToController`).
pub mod destinations {
    pub const EDGE_CONTROLLER_GROUP: &str = "edgecontroller";
    pub const DEVICE_CONTROLLER_GROUP: &str = "devicecontroller";
    pub const DYNAMIC_CONTROLLER: &str = "dynamiccontroller";
    pub const SYNC_CONTROLLER: &str = "synccontroller";
    pub const ROUTER: &str = "router";
}

/// How connections are admitted and watched.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Connected nodes at most; a node beyond it is refused with HTTP 503 and a reason.
    pub node_limit: usize,
    /// Close a session that has sent nothing for this long (`keepaliveInterval`).
    pub keepalive_timeout: Duration,
    /// Require the client certificate's CN to be `system:node:<node_id>`.
    pub authorize_node_identity: bool,
    /// With authorization on: only log mismatches (upstream's `authorization.debug`).
    pub authorization_debug: bool,
    pub max_frame_bytes: usize,
    /// TLS handshake plus WebSocket upgrade must finish within this after the TCP accept, so a
    /// client that connects and says nothing holds a task (and a file descriptor) for seconds,
    /// not forever. The certificate server applies it to its TLS handshake and to reading each
    /// request's headers. Not in `cloudcore.yaml` (upstream has no such setting); see
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::DEFAULT_HANDSHAKE_TIMEOUT).
    pub handshake_timeout: Duration,
}

/// State every session and node task shares.
pub(crate) struct Shared {
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub queue_config: QueueConfig,
    pub write_timeout: Duration,
    pub sync_store: Mutex<Box<dyn SyncStore + Send>>,
    pub policy: SessionPolicy,
    registry: Mutex<Registry>,
    next_session: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Registry {
    /// Every node that has a delivery queue (connected or not).
    nodes: HashMap<String, mpsc::Sender<NodeCommand>>,
    /// Node → its current session.
    connected: HashMap<String, u64>,
}

impl Shared {
    pub(crate) fn new(
        bus: Bus,
        policy: SessionPolicy,
        queue_config: QueueConfig,
        sync_store: Box<dyn SyncStore + Send>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            bus,
            metrics: Arc::new(Metrics::default()),
            queue_config,
            write_timeout: Duration::from_secs(15),
            sync_store: Mutex::new(sync_store),
            policy,
            registry: Mutex::new(Registry::default()),
            next_session: AtomicU64::new(1),
            tasks,
            shutdown,
        })
    }

    /// The command channel of `node_id`'s task, starting the task on first use.
    pub(crate) fn node(self: &Arc<Self>, node_id: &str) -> mpsc::Sender<NodeCommand> {
        let mut registry = self.registry.lock().expect("registry lock poisoned");
        if let Some(tx) = registry.nodes.get(node_id) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(NODE_COMMAND_CAPACITY);
        registry.nodes.insert(node_id.to_owned(), tx.clone());
        self.tasks.spawn(run_node(
            node_id.to_owned(),
            rx,
            Arc::clone(self),
            self.shutdown.child_token(),
        ));
        tx
    }

    pub(crate) fn is_known_node(&self, node_id: &str) -> bool {
        let registry = self.registry.lock().expect("registry lock poisoned");
        registry.nodes.contains_key(node_id)
    }

    /// Decides whether `identity` may connect, given the CN of its client certificate.
    pub(crate) fn admit(
        &self,
        identity: &EdgeIdentity,
        cert_cn: Option<&str>,
    ) -> Result<(), Refusal> {
        let expected = format!("system:node:{}", identity.node_id);
        if self.policy.authorize_node_identity && cert_cn != Some(expected.as_str()) {
            let reason = format!(
                "client certificate CN {:?} does not match node_id {:?} (expected {expected:?})",
                cert_cn.unwrap_or(""),
                identity.node_id
            );
            if !self.policy.authorization_debug {
                return Err(Refusal::new(403, reason));
            }
            tracing::warn!(node = %identity.node_id, %reason, "authorization debug mode: admitting anyway");
        }
        let registry = self.registry.lock().expect("registry lock poisoned");
        if registry.connected.len() >= self.policy.node_limit
            && !registry.connected.contains_key(&identity.node_id)
        {
            return Err(Refusal::new(
                503,
                format!(
                    "node limit of {} connected nodes reached; node {} refused",
                    self.policy.node_limit, identity.node_id
                ),
            ));
        }
        Ok(())
    }

    fn register_session(&self, node_id: &str) -> u64 {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.registry.lock().expect("registry lock poisoned");
        registry.connected.insert(node_id.to_owned(), session);
        self.metrics.set_connected(registry.connected.len());
        session
    }

    fn unregister_session(&self, node_id: &str, session: u64) {
        let mut registry = self.registry.lock().expect("registry lock poisoned");
        if registry.connected.get(node_id) == Some(&session) {
            registry.connected.remove(node_id);
        }
        self.metrics.set_connected(registry.connected.len());
    }

    /// Routes a message from a cloud module to its node's queue.
    pub(crate) async fn deliver(self: &Arc<Self>, message: Message) {
        let Some(node_id) = node_id_of(&message.router.resource).map(str::to_owned) else {
            tracing::warn!(
                resource = %message.router.resource,
                msg_id = %message.header.id,
                "cloud message names no node; dropped"
            );
            return;
        };
        if self
            .node(&node_id)
            .send(NodeCommand::Deliver(message))
            .await
            .is_err()
        {
            tracing::debug!(node = %node_id, "node task stopped; message dropped during shutdown");
        }
    }
}

/// Runs one admitted connection until it ends: hands the writing half to the node's task and
/// reads upstream messages until the edge goes quiet, closes, or breaks the protocol.
pub(crate) async fn run_session(
    shared: Arc<Shared>,
    identity: EdgeIdentity,
    connection: ke_transport::Connection<EdgeStream>,
) {
    let node_id = identity.node_id.clone();
    let session = shared.register_session(&node_id);
    let node = shared.node(&node_id);
    let (writer, mut reader) = connection.split();
    tracing::info!(node = %node_id, session, "edge connected");
    if node
        .send(NodeCommand::Attach { session, writer })
        .await
        .is_err()
    {
        shared.unregister_session(&node_id, session);
        return;
    }
    publish_connection_event(&shared, &node_id, operation::CONNECTED).await;

    let keepalive = shared.policy.keepalive_timeout;
    let close = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(keepalive, reader.recv()) => next,
            () = shared.shutdown.cancelled() => break None,
        };
        match next {
            Err(_) => {
                tracing::warn!(node = %node_id, ?keepalive, "no message within the keepalive interval; closing");
                shared.metrics.keepalive_timeout();
                break Some((
                    CloseCode::Policy,
                    format!("no keepalive within {keepalive:?}"),
                ));
            }
            Ok(Ok(Some(message))) => {
                shared.metrics.message_in();
                dispatch_upstream(&shared, &node_id, &node, message).await;
            }
            Ok(Ok(None)) => break None,
            Ok(Err(err)) => {
                tracing::warn!(node = %node_id, error = %err, "protocol error; closing");
                let code = match err {
                    TransportError::FrameTooLarge { .. } => CloseCode::Size,
                    TransportError::Decode(_) => CloseCode::Invalid,
                    _ => CloseCode::Protocol,
                };
                break Some((code, err.to_string()));
            }
        }
    };
    let _ = node.send(NodeCommand::Detach { session, close }).await;
    shared.unregister_session(&node_id, session);
    publish_connection_event(&shared, &node_id, operation::DISCONNECTED).await;
    tracing::info!(node = %node_id, session, "edge disconnected");
}

/// Upstream's `DispatchUpstream`: keepalives refresh the session (any message does here),
/// responses are ACKs or replies, user uploads go to the router, the rest to controllers with
/// the resource addressed to the sending node.
async fn dispatch_upstream(
    shared: &Shared,
    node_id: &str,
    node: &mpsc::Sender<NodeCommand>,
    mut message: Message,
) {
    let op = message.router.operation.as_str();
    if op == operation::KEEPALIVE {
        return;
    }
    if op == operation::RESPONSE {
        let _ = node.send(NodeCommand::Response(message)).await;
        return;
    }
    message.router.resource = add_node_prefix(node_id, &message.router.resource);
    if op == operation::UPLOAD && message.router.group == group::USER {
        send_or_log(shared, Target::Module(destinations::ROUTER), message).await;
        return;
    }
    let target = match message.router.source.as_str() {
        source::META_SERVER => Target::Module(destinations::DYNAMIC_CONTROLLER),
        source::TWIN => Target::Group(destinations::DEVICE_CONTROLLER_GROUP),
        _ => Target::Group(destinations::EDGE_CONTROLLER_GROUP),
    };
    send_or_log(shared, target, message).await;
}

enum Target {
    Module(&'static str),
    Group(&'static str),
}

async fn send_or_log(shared: &Shared, target: Target, message: Message) {
    let msg_id = message.header.id.clone();
    let result = match target {
        Target::Module(name) => shared.bus.send(name, message).await.map(|_| ()),
        Target::Group(name) => shared.bus.send_to_group(name, message).await.map(|_| ()),
    };
    if let Err(err) = result {
        shared.metrics.upstream_unroutable();
        tracing::debug!(%msg_id, error = %err, "upstream message has no receiver on this cloudcore");
    }
}

/// Upstream publishes `node/<id>` connected/disconnected events to the edgecontroller group
/// (which annotates the Node with its cloudcore); the synccontroller reconciles a node that
/// connects.
async fn publish_connection_event(shared: &Shared, node_id: &str, op: &str) {
    let mut event = Message::new().with_route(
        source::CLOUD_HUB,
        group::RESOURCE,
        format!("node/{node_id}"),
        op,
    );
    event.content = serde_json::json!({
        "event_type": op,
        "timestamp": event.header.timestamp,
        "client_id": node_id,
    });
    if shared.bus.contains(destinations::SYNC_CONTROLLER) {
        let _ = shared
            .bus
            .send(destinations::SYNC_CONTROLLER, event.clone())
            .await;
    }
    if shared
        .bus
        .group_members(destinations::EDGE_CONTROLLER_GROUP)
        .is_some()
    {
        let _ = shared
            .bus
            .send_to_group(destinations::EDGE_CONTROLLER_GROUP, event)
            .await;
    }
}
