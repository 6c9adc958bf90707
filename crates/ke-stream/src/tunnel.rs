//! Sessions multiplexed over one tunnel WebSocket.
//!
//! The cloud opens sessions (`*_CONNECT` with a fresh connect id, [`Tunnel::open_with`]); the
//! edge receives them as [`Incoming`] and answers on the same id. Either end ends a session with
//! `REMOVE_CONNECT`; dropping a [`Session`] sends it, queued behind the session's data so it
//! never overtakes it. Its data, empty upstream, may carry why the edge refused the request
//! ([`Session::refusal`]); upstream's cloud ignores it. `CLOSE_CONNECT` with connect id 0 is the
//! cloud closing the whole tunnel, its data the reason. A type we do not know (a newer peer's)
//! is refused for its session only.
//!
//! Liveness: both ends ping every [`PING_EVERY`]; the reader gives the tunnel up after
//! [`IDLE_LIMIT`] with nothing heard, the writer when one write takes longer than
//! [`WRITE_LIMIT`] — so a peer that vanished without a FIN (a cut cellular link) is noticed
//! even while data is queued for it.
//!
//! Back-pressure: a session buffers [`SESSION_BUFFER`] messages from its peer. When its reader
//! stops reading (a `kubectl logs -f | less` left on page one) the tunnel's reader waits for it
//! for at most [`SLOW_READER_LIMIT`], then ends that session alone — other sessions of the node
//! stall meanwhile but survive.
//!
//! Framing: upstream writes every message as a WebSocket *text* frame whatever the bytes, and its
//! cloud drops a tunnel that sends anything else. [`Framing::GoText`] does the same (raw frames
//! with the text opcode); two kubeedge-rs ends agree on [`Framing::Binary`] during the upgrade
//! ([`HEADER_FRAMING`]). A Go peer's text frames are not UTF-8 (SPDY, logs cut mid-character),
//! which tungstenite refuses: [`crate::textframes::TextAsBinary`] under the WebSocket reads them
//! as binary.

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
pub const WRITE_LIMIT: Duration = Duration::from_secs(30);
pub const SLOW_READER_LIMIT: Duration = Duration::from_secs(30);
/// Data is sent in pieces of at most this, so one busy session cannot hold the link for long.
pub const CHUNK_BYTES: usize = 32 * 1024;
/// Messages (of at most [`CHUNK_BYTES`] from us) a session buffers from its peer.
pub const SESSION_BUFFER: usize = 64;
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

