//! One device's run: connect, write desired values, collect, report, push.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ke_dmi::v1beta1 as pb;
use ke_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use tokio_util::sync::CancellationToken;

use crate::driver::{
    Connection, DeviceConfig, Driver, DriverError, HttpPush, MqttPush, PropertyConfig,
};

type Manager = DeviceManagerServiceClient<tonic::transport::Channel>;

/// A collect cycle of 0 (unset) means once a second.
const DEFAULT_CYCLE: Duration = Duration::from_secs(1);
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// A running device; stopping it ends its task.
pub(crate) struct Handle {
    stop: CancellationToken,
    /// The last value read per property, for `GetDevice`.
    pub values: Arc<Mutex<HashMap<String, String>>>,
    pub config: DeviceConfig,
}

impl Handle {
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn cycle(ms: i64) -> Duration {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_CYCLE, Duration::from_millis)
}

/// The driver's view of a DMI device, with types and access modes from its model.
pub(crate) fn config(
    device: &pb::Device,
    models: &HashMap<String, pb::DeviceModel>,
) -> DeviceConfig {
    let spec = device.spec.clone().unwrap_or_default();
    let model = models.get(&crate::key(&device.namespace, &spec.device_model_reference));
    let model_property = |name: &str| {
        model
            .and_then(|m| m.spec.as_ref())
            .and_then(|s| s.properties.iter().find(|p| p.name == name))
    };
    let properties = spec
        .properties
        .iter()
        .map(|p| {
            let from_model = model_property(&p.name);
            PropertyConfig {
                name: p.name.clone(),
                visitor: ke_dmi::convert::customized_to_json(
                    p.visitors.as_ref().and_then(|v| v.config_data.as_ref()),
                ),
                value_type: from_model.map_or("STRING".into(), |m| m.r#type.to_uppercase()),
                access_mode: from_model.map_or("ReadWrite".into(), |m| m.access_mode.clone()),
                desired: p
                    .desired
                    .as_ref()
                    .map(|d| d.value.clone())
                    .filter(|v| !v.is_empty()),
                collect_cycle: cycle(p.collect_cycle),
                report_cycle: cycle(p.report_cycle),
                report_to_cloud: p.report_to_cloud,
                push_mqtt: p
                    .push_method
                    .as_ref()
                    .and_then(|m| m.mqtt.as_ref())
                    .filter(|m| !m.address.is_empty() && !m.topic.is_empty())
                    .map(|m| MqttPush {
                        address: m.address.clone(),
                        topic: m.topic.clone(),
                        qos: u8::from(m.qos > 0),
                        retained: m.retained,
                    }),
                push_http: p
                    .push_method
                    .as_ref()
                    .and_then(|m| m.http.as_ref())
                    .filter(|h| !h.hostname.is_empty())
                    .map(|h| {
                        let host = h.hostname.trim_end_matches('/');
                        let host = if host.contains("://") {
                            host.to_owned()
                        } else {
                            format!("http://{host}")
                        };
                        let port = if h.port > 0 {
                            format!(":{}", h.port)
                        } else {
                            String::new()
                        };
                        let path = if h.requestpath.starts_with('/') {
                            h.requestpath.clone()
                        } else {
                            format!("/{}", h.requestpath)
                        };
                        HttpPush {
                            url: format!("{host}{port}{path}"),
                            timeout: u64::try_from(h.timeout)
                                .ok()
                                .filter(|t| *t > 0)
                                .map_or(Duration::from_secs(5), Duration::from_millis),
                        }
                    }),
            }
        })
        .collect();
    DeviceConfig {
        name: device.name.clone(),
        namespace: if device.namespace.is_empty() {
            "default".into()
        } else {
            device.namespace.clone()
        },
        protocol: ke_dmi::convert::customized_to_json(
            spec.protocol.as_ref().and_then(|p| p.config_data.as_ref()),
        ),
        properties,
    }
}

/// The twin `type` edgecore checks values against, for a model type.
fn twin_type(value_type: &str) -> &'static str {
    match value_type {
        "INT" | "INTEGER" => "integer",
        "FLOAT" | "DOUBLE" => "float",
        "BOOLEAN" | "BOOL" => "boolean",
        _ => "string",
    }
}

