//! An MQTT 3.1.1 broker for the edge: what mappers and applications on the node connect to
//! when edgecore embeds its own (`mqttMode` internal), so the node needs no extra process.
//!
//! Scope: QoS 0 and 1 both ways (a QoS 2 PUBLISH is accepted with its PUBREC/PUBREL/PUBCOMP
//! handshake and delivered at QoS 1 at most, as subscriptions are granted), retained messages,
//! persistent sessions (`cleanSession: false`) whose QoS 1 messages wait while the client is
//! away, wills, keepalive, username/password. Every session's queue is bounded
//! (`mqttSessionQueueSize`): a client that does not read loses QoS 0 messages first, never the
//! broker's memory. In-process subscribers ([`Broker::subscribe`]) are sessions too, which is
//! how eventbus takes `$hw/events/...` traffic without a socket.
//!
//! TLS is the caller's: [`Broker::serve_tls`] takes the rustls server config (edgecore builds
//! it from `tlsMqtt*` files). Not yet: a subscription trie (matching scans every session's
//! filters, fine for a node's hundreds of clients).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::{self, ConnAck, Connect, ConnectCode, Packet, Publish, QoS, SubAck};
use crate::topic;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The largest packet a client may send.
    pub max_packet: usize,
    /// Messages queued per session (`eventBus.mqttSessionQueueSize`).
    pub session_queue: usize,
    /// Username and password every client must present, if any.
    pub credentials: Option<(String, String)>,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet: 1 << 20,
            session_queue: 100,
            credentials: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A message as the broker routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

struct Shared {
    config: BrokerConfig,
    state: Mutex<State>,
    next_connection: AtomicU64,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    retained: BTreeMap<String, Message>,
}

