//! Sessions multiplexed over one tunnel WebSocket.
//!
//! The cloud opens sessions (`*_CONNECT` with a fresh connect id, [`Tunnel::open`]); the edge
//! receives them as [`Incoming`] and answers on the same id. Either end ends a session with
//! `REMOVE_CONNECT`; dropping a [`Session`] sends it. Its data, empty upstream, may carry why the
//! edge refused the request ([`Session::refusal`]); upstream's cloud ignores it. `CLOSE_CONNECT`
//! with connect id 0 is the cloud closing the whole tunnel, its data the reason.
//! Both ends ping every [`PING_EVERY`] and give the tunnel up after [`IDLE_LIMIT`] of silence, so
//! a peer that vanished without a FIN (a cut cellular link) is noticed.
//!
//! Framing: upstream writes every message as a WebSocket *text* frame whatever the bytes, and its
//! cloud drops a tunnel that sends anything else. [`Framing::GoText`] does the same (raw frames
//! with the text opcode); two kubeedge-rs ends agree on [`Framing::Binary`] during the upgrade
//! ([`HEADER_FRAMING`]). Received text frames must be UTF-8 (tungstenite checks), so a Go peer's
//! logs work but its binary payloads (SPDY) do not reach us: a known limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};

use crate::frame::{MessageType, TunnelMessage};

pub const PING_EVERY: Duration = Duration::from_secs(15);
pub const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// Data is sent in pieces of at most this, so one busy session cannot hold the link for long.
pub const CHUNK_BYTES: usize = 32 * 1024;
/// Messages a session buffers from its peer before the tunnel's reader waits for it.
const SESSION_BUFFER: usize = 64;
const OUTBOUND_BUFFER: usize = 256;

/// Upgrade header (request and response) by which two kubeedge-rs ends agree on binary frames.
pub const HEADER_FRAMING: &str = "x-kubeedge-rs-framing";
pub const FRAMING_BINARY: &str = "binary";

/// Which end of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Cloud,
    Edge,
}

/// How messages are written (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Binary,
    GoText,
}

impl Framing {
    fn frame(self, message: &TunnelMessage) -> WsMessage {
        let bytes = message.encode();
        match self {
            Framing::Binary => WsMessage::Binary(bytes.into()),
            Framing::GoText => {
                WsMessage::Frame(Frame::message(bytes, OpCode::Data(OpData::Text), true))
            }
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("the stream tunnel is closed")]
pub struct TunnelClosed;

/// A handle on a running tunnel; cheap to clone.
#[derive(Clone)]
pub struct Tunnel {
    inner: Arc<Inner>,
}

type Sessions = HashMap<u64, SessionSlot>;

/// The tunnel's side of one session.
struct SessionSlot {
    data: mpsc::Sender<Bytes>,
    refusal: Arc<OnceLock<String>>,
}

struct Inner {
    side: Side,
    outbound: mpsc::Sender<TunnelMessage>,
    sessions: Mutex<Sessions>,
    next_id: AtomicU64,
    /// `Some(reason)` once the tunnel has ended.
    ended: watch::Sender<Option<String>>,
}

/// A session the peer opened (edge side).
pub struct Incoming {
    pub kind: MessageType,
    /// The `*_CONNECT` message's data: the request, as JSON.
    pub request: Bytes,
    pub session: Session,
}

/// One multiplexed byte stream. Dropping it ends the session for the peer too.
pub struct Session {
    id: u64,
    rx: mpsc::Receiver<Bytes>,
    refusal: Arc<OnceLock<String>>,
    sender: SessionSender,
}

/// The sending half of a [`Session`]; cloneable, so reading and writing can be separate tasks.
#[derive(Clone)]
pub struct SessionSender {
    id: u64,
    tunnel: Tunnel,
}

impl Tunnel {
    /// Runs the tunnel over `ws` until it breaks or [`Tunnel::shutdown`]; sessions the peer
    /// opens arrive on the returned receiver (the cloud side refuses them).
    pub fn spawn<S>(
        ws: WebSocketStream<S>,
        side: Side,
        framing: Framing,
    ) -> (Tunnel, mpsc::Receiver<Incoming>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_BUFFER);
        let (incoming_tx, incoming_rx) = mpsc::channel(16);
        let tunnel = Tunnel {
            inner: Arc::new(Inner {
                side,
                outbound,
                sessions: Mutex::default(),
                next_id: AtomicU64::new(1),
                ended: watch::channel(None).0,
            }),
        };
        tokio::spawn(run(ws, tunnel.clone(), framing, outbound_rx, incoming_tx));
        (tunnel, incoming_rx)
    }

    /// Opens a session (cloud side): sends `kind` with `request` and returns the session.
    pub async fn open(&self, kind: MessageType, request: Bytes) -> Result<Session, TunnelClosed> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let session = self.register(id)?;
        self.send(TunnelMessage::new(id, kind, request)).await?;
        Ok(session)
    }