pub(crate) fn start(config: DeviceConfig, driver: Arc<dyn Driver>, manager: Manager) -> Handle {
    let stop = CancellationToken::new();
    let values = Arc::new(Mutex::new(HashMap::new()));
    let run = Run {
        config: config.clone(),
        driver,
        manager,
        values: Arc::clone(&values),
        pushers: HashMap::new(),
        stop: stop.clone(),
        reported_state: "",
    };
    tokio::spawn(run.run());
    Handle {
        stop,
        values,
        config,
    }
}

struct Run {
    config: DeviceConfig,
    driver: Arc<dyn Driver>,
    manager: Manager,
    values: Arc<Mutex<HashMap<String, String>>>,
    /// MQTT clients by broker address, for `pushMethod.mqtt`.
    pushers: HashMap<String, ke_mqtt::client::Client>,
    stop: CancellationToken,
    /// The state edgecore last accepted.
    reported_state: &'static str,
}

impl Run {
    async fn run(mut self) {
        let stop = self.stop.clone();
        stop.run_until_cancelled(self.connected_loop()).await;
    }

    async fn connected_loop(&mut self) {
        let mut wait = Duration::from_millis(500);
        loop {
            match self.driver.connect(&self.config).await {
                Ok(mut connection) => {
                    wait = Duration::from_millis(500);
                    self.report_state("online").await;
                    let err = self.serve(connection.as_mut()).await;
                    tracing::warn!(device = %self.config.name, %err, "device lost; reconnecting");
                }
                Err(err) => {
                    tracing::warn!(device = %self.config.name, %err, "cannot reach the device");
                }
            }
            self.report_state("offline").await;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
        }
    }

    /// Tells edgecore the device's state, unless it already knows it; a state edgecore did
    /// not take is tried again on the next call (every collect tick while connected).
    async fn report_state(&mut self, state: &'static str) {
        if self.reported_state == state {
            return;
        }
        let request = pb::ReportDeviceStatesRequest {
            device_name: self.config.name.clone(),
            device_namespace: self.config.namespace.clone(),
            state: state.into(),
        };
        match self.manager.clone().report_device_states(request).await {
            Ok(_) => self.reported_state = state,
            Err(status) => {
                tracing::warn!(device = %self.config.name, message = status.message(), "state not reported");
            }
        }
    }