/// The sessions, and whether the tunnel has ended — under one lock, so no session is added to
/// a tunnel that has just ended (it would never see its end).
#[derive(Default)]
struct Sessions {
    ended: bool,
    open: HashMap<u64, SessionSlot>,
}

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

    /// Opens a session (cloud side): `request` gets the session's connect id (upstream's edges
    /// answer on the `messID` inside the request) and its bytes are sent as `kind`.
    pub async fn open_with(
        &self,
        kind: MessageType,
        request: impl FnOnce(u64) -> Bytes,
    ) -> Result<Session, TunnelClosed> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let session = self.register(id)?;
        self.send(TunnelMessage::new(id, kind, request(id))).await?;
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
        self.sessions().ended
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.sessions().open.len()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: u64) -> Result<Session, TunnelClosed> {
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let refusal = Arc::new(OnceLock::new());
        {
            let mut sessions = self.sessions();
            if sessions.ended {
                return Err(TunnelClosed);
            }
            let slot = SessionSlot {
                data: tx,
                refusal: Arc::clone(&refusal),
            };
            sessions.open.insert(id, slot);
        }
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

    /// Queues the end of session `id` for the peer, behind what was queued before it.
    fn send_end(&self, id: u64, reason: Bytes) {
        self.queue_end(id, reason, true);
    }

    /// Refuses what the peer asked for; dropped when the queue is full (see below).
    fn refuse_provoked(&self, id: u64) {
        self.queue_end(id, Bytes::new(), false);
    }

    fn queue_end(&self, id: u64, reason: Bytes, wait_for_room: bool) {
        let end = TunnelMessage::new(id, MessageType::RemoveConnect, reason);
        match self.inner.outbound.try_send(end) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(end)) if wait_for_room => {
                // Waiting keeps it in order; a tunnel that never drains ends by WRITE_LIMIT.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let outbound = self.inner.outbound.clone();
                    runtime.spawn(async move { outbound.send(end).await });
                }
            }
            // A refusal the peer provoked while not reading what we send is dropped rather than
            // queued, so a peer cannot make us hold refusals without bound.
            Err(_) => {}
        }
    }

    fn end(&self, reason: String) {
        let sessions = {
            let mut sessions = self.sessions();
            if sessions.ended {
                return;
            }
            sessions.ended = true;
            std::mem::take(&mut sessions.open)
        };
        // Dropping the senders ends every session's receiver.
        drop(sessions);
        self.inner.ended.send_replace(Some(reason));
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
        if tunnel.sessions().open.remove(&self.id).is_some() {
            tunnel.send_end(self.id, reason);
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
            if self.is_closed() {
                return Err(TunnelClosed);
            }
            let message = TunnelMessage::new(self.id, MessageType::Data, chunk.to_vec());
            self.tunnel.send(message).await?;
        }
        Ok(())
    }

    /// Whether the peer (or the tunnel) has ended this session.
    pub fn is_closed(&self) -> bool {
        !self.tunnel.sessions().open.contains_key(&self.id)
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
    // Reading and writing are separate tasks: a reader waiting on a slow session must not stop
    // writes, and a write stuck on a dead link must not stop the reader noticing the silence.
    let mut writer = tokio::spawn(write_loop(sink, tunnel.clone(), framing, outbound));
    let reason = tokio::select! {
        reason = read_loop(stream, &tunnel, &incoming) => reason,
        written = &mut writer => match written {
            Ok(reason) => reason,
            Err(err) => format!("tunnel writer failed: {err}"),
        },
    };
    tracing::debug!(reason, "stream tunnel ended");
    tunnel.end(reason);
    // The writer closes the socket when it sees the end; a dead peer cannot hold it forever.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn read_loop<S>(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    tunnel: &Tunnel,
    incoming: &mpsc::Sender<Incoming>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ended = tunnel.inner.ended.subscribe();
    let mut last_heard = Instant::now();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = tokio::time::sleep_until(last_heard + IDLE_LIMIT) => {
                return format!("nothing heard from the peer for {}s", IDLE_LIMIT.as_secs());
            }
            _ = ended.wait_for(Option::is_some) => return "shut down".to_owned(),
        };
        let bytes = match frame {
            None | Some(Ok(WsMessage::Close(_))) => return "the peer closed the tunnel".to_owned(),
            Some(Err(err)) => return format!("tunnel read: {err}"),
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Text(text))) => Bytes::from(text),
            // Pings are answered by tungstenite.
            Some(Ok(_)) => {
                last_heard = Instant::now();
                continue;
            }
        };
        let delivered = tokio::select! {
            delivered = deliver(tunnel, incoming, bytes) => delivered,
            _ = ended.wait_for(Option::is_some) => return "shut down".to_owned(),
        };
        if let Err(reason) = delivered {
            return reason;
        }
        // Time spent waiting on a slow session is not the peer's silence.
        last_heard = Instant::now();
    }
}