    /// Ends the tunnel; every session sees its end.
    pub fn shutdown(&self, reason: &str) {
        self.end(reason.to_owned());
    }

    /// Resolves once the tunnel has ended, with the reason.
    pub async fn ended(&self) -> String {
        let mut ended = self.inner.ended.subscribe();
        loop {
            if let Some(reason) = ended.borrow_and_update().clone() {
                return reason;
            }
            if ended.changed().await.is_err() {
                return "tunnel dropped".into();
            }
        }
    }

    /// Whether both handles are the same tunnel.
    pub fn same(&self, other: &Tunnel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn is_ended(&self) -> bool {
        self.inner.ended.borrow().is_some()
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: u64) -> Result<Session, TunnelClosed> {
        if self.is_ended() {
            return Err(TunnelClosed);
        }
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let refusal = Arc::new(OnceLock::new());
        self.sessions().insert(
            id,
            SessionSlot {
                data: tx,
                refusal: Arc::clone(&refusal),
            },
        );
        Ok(Session {
            id,
            rx,
            refusal,
            sender: SessionSender {
                id,
                tunnel: self.clone(),
            },
        })
    }

    async fn send(&self, message: TunnelMessage) -> Result<(), TunnelClosed> {
        if self.is_ended() {
            return Err(TunnelClosed);
        }
        self.inner
            .outbound
            .send(message)
            .await
            .map_err(|_| TunnelClosed)
    }

    fn end(&self, reason: String) {
        self.inner.ended.send_if_modified(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(reason);
            true
        });
        // Dropping the senders ends every session's receiver.
        self.sessions().clear();
    }
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next data from the peer; `None` once the peer ended the session or the tunnel ended.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    pub async fn send(&self, data: &[u8]) -> Result<(), TunnelClosed> {
        self.sender.send(data).await
    }

    /// Why the peer refused the request, when it ended the session saying so.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.get().map(String::as_str)
    }

    /// Ends the session, telling the peer why (edge side: the request could not be served).
    pub fn refuse(self, reason: &str) {
        self.end(Bytes::copy_from_slice(reason.as_bytes()));
    }

    fn end(&self, reason: Bytes) {
        let tunnel = &self.sender.tunnel;
        if tunnel.sessions().remove(&self.id).is_some() {
            let end = TunnelMessage::new(self.id, MessageType::RemoveConnect, reason);
            // A full queue means the link is stuck; the peer learns from the tunnel's end instead.
            let _ = tunnel.inner.outbound.try_send(end);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end(Bytes::new());
    }
}

impl SessionSender {
    pub async fn send(&self, data: &[u8]) -> Result<(), TunnelClosed> {
        for chunk in data.chunks(CHUNK_BYTES) {
            let message = TunnelMessage::new(self.id, MessageType::Data, chunk.to_vec());
            self.tunnel.send(message).await?;
        }
        Ok(())
    }

    /// Whether the peer (or the tunnel) has ended this session.
    pub fn is_closed(&self) -> bool {
        !self.tunnel.sessions().contains_key(&self.id)
    }
}