struct Session {
    subscriptions: Vec<(String, QoS)>,
    /// The live connection's queue, and which connection it is.
    link: Option<(u64, mpsc::Sender<Message>)>,
    /// QoS 1 messages for a persistent session while its client is away.
    parked: VecDeque<Message>,
    persistent: bool,
    /// An in-process subscriber's session: no network client may take it over.
    in_process: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Broker {
        Broker {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                next_connection: AtomicU64::new(1),
            }),
        }
    }

    /// Accepts MQTT clients on `listener` until `cancel`.
    pub async fn serve(&self, listener: TcpListener, cancel: CancellationToken) {
        self.accept(listener, None, cancel).await;
    }

    /// Accepts MQTT clients over TLS (`mqtts`) on `listener` until `cancel`.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        cancel: CancellationToken,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        self.accept(listener, Some(acceptor), cancel).await;
    }

    async fn accept(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        cancel: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = cancel.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (broker, cancel, tls) = (self.clone(), cancel.clone(), tls.clone());
                    tokio::spawn(async move {
                        let timeout = broker.shared.config.connect_timeout;
                        let served = match tls {
                            None => broker.connection(stream, cancel).await,
                            Some(tls) => {
                                match tokio::time::timeout(timeout, tls.accept(stream)).await {
                                    Ok(Ok(stream)) => broker.connection(stream, cancel).await,
                                    Ok(Err(err)) => Err(format!("TLS handshake: {err}")),
                                    Err(_) => Err("no TLS handshake in time".into()),
                                }
                            }
                        };
                        if let Err(reason) = served {
                            tracing::debug!(%peer, reason, "MQTT connection closed");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting an MQTT connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Publishes from inside edgecore, as a client would.
    pub fn publish(&self, message: Message) {
        self.route(message);
    }

    /// An in-process subscriber: the messages matching `filters`, at most QoS 1, queued up to
    /// `capacity` (beyond that they are dropped, as for a slow client).
    pub fn subscribe(
        &self,
        client_id: &str,
        filters: &[&str],
        capacity: usize,
    ) -> mpsc::Receiver<Message> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.shared.state);
        state.sessions.insert(
            client_id.to_owned(),
            Session {
                subscriptions: filters
                    .iter()
                    .map(|f| ((*f).to_owned(), QoS::AtLeastOnce))
                    .collect(),
                link: Some((id, sender)),
                parked: VecDeque::new(),
                persistent: false,
                in_process: true,
            },
        );
        receiver
    }

    /// Adds `filter` to the subscriptions of the in-process subscriber `client_id`; returns
    /// whether it existed.
    pub fn add_subscription(&self, client_id: &str, filter: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let Some(session) = state.sessions.get_mut(client_id) else {
            return false;
        };
        if !session.subscriptions.iter().any(|(f, _)| f == filter) {
            session
                .subscriptions
                .push((filter.to_owned(), QoS::AtLeastOnce));
        }
        true
    }

    /// Removes `filter` from the subscriptions of `client_id`.
    pub fn remove_subscription(&self, client_id: &str, filter: &str) {
        let mut state = lock(&self.shared.state);
        if let Some(session) = state.sessions.get_mut(client_id) {
            session.subscriptions.retain(|(f, _)| f != filter);
        }
    }

    /// Hands `message` to every session subscribed to its topic, and keeps it if retained.
    fn route(&self, message: Message) {
        let mut state = lock(&self.shared.state);
        if message.retain {
            if message.payload.is_empty() {
                state.retained.remove(&message.topic);
            } else {
                state
                    .retained
                    .insert(message.topic.clone(), message.clone());
            }
        }
        let limit = self.shared.config.session_queue;
        for (client, session) in state.sessions.iter_mut() {
            let Some(granted) = session
                .subscriptions
                .iter()
                .filter(|(filter, _)| topic::matches(filter, &message.topic))
                .map(|(_, qos)| *qos)
                .max()
            else {
                continue;
            };
            let copy = Message {
                qos: message.qos.min(granted),
                // Retain is only set on messages sent because of a new subscription.
                retain: false,
                ..message.clone()
            };
            match &session.link {
                Some((_, sender)) => {
                    let full = sender.try_send(copy).is_err();
                    if full {
                        tracing::warn!(%client, topic = %message.topic, "MQTT session queue full; message dropped");
                    }
                }
                None if session.persistent && copy.qos > QoS::AtMostOnce => {
                    if session.parked.len() >= limit {
                        session.parked.pop_front();
                    }
                    session.parked.push_back(copy);
                }
                None => {}
            }
        }
    }

    async fn connection<S>(&self, mut stream: S, cancel: CancellationToken) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = &self.shared.config;
        let mut buffer = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(
            config.connect_timeout,
            read_connect(&mut stream, &mut buffer, config.max_packet),
        )
        .await
        .map_err(|_| "no CONNECT in time".to_owned())??;
        let Some(Packet::Connect(connect)) = first else {
            return Err("the first packet is not CONNECT".into());
        };
        let (code, session_present) = self.admit(&connect);
        let ack = Packet::ConnAck(ConnAck {
            session_present,
            code,
        });
        write_packet(&mut stream, &ack).await?;
        if code != ConnectCode::Accepted {
            return Err(format!("refused: {code:?}"));
        }
        let client_id = if connect.client_id.is_empty() {
            format!(
                "anonymous-{}",
                self.shared.next_connection.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            connect.client_id.clone()
        };
        let (connection, mut outgoing) = self.attach(&client_id, &connect);
        let mut unacked = BTreeMap::new();
        let result = self
            .session_loop(
                &mut stream,
                &mut buffer,
                (&client_id, &connect),
                (&mut outgoing, &mut unacked),
                &cancel,
            )
            .await;
        let clean_end = matches!(result, Ok(true));
        self.detach(&client_id, connection, unacked, outgoing);
        if !clean_end && let Some(will) = &connect.will {
            self.route(Message {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos.min(QoS::AtLeastOnce),
                retain: will.retain,
            });
        }
        result.map(|_| ())
    }

    /// The CONNACK code for `connect`, and whether a session is resumed.
    fn admit(&self, connect: &Connect) -> (ConnectCode, bool) {
        if connect.client_id.is_empty() && !connect.clean_session {
            return (ConnectCode::IdentifierRejected, false);
        }
        if let Some((user, password)) = &self.shared.config.credentials {
            let given = (connect.username.as_deref(), connect.password.as_deref());
            if given != (Some(user.as_str()), Some(password.as_bytes())) {
                return (ConnectCode::BadUsernameOrPassword, false);
            }
        }
        let state = lock(&self.shared.state);
        if state
            .sessions
            .get(&connect.client_id)
            .is_some_and(|s| s.in_process)
        {
            return (ConnectCode::IdentifierRejected, false);
        }
        let resumed = !connect.clean_session
            && state
                .sessions
                .get(&connect.client_id)
                .is_some_and(|s| s.persistent);
        (ConnectCode::Accepted, resumed)
    }

    /// Makes `client_id`'s session this connection's (taking it over from an older
    /// connection of the same client, as the specification says).
    fn attach(&self, client_id: &str, connect: &Connect) -> (u64, mpsc::Receiver<Message>) {
        let config = &self.shared.config;
        let (sender, receiver) = mpsc::channel(config.session_queue.max(1));
        let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.shared.state);
        let session = state
            .sessions
            .entry(client_id.to_owned())
            .or_insert_with(|| Session {
                subscriptions: Vec::new(),
                link: None,
                parked: VecDeque::new(),
                persistent: false,
                in_process: false,
            });
        if connect.clean_session {
            session.subscriptions.clear();
            session.parked.clear();
        }
        session.persistent = !connect.clean_session;
        for message in session.parked.drain(..) {
            let _ = sender.try_send(message);
        }
        // Dropping the old sender ends the older connection's loop.
        session.link = Some((id, sender));
        (id, receiver)
    }

    /// Ends this connection's hold on the session; a persistent session keeps what was not
    /// acknowledged and what was still queued, for the client's return.
    fn detach(
        &self,
        client_id: &str,
        connection: u64,
        unacked: BTreeMap<u16, Message>,
        mut outgoing: mpsc::Receiver<Message>,
    ) {
        let mut state = lock(&self.shared.state);
        let Some(session) = state.sessions.get_mut(client_id) else {
            return;
        };
        if session
            .link
            .as_ref()
            .is_none_or(|(id, _)| *id != connection)
        {
            // Taken over by a newer connection.
            return;
        }
        session.link = None;
        if session.persistent {
            session.parked.extend(unacked.into_values());
            while let Ok(message) = outgoing.try_recv() {
                if message.qos > QoS::AtMostOnce {
                    session.parked.push_back(message);
                }
            }
        } else {
            state.sessions.remove(client_id);
        }
    }

    /// Serves one connected client; `Ok(true)` when it said DISCONNECT.
    async fn session_loop<S>(
        &self,
        stream: &mut S,
        buffer: &mut BytesMut,
        (client_id, connect): (&str, &Connect),
        (outgoing, unacked): (&mut mpsc::Receiver<Message>, &mut BTreeMap<u16, Message>),
        cancel: &CancellationToken,
    ) -> Result<bool, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let max_packet = self.shared.config.max_packet;
        // The client must send something within one and a half keepalive periods.
        let idle = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut next_id: u16 = 0;
        let mut read = [0u8; 4096];
        loop {
            while let Some(packet) = codec::decode(buffer, max_packet).map_err(|e| e.to_string())? {
                match packet {
                    Packet::Publish(publish) => self.received(stream, publish).await?,
                    Packet::PubAck(id) => {
                        unacked.remove(&id);
                    }
                    Packet::PubRel(id) => write_packet(stream, &Packet::PubComp(id)).await?,
                    Packet::PubRec(id) => {
                        unacked.remove(&id);
                        write_packet(stream, &Packet::PubRel(id)).await?;
                    }
                    Packet::PubComp(_) => {}
                    Packet::Subscribe(subscribe) => {
                        let granted: Vec<Option<QoS>> = subscribe
                            .filters
                            .iter()
                            .map(|(_, qos)| Some((*qos).min(QoS::AtLeastOnce)))
                            .collect();
                        let retained = self.subscribed(client_id, &subscribe.filters);
                        let ack = Packet::SubAck(SubAck {
                            packet_id: subscribe.packet_id,
                            granted,
                        });
                        write_packet(stream, &ack).await?;
                        for message in retained {
                            send(stream, message, &mut next_id, unacked).await?;
                        }
                    }
                    Packet::Unsubscribe(unsubscribe) => {
                        self.unsubscribed(client_id, &unsubscribe.filters);
                        write_packet(stream, &Packet::UnsubAck(unsubscribe.packet_id)).await?;
                    }
                    Packet::PingReq => write_packet(stream, &Packet::PingResp).await?,
                    Packet::Disconnect => return Ok(true),
                    other => return Err(format!("unexpected {other:?} from a client")),
                }
            }
            let timeout = async {
                match idle {
                    Some(idle) => tokio::time::sleep(idle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = stream.read(&mut read) => match n {
                    Ok(0) => return Err("connection closed".into()),
                    Ok(n) => buffer.extend_from_slice(&read[..n]),
                    Err(e) => return Err(e.to_string()),
                },
                message = outgoing.recv() => match message {
                    Some(message) => send(stream, message, &mut next_id, unacked).await?,
                    None => return Err("taken over by a newer connection".into()),
                },
                () = timeout => return Err("keepalive expired".into()),
                () = cancel.cancelled() => return Ok(true),
            }
        }
    }

    async fn received<S>(&self, stream: &mut S, publish: Publish) -> Result<(), String>
    where
        S: AsyncWrite + Unpin,
    {
        let ack = match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(id)),
            (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(id)),
            _ => None,
        };
        // A duplicate of a QoS 2 message whose PUBREL is still to come would be delivered
        // twice; mappers publish at QoS 0 or 1, so this broker accepts that.
        self.route(Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos.min(QoS::AtLeastOnce),
            retain: publish.retain,
        });
        if let Some(ack) = ack {
            write_packet(stream, &ack).await?;
        }
        Ok(())
    }

    /// Adds subscriptions; the retained messages they match, to send now.
    fn subscribed(&self, client_id: &str, filters: &[(String, QoS)]) -> Vec<Message> {
        let mut state = lock(&self.shared.state);
        let retained: Vec<Message> = state
            .retained
            .values()
            .filter_map(|message| {
                let granted = filters
                    .iter()
                    .filter(|(f, _)| topic::matches(f, &message.topic))
                    .map(|(_, q)| (*q).min(QoS::AtLeastOnce))
                    .max()?;
                Some(Message {
                    qos: message.qos.min(granted),
                    ..message.clone()
                })
            })
            .collect();
        if let Some(session) = state.sessions.get_mut(client_id) {
            for (filter, qos) in filters {
                let qos = (*qos).min(QoS::AtLeastOnce);
                session.subscriptions.retain(|(f, _)| f != filter);
                session.subscriptions.push((filter.clone(), qos));
            }
        }
        retained
    }

    fn unsubscribed(&self, client_id: &str, filters: &[String]) {
        let mut state = lock(&self.shared.state);
        if let Some(session) = state.sessions.get_mut(client_id) {
            session.subscriptions.retain(|(f, _)| !filters.contains(f));
        }
    }
}

