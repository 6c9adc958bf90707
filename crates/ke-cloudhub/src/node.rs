//! One task per edge node owns that node's delivery queue and, while the node is connected, the
//! writing half of its connection.
//!
//! The queue outlives connections (upstream throws its pool away on disconnect and relies on a
//! 5 s resync to recover): an ACK-required message enqueued while the node is offline, or in
//! flight when the link broke, is written again as soon as the node is back.

use std::sync::Arc;
use std::time::Instant;

use ke_delivery::{EnqueueOutcome, NodeQueue};
use ke_message::Message;
use ke_transport::MessageSender;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::hub::Shared;
use crate::stream::EdgeStream;

/// Commands to a node's task. Bounded channel: when a node's task falls behind, senders wait.
pub(crate) enum NodeCommand {
    /// A cloud→edge message from a controller.
    Deliver(Message),
    /// A new connection for this node; replaces any current one.
    Attach {
        session: u64,
        writer: MessageSender<EdgeStream>,
    },
    /// The connection `session` ended; `close` is sent to the edge if it is still current.
    Detach {
        session: u64,
        close: Option<(CloseCode, String)>,
    },
    /// A `response` from the edge: an ACK for the queue, or a reply a cloud module waits for.
    Response(Message),
}

pub(crate) const NODE_COMMAND_CAPACITY: usize = 1024;

pub(crate) async fn run_node(
    node_id: String,
    mut commands: mpsc::Receiver<NodeCommand>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut queue = NodeQueue::new(node_id.clone(), shared.queue_config.clone());
    let mut link: Option<(u64, MessageSender<EdgeStream>)> = None;
    loop {
        if let Some((_, writer)) = &mut link
            && let Err(reason) = flush(&mut queue, writer, &shared).await
        {
            tracing::warn!(node = %node_id, %reason, "write to edge failed; dropping the connection");
            link = None;
            let summary = queue.on_disconnect();
            tracing::debug!(node = %node_id, ?summary, "queue kept for the next connection");
        }
        shared
            .metrics
            .set_queue_depth(&node_id, queue.pending_len() + queue.in_flight_len());
        // Retransmission deadlines only matter while something can be written.
        let deadline = link.as_ref().and(queue.next_deadline());
        let command = tokio::select! {
            command = commands.recv() => command,
            () = sleep_until(deadline) => continue,
            () = shutdown.cancelled() => None,
        };
        let Some(command) = command else { break };
        match command {
            NodeCommand::Deliver(message) => {
                let msg_id = message.header.id.clone();
                let outcome = {
                    let store = shared.sync_store.lock().expect("sync store lock poisoned");
                    queue.enqueue(message, Instant::now(), &**store)
                };
                match outcome {
                    EnqueueOutcome::Rejected(reason) => {
                        tracing::warn!(node = %node_id, %reason, "message not deliverable");
                    }
                    other => tracing::trace!(node = %node_id, %msg_id, ?other, "enqueued"),
                }
            }
            NodeCommand::Attach { session, writer } => {
                if let Some((old, mut old_writer)) = link.take() {
                    tracing::info!(node = %node_id, old, new = session, "replacing the node's connection");
                    old_writer
                        .close(
                            CloseCode::Policy,
                            "replaced by a newer connection of this node",
                        )
                        .await;
                    let _ = queue.on_disconnect();
                }
                link = Some((session, writer));
            }
            NodeCommand::Detach { session, close } => {
                if let Some((current, mut writer)) = link.take() {
                    if current != session {
                        // A stale session from before a replacement: not ours to close.
                        link = Some((current, writer));
                        continue;
                    }
                    if let Some((code, reason)) = close {
                        writer.close(code, &reason).await;
                    }
                    let summary = queue.on_disconnect();
                    tracing::debug!(node = %node_id, ?summary, "node disconnected; queue kept");
                }
            }
            NodeCommand::Response(response) => {
                match queue.on_ack(&response.header.parent_id, Instant::now()) {
                    Some(acked) => {
                        shared.metrics.observe_ack(acked.latency);
                        if let Some(record) = acked.record {
                            let mut store =
                                shared.sync_store.lock().expect("sync store lock poisoned");
                            store.apply(&node_id, std::slice::from_ref(&record));
                        }
                    }
                    None => {
                        if !shared.bus.send_resp(response) {
                            tracing::debug!(node = %node_id, "response matched no pending message or waiter");
                        }
                    }
                }
            }
        }
    }
    if let Some((_, mut writer)) = link {
        writer
            .close(CloseCode::Away, "cloudhub is shutting down")
            .await;
    }
}

/// Writes everything the queue releases now. Fails on the first write error or timeout.
async fn flush(
    queue: &mut NodeQueue,
    writer: &mut MessageSender<EdgeStream>,
    shared: &Shared,
) -> Result<(), String> {
    while let Some(outgoing) = queue.next_to_send(Instant::now()) {
        match timeout(shared.write_timeout, writer.send(&outgoing.message)).await {
            Ok(Ok(())) => shared.metrics.message_out(),
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("write timed out after {:?}", shared.write_timeout)),
        }
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