async fn run<S>(
    ws: WebSocketStream<S>,
    tunnel: Tunnel,
    framing: Framing,
    outbound: mpsc::Receiver<TunnelMessage>,
    incoming: mpsc::Sender<Incoming>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let last_heard = Arc::new(Mutex::new(Instant::now()));
    // Reading and writing are separate tasks: a reader waiting on a slow session must not stop
    // that session's (or any other's) writes.
    let writer = tokio::spawn(write_loop(
        sink,
        tunnel.clone(),
        framing,
        outbound,
        Arc::clone(&last_heard),
    ));
    let reason = read_loop(stream, &tunnel, &incoming, &last_heard).await;
    tunnel.end(reason);
    let _ = writer.await;
}

async fn read_loop<S>(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    tunnel: &Tunnel,
    incoming: &mpsc::Sender<Incoming>,
    last_heard: &Mutex<Instant>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ended = tunnel.inner.ended.subscribe();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = ended.changed() => return "shut down".to_owned(),
        };
        *last_heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match frame {
            None | Some(Ok(WsMessage::Close(_))) => return "the peer closed the tunnel".to_owned(),
            Some(Err(err)) => return format!("tunnel read: {err}"),
            Some(Ok(WsMessage::Binary(bytes))) => {
                let delivered = tokio::select! {
                    delivered = deliver(tunnel, incoming, bytes) => delivered,
                    _ = ended.changed() => return "shut down".to_owned(),
                };
                if let Err(reason) = delivered {
                    return reason;
                }
            }
            Some(Ok(WsMessage::Text(text))) => {
                let bytes = Bytes::from(text);
                let delivered = tokio::select! {
                    delivered = deliver(tunnel, incoming, bytes) => delivered,
                    _ = ended.changed() => return "shut down".to_owned(),
                };
                if let Err(reason) = delivered {
                    return reason;
                }
            }
            // Pings are answered by tungstenite; text frames are not part of the protocol.
            Some(Ok(_)) => {}
        }
    }
}

async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, WsMessage>,
    tunnel: Tunnel,
    framing: Framing,
    mut outbound: mpsc::Receiver<TunnelMessage>,
    last_heard: Arc<Mutex<Instant>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut ended = tunnel.inner.ended.subscribe();
    let reason = loop {
        tokio::select! {
            message = outbound.recv() => {
                let Some(message) = message else { break "tunnel dropped".to_owned() };
                if let Err(err) = sink.send(framing.frame(&message)).await {
                    break format!("tunnel write: {err}");
                }
            }
            _ = ping.tick() => {
                let silent = last_heard.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                if silent > IDLE_LIMIT {
                    break format!("nothing heard from the peer for {}s", silent.as_secs());
                }
                if let Err(err) = sink.send(WsMessage::Ping(Bytes::new())).await {
                    break format!("tunnel write: {err}");
                }
            }
            _ = ended.changed() => {
                let _ = sink.close().await;
                return;
            }
        }
    };
    let _ = sink.close().await;
    tracing::debug!(reason, "stream tunnel ended");
    tunnel.end(reason);
}

