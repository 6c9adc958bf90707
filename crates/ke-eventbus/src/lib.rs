//! EventBus (upstream module `eventbus`, group `bus`): the node's MQTT side.
//!
//! * **Brokers** (`eventBus.mqttMode`): `0` the broker embedded in edgecore
//!   ([`ke_mqtt::broker`]) on `mqttServerInternal`; `2` a client of an external broker
//!   (mosquitto) on `mqttServerExternal`; `1` both — subscribed on both, publishing to both.
//!   Our default is `0` on `127.0.0.1:1883` (upstream: `2`), so a node needs no broker
//!   installed and stock mappers, which dial `:1883`, find one.
//! * **Into the bus** ([`routes::ingress`]): messages on KubeEdge's topics
//!   ([`routes::DEFAULT_TOPICS`] plus those subscribed at run time, kept in `sub_topics`);
//!   `$hw/events/device/…` and `$hw/events/node/…` go to devicetwin, anything else is
//!   uploaded to the cloud.
//! * **Out of the bus** ([`routes::egress`]): `publish`, `subscribe`, `unsubscribe`,
//!   `message` and `get_result` requests from other modules and the cloud.
//!
//! Everything published here is QoS 1. A message received from MQTT waits for room in the bus
//! (back-pressure reaches the broker's session queue, which drops for a slow consumer as it
//! would for any MQTT subscriber); publishing never waits — an external broker that is away
//! loses what its queue cannot hold — so the bus never waits on a broker, and devicetwin,
//! which never waits on eventbus, can always drain what eventbus hands it.

pub mod routes;
mod topics;

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use ke_bus::{BoxFuture, Bus, Module, ModuleContext};
use ke_message::Message;
use ke_mqtt::QoS;
use ke_mqtt::broker::{self, Broker, BrokerConfig};
use ke_mqtt::client::{self, Client, ClientConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::routes::Egress;
pub use crate::topics::SubTopics;

pub const MODULE_NAME: &str = "eventbus";
pub const GROUP_NAME: &str = "bus";

/// The in-process subscriber's name on the embedded broker.
const EVENTBUS_CLIENT: &str = "edgecore-eventbus";
/// How many received messages wait for the bus before the broker drops for us.
const INGRESS_QUEUE: usize = 8192;

/// Which brokers the node uses (`eventBus.mqttMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Internal,
    Both,
    External,
}

#[derive(Debug, Clone)]
pub struct EventBusSettings {
    pub mode: Mode,
    /// `host:port` the embedded broker listens on.
    pub internal: String,
    /// `host:port` of the external broker.
    pub external: String,
    pub retain: bool,
    pub session_queue: usize,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls: Option<TlsFiles>,
    pub node_name: String,
}

/// `eventBusTLS`: the embedded broker serves `mqtts` with this certificate (client
/// certificates optional, but verified against the CA when presented); the external client
/// trusts only the CA and presents the certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("eventBus.mqttMode {0} is not 0 (internal), 1 (both) or 2 (external)")]
    Mode(i64),
    #[error("eventBus.{field} {value:?} is not a tcp://host:port address")]
    Address { field: &'static str, value: String },
    #[error(
        "eventBus.mqttServerInternal and mqttServerExternal are both {0}: in mode 1 (both) they must differ"
    )]
    SameAddress(String),
}

impl EventBusSettings {
    pub fn from_config(config: &ke_config::EdgeCoreConfig) -> Result<Self, SettingsError> {
        let bus = &config.modules.event_bus;
        let mode = match bus.mqtt_mode {
            ke_config::MQTT_MODE_INTERNAL => Mode::Internal,
            ke_config::MQTT_MODE_BOTH => Mode::Both,
            ke_config::MQTT_MODE_EXTERNAL => Mode::External,
            other => return Err(SettingsError::Mode(other)),
        };
        let internal = host_port("mqttServerInternal", &bus.mqtt_server_internal)?;
        let external = host_port("mqttServerExternal", &bus.mqtt_server_external)?;
        if mode == Mode::Both && internal == external {
            return Err(SettingsError::SameAddress(internal));
        }
        let node_name = config.modules.edged.hostname_override.clone();
        let client_id = if bus.mqtt_sub_client_id.is_empty() {
            format!("hub-client-sub-{node_name}")
        } else {
            bus.mqtt_sub_client_id.clone()
        };
        Ok(EventBusSettings {
            mode,
            internal,
            external,
            retain: bus.mqtt_retain,
            session_queue: usize::try_from(bus.mqtt_session_queue_size)
                .unwrap_or(100)
                .max(1),
            client_id,
            credentials: (!bus.mqtt_username.is_empty())
                .then(|| (bus.mqtt_username.clone(), bus.mqtt_password.clone())),
            tls: bus.tls.enable.then(|| TlsFiles {
                ca: bus.tls.tls_mqtt_ca_file.clone().into(),
                cert: bus.tls.tls_mqtt_cert_file.clone().into(),
                key: bus.tls.tls_mqtt_private_key_file.clone().into(),
            }),
            node_name,
        })
    }
}

