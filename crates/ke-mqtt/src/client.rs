//! An MQTT 3.1.1 client that stays connected: what eventbus uses when the node's broker is an
//! external one (mosquitto, `mqttMode` external or both).
//!
//! [`connect`] starts a task that dials the broker, subscribes, and on any failure dials again
//! (1 s, doubling to 30 s), subscribing again each time. Messages from the broker arrive on
//! the receiver it returns; [`Client::publish`] queues messages for the broker, and
//! [`Client::subscribe`] / [`Client::unsubscribe`] change what is subscribed (now and on every
//! later connection). QoS 1 messages not yet acknowledged when the connection drops are sent
//! again (DUP) on the next one, so a broker restart loses none of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Message;
use crate::codec::{self, Connect, ConnectCode, Packet, Publish, QoS, Subscribe, Unsubscribe};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker.
    pub address: String,
    pub client_id: String,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    /// Filters subscribed on every connection (until unsubscribed).
    pub subscriptions: Vec<(String, QoS)>,
    /// Messages waiting to be published, and received messages not yet taken.
    pub queue: usize,
    pub max_packet: usize,
    /// TLS (`mqtts`), with the server name the broker's certificate must carry.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

#[derive(Clone)]
pub struct Client {
    outgoing: mpsc::Sender<Request>,
}

/// What the client's task is asked to do, in order.
enum Request {
    Publish(Message),
    Subscribe(String, QoS),
    Unsubscribe(String),
}

/// The broker is gone for good: the client's task ended.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT client has stopped")]
pub struct Stopped;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TryPublishError {
    #[error("the queue for the broker is full")]
    Full,
    #[error("the MQTT client has stopped")]
    Stopped,
}

impl Client {
    /// Queues `message` for the broker; waits while the queue is full.
    pub async fn publish(&self, message: Message) -> Result<(), Stopped> {
        self.request(Request::Publish(message)).await
    }

    /// Queues `message` for the broker unless the queue is full (the broker is away or slow):
    /// for callers that must not wait on a broker.
    pub fn try_publish(&self, message: Message) -> Result<(), TryPublishError> {
        self.outgoing
            .try_send(Request::Publish(message))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => TryPublishError::Full,
                mpsc::error::TrySendError::Closed(_) => TryPublishError::Stopped,
            })
    }

    /// Subscribes `filter` now (if connected) and on every later connection.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), Stopped> {
        self.request(Request::Subscribe(filter.to_owned(), qos))
            .await
    }

    /// Stops receiving what only `filter` matched, now and on later connections.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), Stopped> {
        self.request(Request::Unsubscribe(filter.to_owned())).await
    }

    async fn request(&self, request: Request) -> Result<(), Stopped> {
        self.outgoing.send(request).await.map_err(|_| Stopped)
    }
}