/// Hands one received message to its session. An error ends the tunnel.
async fn deliver(
    tunnel: &Tunnel,
    incoming: &mpsc::Sender<Incoming>,
    bytes: Bytes,
) -> Result<(), String> {
    let message = TunnelMessage::decode(bytes).map_err(|e| format!("bad tunnel message: {e}"))?;
    let id = message.connect_id;
    match message.kind {
        kind if kind.opens_session() => {
            if tunnel.inner.side == Side::Cloud || tunnel.sessions().contains_key(&id) {
                tracing::debug!(id, ?kind, "unexpected session request refused");
                let end = TunnelMessage::new(id, MessageType::RemoveConnect, Bytes::new());
                let _ = tunnel.inner.outbound.try_send(end);
                return Ok(());
            }
            let Ok(session) = tunnel.register(id) else {
                return Ok(());
            };
            let request = Incoming {
                kind,
                request: message.data,
                session,
            };
            incoming
                .send(request)
                .await
                .map_err(|_| "nobody takes sessions".to_owned())
        }
        MessageType::Data => {
            let target = tunnel.sessions().get(&id).map(|slot| slot.data.clone());
            if let Some(target) = target {
                // Waits when the session's reader is slow: back-pressure onto the peer, at the
                // cost of the other sessions on this tunnel meanwhile.
                let _ = target.send(message.data).await;
            }
            Ok(())
        }
        MessageType::CloseConnect if id == 0 => Err(format!(
            "the cloud closed the tunnel: {}",
            String::from_utf8_lossy(&message.data)
        )),
        _ => {
            if let Some(slot) = tunnel.sessions().remove(&id)
                && !message.data.is_empty()
            {
                let _ = slot
                    .refusal
                    .set(String::from_utf8_lossy(&message.data).into_owned());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (Tunnel, Tunnel, mpsc::Receiver<Incoming>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let cloud = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let edge = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (cloud, _) = Tunnel::spawn(cloud, Side::Cloud, Framing::Binary);
        let (edge, incoming) = Tunnel::spawn(edge, Side::Edge, Framing::GoText);
        (cloud, edge, incoming)
    }

    #[tokio::test]
    async fn sessions_carry_data_both_ways_and_end_on_drop() {
        let (cloud, _edge, mut incoming) = pair().await;
        let mut first = cloud
            .open(MessageType::LogsConnect, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let mut second = cloud
            .open(MessageType::ExecConnect, Bytes::from_static(b"{\"x\":1}"))
            .await
            .unwrap();
        let a = incoming.recv().await.unwrap();
        let mut b = incoming.recv().await.unwrap();
        assert_eq!(a.kind, MessageType::LogsConnect);
        assert_eq!(&b.request[..], b"{\"x\":1}");
        let big = vec![7u8; CHUNK_BYTES * 2 + 5];
        b.session.send(&big).await.unwrap();
        a.session.send(b"for first").await.unwrap();
        // The edge writes Go's text frames here: valid UTF-8 ones arrive.
        assert_eq!(&first.recv().await.unwrap()[..], b"for first");
        let mut got = Vec::new();
        while got.len() < big.len() {
            got.extend_from_slice(&second.recv().await.unwrap());
        }
        assert_eq!(got, big);
        second.send(b"stdin").await.unwrap();
        assert_eq!(&b.session.recv().await.unwrap()[..], b"stdin");
        // The edge ends one session; the cloud sees its end, the other session lives on.
        drop(a);
        assert_eq!(first.recv().await, None);
        second.send(b"more").await.unwrap();
        assert_eq!(&b.session.recv().await.unwrap()[..], b"more");
        drop(second);
        assert_eq!(b.session.recv().await, None);
        // A refusal reaches the cloud with its reason.
        let mut third = cloud
            .open(MessageType::LogsConnect, Bytes::new())
            .await
            .unwrap();
        incoming
            .recv()
            .await
            .unwrap()
            .session
            .refuse("container \"x\" not found");
        assert_eq!(third.recv().await, None);
        assert_eq!(third.refusal(), Some("container \"x\" not found"));
    }

    #[tokio::test]
    async fn a_broken_tunnel_ends_every_session() {
        let (cloud, edge, mut incoming) = pair().await;
        let mut session = cloud
            .open(MessageType::LogsConnect, Bytes::new())
            .await
            .unwrap();
        let mut remote = incoming.recv().await.unwrap().session;
        edge.shutdown("test");
        assert_eq!(remote.recv().await, None);
        assert_eq!(session.recv().await, None);
        assert!(!cloud.ended().await.is_empty());
        assert!(
            cloud
                .open(MessageType::LogsConnect, Bytes::new())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn garbage_ends_the_tunnel_without_a_panic() {
        let (a, b) = tokio::io::duplex(4096);
        let cloud = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut raw = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (cloud, _) = Tunnel::spawn(cloud, Side::Cloud, Framing::Binary);
        raw.send(WsMessage::Binary(Bytes::from_static(&[1, 99])))
            .await
            .unwrap();
        assert!(cloud.ended().await.contains("unknown tunnel message type"));
    }
}