    /// Writes desired values, then collects until the device fails.
    async fn serve(&mut self, connection: &mut dyn Connection) -> DriverError {
        for property in &self.config.properties {
            if let Some(desired) = property.desired.as_ref().filter(|_| property.writable()) {
                match connection.write(property, desired).await {
                    Ok(()) => {
                        tracing::info!(device = %self.config.name, property = %property.name, %desired, "desired value written")
                    }
                    Err(DriverError::Device(err)) => return DriverError::Device(err),
                    Err(err) => {
                        tracing::warn!(device = %self.config.name, property = %property.name, %err, "desired value not written")
                    }
                }
            }
        }
        let tick = self
            .config
            .properties
            .iter()
            .map(|p| p.collect_cycle)
            .min()
            .unwrap_or(DEFAULT_CYCLE);
        let mut next_collect: HashMap<String, Instant> = HashMap::new();
        let mut last_report: HashMap<String, (String, Instant)> = HashMap::new();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.report_state("online").await;
            let now = Instant::now();
            let mut twins = Vec::new();
            let properties = self.config.properties.clone();
            for property in &properties {
                if next_collect.get(&property.name).is_some_and(|at| *at > now) {
                    continue;
                }
                next_collect.insert(property.name.clone(), now + property.collect_cycle);
                let value = match connection.read(property).await {
                    Ok(value) => value,
                    Err(DriverError::Device(err)) => return DriverError::Device(err),
                    Err(err) => {
                        tracing::warn!(device = %self.config.name, property = %property.name, %err, "property not read");
                        continue;
                    }
                };
                self.values
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(property.name.clone(), value.clone());
                let due = last_report.get(&property.name).is_none_or(|(last, at)| {
                    *last != value || now.duration_since(*at) >= property.report_cycle
                });
                if !due {
                    continue;
                }
                last_report.insert(property.name.clone(), (value.clone(), now));
                self.push(property, &value);
                if property.report_to_cloud {
                    twins.push(pb::Twin {
                        property_name: property.name.clone(),
                        observed_desired: property.desired.as_ref().map(|d| pb::TwinProperty {
                            value: d.clone(),
                            metadata: HashMap::new(),
                        }),
                        reported: Some(pb::TwinProperty {
                            value,
                            metadata: [
                                (
                                    "type".to_owned(),
                                    twin_type(&property.value_type).to_owned(),
                                ),
                                ("timestamp".to_owned(), now_ms().to_string()),
                            ]
                            .into(),
                        }),
                    });
                }
            }
            if !twins.is_empty() {
                let request = pb::ReportDeviceStatusRequest {
                    device_name: self.config.name.clone(),
                    device_namespace: self.config.namespace.clone(),
                    reported_device: Some(pb::DeviceStatus {
                        twins,
                        report_to_cloud: true,
                        report_cycle: 0,
                    }),
                };
                if let Err(status) = self.manager.clone().report_device_status(request).await {
                    tracing::warn!(device = %self.config.name, message = status.message(), "values not reported");
                }
            }
        }
    }

    /// `pushMethod.mqtt` and `pushMethod.http`: the value as a JSON document (mapper-framework
    /// publishes a line of text, `time is <time>  <topic>: <value>`; a document is what
    /// consumers can parse). Neither waits: a broker or server that is away costs pushed
    /// values, never the device's collect cycle.
    fn push(&mut self, property: &PropertyConfig, value: &str) {
        if property.push_mqtt.is_none() && property.push_http.is_none() {
            return;
        }
        let payload = Bytes::from(
            serde_json::json!({
                "deviceName": self.config.name,
                "namespace": self.config.namespace,
                "propertyName": property.name,
                "value": value,
                "type": twin_type(&property.value_type),
                "timestamp": now_ms(),
            })
            .to_string(),
        );
        if let Some(push) = &property.push_mqtt {
            let client = self.pushers.entry(push.address.clone()).or_insert_with(|| {
                let address = push.address.as_str();
                let host_port = address.split_once("://").map_or(address, |(_, r)| r);
                let config = ke_mqtt::client::ClientConfig {
                    address: host_port.to_owned(),
                    client_id: format!("mapper-{}-{}", self.config.name, std::process::id()),
                    keep_alive: Duration::from_secs(30),
                    credentials: None,
                    subscriptions: Vec::new(),
                    queue: 256,
                    max_packet: 1 << 20,
                    tls: None,
                };
                ke_mqtt::client::connect(config, self.stop.clone()).0
            });
            let message = ke_mqtt::broker::Message {
                topic: push.topic.clone(),
                payload: payload.clone(),
                qos: if push.qos > 0 {
                    ke_mqtt::QoS::AtLeastOnce
                } else {
                    ke_mqtt::QoS::AtMostOnce
                },
                retain: push.retained,
            };
            let _ = client.try_publish(message);
        }
        if let Some(push) = property.push_http.clone() {
            let device = self.config.name.clone();
            tokio::spawn(async move {
                if let Err(err) = crate::push::post(&push, payload).await {
                    tracing::warn!(%device, url = %push.url, %err, "value not pushed");
                }
            });
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_take_types_and_access_from_their_model() {
        let device = pb::Device {
            name: "d".into(),
            namespace: String::new(),
            spec: Some(pb::DeviceSpec {
                device_model_reference: "m".into(),
                properties: vec![pb::DeviceProperty {
                    name: "t".into(),
                    desired: Some(pb::TwinProperty {
                        value: "20".into(),
                        metadata: HashMap::new(),
                    }),
                    collect_cycle: 250,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let model = pb::DeviceModel {
            name: "m".into(),
            namespace: "default".into(),
            spec: Some(pb::DeviceModelSpec {
                properties: vec![pb::ModelProperty {
                    name: "t".into(),
                    r#type: "int".into(),
                    access_mode: "ReadOnly".into(),
                    ..Default::default()
                }],
                commands: Vec::new(),
            }),
        };
        let config = config(&device, &[("default/m".to_owned(), model)].into());
        let property = &config.properties[0];
        assert_eq!(config.namespace, "default");
        assert_eq!(property.value_type, "INT");
        assert!(!property.writable());
        assert_eq!(property.desired.as_deref(), Some("20"));
        assert_eq!(property.collect_cycle, Duration::from_millis(250));
        assert_eq!(property.report_cycle, DEFAULT_CYCLE);
        assert_eq!(twin_type(&property.value_type), "integer");
    }
}