/// Writes until the tunnel ends; the reason it stopped.
async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, WsMessage>,
    tunnel: Tunnel,
    framing: Framing,
    mut outbound: mpsc::Receiver<TunnelMessage>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut ended = tunnel.inner.ended.subscribe();
    let reason = loop {
        let frame = tokio::select! {
            message = outbound.recv() => match message {
                Some(message) => framing.frame(&message),
                None => break "tunnel dropped".to_owned(),
            },
            _ = ping.tick() => WsMessage::Ping(Bytes::new()),
            _ = ended.wait_for(Option::is_some) => break "shut down".to_owned(),
        };
        match tokio::time::timeout(WRITE_LIMIT, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => break format!("tunnel write: {err}"),
            Err(_) => {
                break format!("a tunnel write took over {}s", WRITE_LIMIT.as_secs());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    reason
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
            let known = tunnel.sessions().open.contains_key(&id);
            if tunnel.inner.side == Side::Cloud || known {
                tracing::debug!(id, ?kind, "unexpected session request refused");
                tunnel.refuse_provoked(id);
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
            let target = tunnel
                .sessions()
                .open
                .get(&id)
                .map(|slot| slot.data.clone());
            if let Some(target) = target
                && let Err(mpsc::error::SendTimeoutError::Timeout(_)) =
                    target.send_timeout(message.data, SLOW_READER_LIMIT).await
            {
                tracing::debug!(id, "session ended: its reader stopped reading");
                if tunnel.sessions().open.remove(&id).is_some() {
                    tunnel.send_end(id, Bytes::from_static(b"the reader stopped reading"));
                }
            }
            Ok(())
        }
        MessageType::CloseConnect if id == 0 => Err(format!(
            "the cloud closed the tunnel: {}",
            String::from_utf8_lossy(&message.data)
        )),
        MessageType::Other(code) => {
            tracing::debug!(id, code, "tunnel message of an unknown type refused");
            if !tunnel.sessions().open.contains_key(&id) {
                tunnel.refuse_provoked(id);
            }
            Ok(())
        }
        _ => {
            let slot = tunnel.sessions().open.remove(&id);
            if let Some(slot) = slot
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
    use crate::textframes::TextAsBinary;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A cloud end writing binary frames and an edge end writing Go's text frames, each reading
    /// through the text-frame shim as a real tunnel does.
    async fn pair() -> (Tunnel, Tunnel, mpsc::Receiver<Incoming>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (a, b) = (
            TextAsBinary::after_upgrade(a),
            TextAsBinary::after_upgrade(b),
        );
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
            .open_with(MessageType::LogsConnect, |_| Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let mut second = cloud
            .open_with(MessageType::ExecConnect, |_| {
                Bytes::from_static(b"{\"x\":1}")
            })
            .await
            .unwrap();
        let a = incoming.recv().await.unwrap();
        let mut b = incoming.recv().await.unwrap();
        assert_eq!(a.kind, MessageType::LogsConnect);
        assert_eq!(&b.request[..], b"{\"x\":1}");
        // Not UTF-8, in Go's text frames: the shim lets it through untouched.
        let big: Vec<u8> = (0..CHUNK_BYTES * 2 + 5)
            .map(|i| (i % 251) as u8 | 0x80)
            .collect();
        b.session.send(&big).await.unwrap();
        a.session.send(b"for first").await.unwrap();
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
            .open_with(MessageType::LogsConnect, |_| Bytes::new())
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
            .open_with(MessageType::LogsConnect, |_| Bytes::new())
            .await
            .unwrap();
        let mut remote = incoming.recv().await.unwrap().session;
        edge.shutdown("test");
        assert_eq!(remote.recv().await, None);
        assert_eq!(session.recv().await, None);
        assert_eq!(cloud.ended().await, "the peer closed the tunnel");
        assert!(
            cloud
                .open_with(MessageType::LogsConnect, |_| Bytes::new())
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
        raw.send(WsMessage::Binary(Bytes::from_static(&[1, 0x80])))
            .await
            .unwrap();
        assert!(cloud.ended().await.contains("bad tunnel message"));
    }

    #[tokio::test]
    async fn the_request_carries_the_connect_id_and_unknown_types_are_refused_alone() {
        let (cloud, edge, mut incoming) = pair().await;
        let session = cloud
            .open_with(MessageType::LogsConnect, |id| Bytes::from(id.to_string()))
            .await
            .unwrap();
        let got = incoming.recv().await.unwrap();
        assert_eq!(got.request, session.id().to_string());
        // A newer cloud's session type: refused, the tunnel lives on.
        let mut odd = cloud
            .open_with(MessageType::Other(7), |_| Bytes::new())
            .await
            .unwrap();
        assert_eq!(odd.recv().await, None);
        assert!(!edge.is_ended() && !cloud.is_ended());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_loses_its_session_not_the_tunnel() {
        let (cloud, _edge, mut incoming) = pair().await;
        let mut stuck = cloud
            .open_with(MessageType::LogsConnect, |_| Bytes::new())
            .await
            .unwrap();
        let mut healthy = cloud
            .open_with(MessageType::LogsConnect, |_| Bytes::new())
            .await
            .unwrap();
        let flood = incoming.recv().await.unwrap().session;
        let other = incoming.recv().await.unwrap().session;
        // More than the session buffers; nobody reads `stuck`.
        let sender = flood.sender();
        let flooding = tokio::spawn(async move {
            for _ in 0..SESSION_BUFFER * 2 {
                if sender.send(b"data").await.is_err() {
                    return;
                }
            }
        });
        tokio::time::sleep(SLOW_READER_LIMIT + IDLE_LIMIT).await;
        other.send(b"still here").await.unwrap();
        assert_eq!(&healthy.recv().await.unwrap()[..], b"still here");
        let _ = flooding.await;
        let mut received = 0;
        while stuck.recv().await.is_some() {
            received += 1;
        }
        assert_eq!(received, SESSION_BUFFER, "what was buffered, then the end");
        assert!(!cloud.is_ended());
    }
}