/// Sends `message` to the client, with a packet identifier for QoS 1 kept until its PUBACK.
async fn send<S>(
    stream: &mut S,
    message: Message,
    next_id: &mut u16,
    unacked: &mut BTreeMap<u16, Message>,
) -> Result<(), String>
where
    S: AsyncWrite + Unpin,
{
    let packet_id = (message.qos > QoS::AtMostOnce).then(|| {
        *next_id = next_id.checked_add(1).unwrap_or(1);
        *next_id
    });
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id,
        payload: message.payload.clone(),
    });
    if let Some(id) = packet_id {
        unacked.insert(id, message);
    }
    write_packet(stream, &publish).await
}

/// The first packet, which must be CONNECT: anything else is refused from its first byte.
async fn read_connect<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<Packet>, String>
where
    S: AsyncRead + Unpin,
{
    let mut read = [0u8; 1024];
    loop {
        if buffer.first().is_some_and(|first| first >> 4 != 1) {
            return Err("the first packet is not CONNECT".into());
        }
        if let Some(packet) = codec::decode(buffer, max_packet).map_err(|e| e.to_string())? {
            return Ok(Some(packet));
        }
        match stream.read(&mut read).await {
            Ok(0) => return Ok(None),
            Ok(n) => buffer.extend_from_slice(&read[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_packet<S>(stream: &mut S, packet: &Packet) -> Result<(), String>
where
    S: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    codec::encode(packet, &mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())
}