/// Starts the client; it runs until `cancel`.
pub fn connect(
    config: ClientConfig,
    cancel: CancellationToken,
) -> (Client, mpsc::Receiver<Message>) {
    let (outgoing, queued) = mpsc::channel(config.queue.max(1));
    let (delivered, incoming) = mpsc::channel(config.queue.max(1));
    tokio::spawn(run(config, queued, delivered, cancel));
    (Client { outgoing }, incoming)
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

async fn run(
    config: ClientConfig,
    mut queued: mpsc::Receiver<Request>,
    delivered: mpsc::Sender<Message>,
    cancel: CancellationToken,
) {
    let mut subscriptions = config.subscriptions.clone();
    let mut unacked: BTreeMap<u16, Message> = BTreeMap::new();
    let mut next_id: u16 = 0;
    let mut retry = FIRST_RETRY;
    loop {
        let connection = Connection {
            config: &config,
            subscriptions: &mut subscriptions,
            queued: &mut queued,
            delivered: &delivered,
            unacked: &mut unacked,
            next_id: &mut next_id,
        };
        let started = std::time::Instant::now();
        match cancel.run_until_cancelled(connection.serve()).await {
            None | Some(Ok(Ended::Stopped)) => return,
            Some(Ok(Ended::Connected)) => retry = FIRST_RETRY,
            Some(Err(reason)) => {
                tracing::warn!(broker = %config.address, reason, "MQTT broker connection failed; retrying");
                // A connection that was up a while is not a failing broker: start over.
                if started.elapsed() > MAX_RETRY {
                    retry = FIRST_RETRY;
                }
            }
        }
        if cancel
            .run_until_cancelled(tokio::time::sleep(retry))
            .await
            .is_none()
        {
            return;
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// How a connection ended without an error of its own.
enum Ended {
    /// It was up, then the broker went away: dial again soon.
    Connected,
    /// Nobody publishes or receives any more.
    Stopped,
}

struct Connection<'a> {
    config: &'a ClientConfig,
    subscriptions: &'a mut Vec<(String, QoS)>,
    queued: &'a mut mpsc::Receiver<Request>,
    delivered: &'a mpsc::Sender<Message>,
    unacked: &'a mut BTreeMap<u16, Message>,
    next_id: &'a mut u16,
}

impl Connection<'_> {
    async fn serve(self) -> Result<Ended, String> {
        let config = self.config;
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&config.address))
            .await
            .map_err(|_| format!("no connection within {DIAL_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &config.tls {
            None => self.session(tcp).await,
            Some((tls, server_name)) => {
                let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                    .map_err(|e| format!("{server_name}: {e}"))?;
                let handshake =
                    tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, tcp);
                let stream = tokio::time::timeout(DIAL_TIMEOUT, handshake)
                    .await
                    .map_err(|_| "no TLS handshake in time".to_owned())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                self.session(stream).await
            }
        }
    }

    async fn session<S>(self, mut stream: S) -> Result<Ended, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config;
        let (username, password) = match &config.credentials {
            Some((user, password)) => (Some(user.clone()), Some(password.clone().into())),
            None => (None, None),
        };
        let keep_alive = u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX);
        write(
            &mut stream,
            &Packet::Connect(Connect {
                protocol_level: 4,
                client_id: config.client_id.clone(),
                clean_session: true,
                keep_alive,
                will: None,
                username,
                password,
            }),
        )
        .await?;
        let mut buffer = BytesMut::with_capacity(4096);
        match read(&mut stream, &mut buffer, config.max_packet).await? {
            Packet::ConnAck(ack) if ack.code == ConnectCode::Accepted => {}
            Packet::ConnAck(ack) => return Err(format!("refused: {:?}", ack.code)),
            other => return Err(format!("expected CONNACK, got {other:?}")),
        }
        if !self.subscriptions.is_empty() {
            let subscribe = Packet::Subscribe(Subscribe {
                packet_id: take_id(self.next_id),
                filters: self.subscriptions.clone(),
            });
            write(&mut stream, &subscribe).await?;
        }
        tracing::info!(broker = %config.address, "connected to the MQTT broker");
        // What the last connection did not get acknowledged goes first.
        for (id, message) in self.unacked.iter() {
            write(&mut stream, &publish_packet(message, Some(*id), true)).await?;
        }
        let ping_every = (keep_alive > 0).then(|| Duration::from_secs(keep_alive.into()));
        let mut awaiting_pong = false;
        let mut read_buf = [0u8; 4096];
        loop {
            while let Some(packet) =
                codec::decode(&mut buffer, config.max_packet).map_err(|e| e.to_string())?
            {
                match packet {
                    Packet::Publish(publish) => {
                        let ack = publish.packet_id.filter(|_| publish.qos > QoS::AtMostOnce);
                        let message = Message {
                            topic: publish.topic,
                            payload: publish.payload,
                            qos: publish.qos,
                            retain: publish.retain,
                        };
                        if self.delivered.send(message).await.is_err() {
                            return Ok(Ended::Stopped);
                        }
                        match (publish.qos, ack) {
                            (QoS::AtLeastOnce, Some(id)) => {
                                write(&mut stream, &Packet::PubAck(id)).await?;
                            }
                            (QoS::ExactlyOnce, Some(id)) => {
                                write(&mut stream, &Packet::PubRec(id)).await?;
                            }
                            _ => {}
                        }
                    }
                    Packet::PubRel(id) => write(&mut stream, &Packet::PubComp(id)).await?,
                    Packet::PubAck(id) => {
                        self.unacked.remove(&id);
                    }
                    Packet::PingResp => awaiting_pong = false,
                    Packet::SubAck(ack) if ack.granted.iter().any(Option::is_none) => {
                        return Err("the broker refused a subscription".into());
                    }
                    _ => {}
                }
            }
            let ping = async {
                match ping_every {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = stream.read(&mut read_buf) => match n {
                    Ok(0) => return Ok(Ended::Connected),
                    Ok(n) => buffer.extend_from_slice(&read_buf[..n]),
                    Err(e) => return Err(e.to_string()),
                },
                request = self.queued.recv() => match request {
                    None => return Ok(Ended::Stopped),
                    Some(Request::Publish(message)) => {
                        let id = (message.qos > QoS::AtMostOnce).then(|| take_id(self.next_id));
                        write(&mut stream, &publish_packet(&message, id, false)).await?;
                        if let Some(id) = id {
                            self.unacked.insert(id, message);
                        }
                    }
                    Some(Request::Subscribe(filter, qos)) => {
                        self.subscriptions.retain(|(f, _)| *f != filter);
                        self.subscriptions.push((filter.clone(), qos));
                        let subscribe = Subscribe {
                            packet_id: take_id(self.next_id),
                            filters: vec![(filter, qos)],
                        };
                        write(&mut stream, &Packet::Subscribe(subscribe)).await?;
                    }
                    Some(Request::Unsubscribe(filter)) => {
                        self.subscriptions.retain(|(f, _)| *f != filter);
                        let unsubscribe = Unsubscribe {
                            packet_id: take_id(self.next_id),
                            filters: vec![filter],
                        };
                        write(&mut stream, &Packet::Unsubscribe(unsubscribe)).await?;
                    }
                },
                () = ping => {
                    if awaiting_pong {
                        return Err("no PINGRESP within the keepalive".into());
                    }
                    awaiting_pong = true;
                    write(&mut stream, &Packet::PingReq).await?;
                }
            }
        }
    }
}

fn take_id(next: &mut u16) -> u16 {
    *next = next.checked_add(1).unwrap_or(1);
    *next
}

fn publish_packet(message: &Message, packet_id: Option<u16>, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup: dup && packet_id.is_some(),
        qos: message.qos.min(QoS::AtLeastOnce),
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id,
        payload: message.payload.clone(),
    })
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, packet: &Packet) -> Result<(), String> {
    let mut out = BytesMut::new();
    codec::encode(packet, &mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    max: usize,
) -> Result<Packet, String> {
    let mut read_buf = [0u8; 1024];
    loop {
        if let Some(packet) = codec::decode(buffer, max).map_err(|e| e.to_string())? {
            return Ok(packet);
        }
        match tokio::time::timeout(DIAL_TIMEOUT, stream.read(&mut read_buf)).await {
            Ok(Ok(0)) => return Err("the broker closed the connection".into()),
            Ok(Ok(n)) => buffer.extend_from_slice(&read_buf[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the broker did not answer".into()),
        }
    }
}