/// `tcp://host:port` (also `ssl://`, `tls://`, `mqtt://`, `mqtts://` or bare) → `host:port`.
fn host_port(field: &'static str, url: &str) -> Result<String, SettingsError> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let valid = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(rest.to_owned())
    } else {
        Err(SettingsError::Address {
            field,
            value: url.to_owned(),
        })
    }
}

pub struct EventBus {
    settings: EventBusSettings,
    /// Bound before the module runs, so a port in use is a startup error.
    listener: Option<TcpListener>,
    topics: SubTopics,
}

impl EventBus {
    /// Binds the embedded broker's port (modes internal and both).
    pub async fn bind(settings: EventBusSettings, topics: SubTopics) -> anyhow::Result<EventBus> {
        let listener = match settings.mode {
            Mode::External => None,
            Mode::Internal | Mode::Both => Some(
                TcpListener::bind(&settings.internal)
                    .await
                    .with_context(|| {
                        format!(
                            "listen for MQTT on {} (eventBus.mqttServerInternal; is another broker \
                             such as mosquitto using it? then set eventBus.mqttMode to 2)",
                            settings.internal
                        )
                    })?,
            ),
        };
        Ok(EventBus {
            settings,
            listener,
            topics,
        })
    }

    /// Where the embedded broker listens, if it runs.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }
}

impl Module for EventBus {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let cancel = CancellationToken::new();
            let _stop = cancel.clone().drop_guard();
            let mut links =
                Links::start(&self.settings, self.listener.take(), &self.topics, &cancel).await?;
            loop {
                tokio::select! {
                    message = ctx.recv() => {
                        let Some(message) = message else { return Ok(()) };
                        links.handle(&message, &self.settings, &self.topics).await;
                    }
                    received = links.next_received() => {
                        let (to, message) = routes::ingress(&received.topic, &received.payload);
                        send_in(ctx.bus(), to, message).await;
                    }
                }
            }
        })
    }
}

async fn send_in(bus: &Bus, to: &str, message: Message) {
    if let Err(err) = bus.send_to_group(to, message).await {
        tracing::warn!(group = to, %err, "MQTT message not delivered into the bus");
    }
}

/// The brokers this node talks to.
struct Links {
    internal: Option<Broker>,
    internal_in: Option<mpsc::Receiver<broker::Message>>,
    external: Option<Client>,
    external_in: Option<mpsc::Receiver<broker::Message>>,
    retain: bool,
}

impl Links {
    async fn start(
        settings: &EventBusSettings,
        listener: Option<TcpListener>,
        topics: &SubTopics,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Links> {
        let mut filters: Vec<String> = routes::DEFAULT_TOPICS.map(str::to_owned).to_vec();
        for topic in topics.load().context("read sub_topics")? {
            if !filters.contains(&topic) {
                filters.push(topic);
            }
        }
        let mut links = Links {
            internal: None,
            internal_in: None,
            external: None,
            external_in: None,
            retain: settings.retain,
        };
        if settings.mode != Mode::External {
            let listener = listener.context("the embedded broker's port was not bound")?;
            let broker = Broker::new(BrokerConfig {
                session_queue: settings.session_queue,
                credentials: settings.credentials.clone(),
                ..BrokerConfig::default()
            });
            let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
            links.internal_in = Some(broker.subscribe(EVENTBUS_CLIENT, &refs, INGRESS_QUEUE));
            let address = listener.local_addr()?;
            match &settings.tls {
                None => {
                    tokio::spawn({
                        let (broker, cancel) = (broker.clone(), cancel.clone());
                        async move { broker.serve(listener, cancel).await }
                    });
                }
                Some(files) => {
                    let tls = Arc::new(server_tls(files)?);
                    tokio::spawn({
                        let (broker, cancel) = (broker.clone(), cancel.clone());
                        async move { broker.serve_tls(listener, tls, cancel).await }
                    });
                }
            }
            tracing::info!(%address, tls = settings.tls.is_some(), "embedded MQTT broker listening");
            links.internal = Some(broker);
        }
        if settings.mode != Mode::Internal {
            let tls = match &settings.tls {
                None => None,
                Some(files) => {
                    let host = settings
                        .external
                        .rsplit_once(':')
                        .map_or(settings.external.as_str(), |(host, _)| host)
                        .trim_matches(['[', ']'])
                        .to_owned();
                    Some((Arc::new(client_tls(files)?), host))
                }
            };
            let (client, incoming) = client::connect(
                ClientConfig {
                    address: settings.external.clone(),
                    client_id: settings.client_id.clone(),
                    keep_alive: std::time::Duration::from_secs(30),
                    credentials: settings.credentials.clone(),
                    subscriptions: filters
                        .iter()
                        .map(|f| (f.clone(), QoS::AtLeastOnce))
                        .collect(),
                    queue: INGRESS_QUEUE,
                    max_packet: BrokerConfig::default().max_packet,
                    tls,
                },
                cancel.clone(),
            );
            links.external = Some(client);
            links.external_in = Some(incoming);
        }
        Ok(links)
    }

    /// The next message from either broker.
    async fn next_received(&mut self) -> broker::Message {
        loop {
            tokio::select! {
                received = recv(&mut self.internal_in) => match received {
                    Some(message) => return message,
                    None => {
                        tracing::error!("the embedded broker dropped edgecore's subscription");
                        self.internal_in = None;
                    }
                },
                received = recv(&mut self.external_in) => match received {
                    Some(message) => return message,
                    None => self.external_in = None,
                },
            }
        }
    }

    async fn handle(&mut self, message: &Message, settings: &EventBusSettings, topics: &SubTopics) {
        // edgehub tells every group of the cloud link's state; brokers do not care.
        if message.router.resource == ke_message::constants::resource_type::NODE_CONNECTION {
            return;
        }
        let request = match routes::egress(message, &settings.node_name) {
            Ok(request) => request,
            Err(err) => {
                tracing::warn!(
                    source = %message.router.source,
                    resource = %message.router.resource,
                    %err,
                    "eventbus request refused"
                );
                return;
            }
        };
        match request {
            Egress::Publish { topic, payload } => self.publish(topic, payload.into()),
            Egress::Subscribe(filter) => {
                if let Err(err) = topics.insert(&filter) {
                    tracing::warn!(%filter, %err, "subscription not kept in sub_topics");
                }
                if let Some(broker) = &self.internal {
                    broker.add_subscription(EVENTBUS_CLIENT, &filter);
                }
                if let Some(client) = &self.external {
                    let _ = client.subscribe(&filter, QoS::AtLeastOnce).await;
                }
                tracing::info!(%filter, "subscribed");
            }
            Egress::Unsubscribe(filter) => {
                if let Err(err) = topics.remove(&filter) {
                    tracing::warn!(%filter, %err, "subscription not removed from sub_topics");
                }
                if let Some(broker) = &self.internal {
                    broker.remove_subscription(EVENTBUS_CLIENT, &filter);
                }
                if let Some(client) = &self.external {
                    let _ = client.unsubscribe(&filter).await;
                }
            }
        }
    }

    fn publish(&self, topic: String, payload: Bytes) {
        if let Some(client) = &self.external {
            let message = broker::Message {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
            };
            // Never wait for an external broker that is away: the embedded one and the bus
            // (devicetwin, the cloud's messages) go on.
            if let Err(err) = client.try_publish(message) {
                tracing::warn!(%topic, %err, "not published to the external MQTT broker");
            }
        }
        if let Some(broker) = &self.internal {
            broker.publish(broker::Message {
                topic,
                payload,
                qos: QoS::AtLeastOnce,
                retain: self.retain,
            });
        }
    }
}

async fn recv(receiver: &mut Option<mpsc::Receiver<broker::Message>>) -> Option<broker::Message> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The CA (DER), certificate (DER) and key `eventBusTLS` names.
fn tls_files(files: &TlsFiles) -> anyhow::Result<(Vec<u8>, Vec<u8>, ke_pki::EdgeKeyPair)> {
    let ca = ke_pki::persist::read_cert_file(&files.ca)
        .with_context(|| format!("eventBusTLS CA {}", files.ca.display()))?;
    let (cert, key) = ke_pki::persist::read_edge_cert_and_key(&files.cert, &files.key)
        .with_context(|| format!("eventBusTLS certificate {}", files.cert.display()))?;
    Ok((ca, cert, key))
}

fn server_tls(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let (ca, cert, key) = tls_files(files)?;
    Ok(ke_pki::tls::server_config_optional_client_cert(
        &ca,
        &cert,
        key.key(),
    )?)
}

fn client_tls(files: &TlsFiles) -> anyhow::Result<rustls::ClientConfig> {
    let (ca, cert, key) = tls_files(files)?;
    Ok(ke_pki::tls::client_config_mtls(&ca, &cert, key.key())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            host_port("f", "tcp://127.0.0.1:1883").unwrap(),
            "127.0.0.1:1883"
        );
        assert_eq!(host_port("f", "ssl://broker:8883/").unwrap(), "broker:8883");
        assert_eq!(host_port("f", "localhost:1884").unwrap(), "localhost:1884");
        for bad in ["tcp://127.0.0.1", "tcp://:1883", "tcp://h:99999", ""] {
            assert!(host_port("f", bad).is_err(), "{bad}");
        }
    }
}
