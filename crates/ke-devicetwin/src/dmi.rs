//! The DMI side of devicetwin: the `DeviceManagerService` mappers call on edgecore's socket,
//! and the calls edgecore makes to each mapper's `DeviceMapperService`.
//!
//! * `MapperRegister` records the mapper (a `meta` row of type `devicemapper`, as upstream) and,
//!   with `withData`, answers with the devices of its protocol and their models.
//! * `ReportDeviceStatus` / `ReportDeviceStates` become the same twin and state updates an MQTT
//!   mapper publishes (golden `dmi-internal-*`: one per twin, untyped, so DMI twins are
//!   `string`), so both paths share one implementation; twins that could never be stored
//!   (bad names or values) are refused to the mapper instead of only on an MQTT topic.
//! * Device and model changes from the cloud go to the mapper of their protocol, in order, one
//!   queue per mapper; a mapper that is down gets everything again when it re-registers.
//!
//! Requests are limited per device (reports) and per mapper (registrations), not globally as
//! upstream does (1 request/s for all mappers together), so one chatty mapper cannot starve the
//! others and 1,000 devices can each report every second.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ke_bus::Bus;
use ke_dmi::v1beta1 as pb;
use ke_dmi::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use ke_dmi::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::store::Store;

/// What the cloud has sent about devices, and the mappers that registered.
#[derive(Default)]
pub struct Registry {
    /// Device objects by `<ns>/<name>`.
    devices: BTreeMap<String, Value>,
    /// DeviceModel objects by `<ns>/<name>`.
    models: BTreeMap<String, Value>,
    /// By protocol: upstream keeps one mapper per protocol.
    mappers: HashMap<String, MapperLink>,
}

struct MapperLink {
    address: String,
    calls: mpsc::Sender<Call>,
}

/// Calls waiting for one mapper, at most; beyond that the mapper is hung and gets everything
/// again when it registers.
const CALL_QUEUE: usize = 1024;
/// Tries of a call the mapper could not take.
const CALL_TRIES: u32 = 3;

/// A call to a mapper's `DeviceMapperService`.
#[derive(Debug, Clone)]
enum Call {
    RegisterDevice(pb::Device),
    UpdateDevice(pb::Device),
    RemoveDevice { name: String, namespace: String },
    CreateModel(pb::DeviceModel),
    UpdateModel(pb::DeviceModel),
    RemoveModel { name: String, namespace: String },
}

pub type SharedRegistry = Arc<Mutex<Registry>>;

fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key_of(object: &Value) -> Option<String> {
    let name = object.pointer("/metadata/name")?.as_str()?;
    let namespace = ke_dmi::convert::namespace_of(object);
    Some(format!("{namespace}/{name}"))
}

fn protocol_of_device(device: &Value) -> &str {
    device
        .pointer("/spec/protocol/protocolName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn protocol_of_model(model: &Value) -> &str {
    model
        .pointer("/spec/protocol")
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Registry {
    fn model_for(&self, device: &Value) -> Option<&Value> {
        let namespace = ke_dmi::convert::namespace_of(device);
        let model = device.pointer("/spec/deviceModelRef/name")?.as_str()?;
        self.models.get(&format!("{namespace}/{model}"))
    }

    fn convert(&self, device: &Value) -> Option<pb::Device> {
        match ke_dmi::convert::device(device, self.model_for(device)) {
            Ok(converted) => Some(converted),
            Err(err) => {
                tracing::warn!(%err, "device not sent to its mapper");
                None
            }
        }
    }

    fn call(&self, protocol: &str, call: Call) {
        match self.mappers.get(protocol) {
            Some(mapper) => {
                if mapper.calls.try_send(call).is_err() {
                    tracing::warn!(protocol, "the mapper's call queue is full; call dropped");
                }
            }
            None => tracing::debug!(
                protocol,
                "no mapper registered for the protocol; it gets the device when it registers"
            ),
        }
    }

    /// A Device or DeviceModel the cloud sent (`<ns>/<type>/<name>`, insert/update/delete).
    pub fn object_changed(&mut self, kind: &str, op: &str, object: &Value, key: String) {
        match kind {
            resource_type::DEVICE => {
                let old = self.devices.remove(&key);
                if op == operation::DELETE {
                    let Some(old) = old else { return };
                    let (namespace, name) = key.split_once('/').unwrap_or(("default", &key));
                    let call = Call::RemoveDevice {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                    };
                    self.call(protocol_of_device(&old), call);
                    return;
                }
                let changed = old.as_ref().is_none_or(|old| old["spec"] != object["spec"]);
                self.devices.insert(key.clone(), object.clone());
                if !changed {
                    return;
                }
                let protocol = protocol_of_device(object);
                let moved = old
                    .as_ref()
                    .map(protocol_of_device)
                    .filter(|old| *old != protocol);
                if let Some(previous) = moved {
                    // Another protocol, another mapper: the old one lets go of the device.
                    let (namespace, name) = key.split_once('/').unwrap_or(("default", &key));
                    let call = Call::RemoveDevice {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                    };
                    self.call(previous, call);
                }
                let Some(converted) = self.convert(object) else {
                    return;
                };
                let call = match old {
                    Some(_) if moved.is_none() => Call::UpdateDevice(converted),
                    _ => Call::RegisterDevice(converted),
                };
                self.call(protocol, call);
            }
            resource_type::DEVICE_MODEL => {
                let old = self.models.remove(&key);
                if op == operation::DELETE {
                    let Some(old) = old else { return };
                    let (namespace, name) = key.split_once('/').unwrap_or(("default", &key));
                    let call = Call::RemoveModel {
                        name: name.to_owned(),
                        namespace: namespace.to_owned(),
                    };
                    self.call(protocol_of_model(&old), call);
                    return;
                }
                let converted = ke_dmi::convert::device_model(object);
                let call = match old {
                    None => Call::CreateModel(converted),
                    Some(_) => Call::UpdateModel(converted),
                };
                self.models.insert(key.clone(), object.clone());
                self.call(protocol_of_model(object), call);
                // The model's protocol settings and visitors are part of each of its devices.
                let users: Vec<Value> = self
                    .devices
                    .values()
                    .filter(|d| {
                        self.model_for(d)
                            .is_some_and(|m| key_of(m).as_ref() == Some(&key))
                    })
                    .cloned()
                    .collect();
                for device in users {
                    if let Some(converted) = self.convert(&device) {
                        self.call(protocol_of_device(&device), Call::UpdateDevice(converted));
                    }
                }
            }
            _ => {}
        }
    }

    /// The devices of `protocol` and their models, for a registering mapper.
    fn for_protocol(&self, protocol: &str) -> (Vec<pb::DeviceModel>, Vec<pb::Device>) {
        let mut models = BTreeMap::new();
        let mut devices = Vec::new();
        for device in self.devices.values() {
            if protocol_of_device(device) != protocol {
                continue;
            }
            if let Some(converted) = self.convert(device) {
                devices.push(converted);
            }
            if let Some(model) = self.model_for(device)
                && let Some(key) = key_of(model)
            {
                models
                    .entry(key)
                    .or_insert_with(|| ke_dmi::convert::device_model(model));
            }
        }
        (models.into_values().collect(), devices)
    }

    /// Starts (or re-targets) the call queue of the mapper serving `protocol` at `address`.
    fn link(&mut self, protocol: &str, address: &str) {
        if self
            .mappers
            .get(protocol)
            .is_some_and(|m| m.address == address && !m.calls.is_closed())
        {
            return;
        }
        let (calls, queue) = mpsc::channel(CALL_QUEUE);
        let path = ke_dmi::socket::socket_path(address);
        tokio::spawn(run_calls(protocol.to_owned(), path, queue));
        self.mappers.insert(
            protocol.to_owned(),
            MapperLink {
                address: address.to_owned(),
                calls,
            },
        );
    }
}

/// Loads what metamanager stored: Device and DeviceModel objects and registered mappers.
pub fn load(registry: &SharedRegistry, objects: &[(String, Value)]) {
    let mut registry = lock(registry);
    for (kind, object) in objects {
        match kind.as_str() {
            resource_type::DEVICE | resource_type::DEVICE_MODEL => {
                if let Some(key) = key_of(object) {
                    let map = if kind == resource_type::DEVICE {
                        &mut registry.devices
                    } else {
                        &mut registry.models
                    };
                    map.insert(key, object.clone());
                }
            }
            resource_type::DEVICE_MAPPER => {
                let protocol = object["protocol"].as_str().unwrap_or("").to_owned();
                let address = object["address"]
                    .as_str()
                    .and_then(decode_base64)
                    .unwrap_or_default();
                if !protocol.is_empty() && !address.is_empty() {
                    registry.link(&protocol, &address);
                }
            }
            _ => {}
        }
    }
}

fn decode_base64(text: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// One mapper's calls, in order. A call the mapper cannot take (not running, busy) is tried
/// again a few times, then logged: the mapper gets the whole state again when it registers.
async fn run_calls(protocol: String, path: std::path::PathBuf, mut queue: mpsc::Receiver<Call>) {
    let mut client = DeviceMapperServiceClient::new(ke_dmi::socket::channel(&path));
    while let Some(call) = queue.recv().await {
        let what = format!("{call:?}")
            .split(['(', ' '])
            .next()
            .unwrap_or("")
            .to_owned();
        let mut tries = 0;
        let result = loop {
            tries += 1;
            match perform(&mut client, call.clone()).await {
                Err(status)
                    if tries < CALL_TRIES
                        && matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) =>
                {
                    tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
                }
                done => break done,
            }
        };
        match result {
            Ok(()) => tracing::debug!(%protocol, call = what, "mapper call done"),
            Err(status) => tracing::warn!(
                %protocol,
                call = what,
                code = ?status.code(),
                message = status.message(),
                "mapper call failed"
            ),
        }
    }
}

async fn perform(
    client: &mut DeviceMapperServiceClient<tonic::transport::Channel>,
    call: Call,
) -> Result<(), Status> {
    match call {
        Call::RegisterDevice(device) => client
            .register_device(pb::RegisterDeviceRequest {
                device: Some(device),
            })
            .await
            .map(drop),
        Call::UpdateDevice(device) => client
            .update_device(pb::UpdateDeviceRequest {
                device: Some(device),
            })
            .await
            .map(drop),
        Call::RemoveDevice { name, namespace } => client
            .remove_device(pb::RemoveDeviceRequest {
                device_name: name,
                device_namespace: namespace,
            })
            .await
            .map(drop),
        Call::CreateModel(model) => client
            .create_device_model(pb::CreateDeviceModelRequest { model: Some(model) })
            .await
            .map(drop),
        Call::UpdateModel(model) => client
            .update_device_model(pb::UpdateDeviceModelRequest { model: Some(model) })
            .await
            .map(drop),
        Call::RemoveModel { name, namespace } => client
            .remove_device_model(pb::RemoveDeviceModelRequest {
                model_name: name,
                model_namespace: namespace,
            })
            .await
            .map(drop),
    }
}

/// A token bucket: `rate` requests per second, up to `burst` at once.
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Limits {
    buckets: Mutex<HashMap<String, Bucket>>,
    rate: f64,
    burst: f64,
}

impl Limits {
    fn allow(&self, key: &str) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.clear();
        }
        let now = Instant::now();
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// edgecore's `DeviceManagerService`.
pub struct Manager {
    registry: SharedRegistry,
    bus: Bus,
    store: Store,
    reports: Limits,
    registrations: Limits,
}

impl Manager {
    pub fn new(registry: SharedRegistry, bus: Bus, store: Store) -> Manager {
        Manager {
            registry,
            bus,
            store,
            reports: Limits {
                buckets: Mutex::default(),
                rate: 20.0,
                burst: 100.0,
            },
            registrations: Limits {
                buckets: Mutex::default(),
                rate: 1.0,
                burst: 10.0,
            },
        }
    }

    /// A report, handed to the twin module as if it came over MQTT.
    async fn to_twin(&self, topic: String, payload: &Value) -> Result<(), Status> {
        let message = Message::new()
            .with_route(
                group::BUS,
                group::USER,
                ke_message::resource::mqtt_topic_resource(&topic),
                operation::RESPONSE,
            )
            .with_content(crate::json::encode(payload));
        self.bus
            .send_to_group(group::TWIN, message)
            .await
            .map(drop)
            .map_err(|err| Status::unavailable(format!("devicetwin: {err}")))
    }
}

fn device_topic(namespace: &str, name: &str, suffix: &str) -> Result<String, Status> {
    let valid = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#', '\0']);
    if !valid(name) || !(namespace.is_empty() || valid(namespace)) {
        return Err(Status::invalid_argument(format!(
            "device {namespace:?}/{name:?} is not a valid device name"
        )));
    }
    let namespace = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    Ok(format!("$hw/events/device/{namespace}/{name}/{suffix}"))
}

#[tonic::async_trait]
impl DeviceManagerService for Manager {
    async fn mapper_register(
        &self,
        request: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let request = request.into_inner();
        let mapper = request
            .mapper
            .ok_or_else(|| Status::invalid_argument("MapperRegisterRequest has no mapper"))?;
        if !self.registrations.allow(&mapper.name) {
            return Err(Status::resource_exhausted(format!(
                "fail to register mapper because of too many request: {}",
                mapper.name
            )));
        }
        if mapper.protocol.is_empty() {
            return Err(Status::invalid_argument(format!(
                "fail to register mapper {} because the protocol is nil",
                mapper.name
            )));
        }
        let address = String::from_utf8(mapper.address.clone())
            .map_err(|_| Status::invalid_argument("mapper address is not UTF-8"))?;
        let record = mapper_json(&mapper);
        let store = self.store.clone();
        let name = mapper.name.clone();
        tokio::task::spawn_blocking(move || store.put_mapper(&name, &record))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("store the mapper: {e}")))?;
        tracing::info!(mapper = %mapper.name, protocol = %mapper.protocol, %address, "mapper registered");
        if !request.with_data {
            return Ok(Response::new(pb::MapperRegisterResponse::default()));
        }
        let mut registry = lock(&self.registry);
        registry.link(&mapper.protocol, &address);
        let (model_list, device_list) = registry.for_protocol(&mapper.protocol);
        Ok(Response::new(pb::MapperRegisterResponse {
            model_list,
            device_list,
        }))
    }

    async fn report_device_status(
        &self,
        request: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        let request = request.into_inner();
        let topic = device_topic(
            &request.device_namespace,
            &request.device_name,
            "twin/update",
        )?;
        if !self.reports.allow(&topic) {
            return Err(Status::resource_exhausted(format!(
                "fail to report device status because of too many request: {}",
                request.device_name
            )));
        }
        let twins = request
            .reported_device
            .map(|d| d.twins)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument("ReportDeviceStatusRequest does not have twin data")
            })?;
        // One update per twin, untyped, as upstream: a twin that cannot be stored does not hold
        // back the others, and a mapper's metadata (stock mappers send whatever the Device's
        // desired metadata says) never turns into a type its values then fail.
        let mut refused = Vec::new();
        for twin in twins {
            let mut entry = serde_json::Map::new();
            if let Some(desired) = twin.observed_desired.filter(|d| !d.value.is_empty()) {
                entry.insert("expected".into(), json!({ "value": desired.value }));
            }
            let reported = twin.reported.unwrap_or_default();
            entry.insert("actual".into(), json!({ "value": reported.value }));
            let name = twin.property_name;
            let payload = json!({
                "event_id": "",
                "timestamp": crate::now_ms(),
                "twin": { name.as_str(): entry },
            });
            match crate::twin::parse_update(crate::json::encode(&payload).as_bytes()) {
                Ok(_) => self.to_twin(topic.clone(), &payload).await?,
                Err(err) => refused.push(format!("{name:?}: {}", err.reason)),
            }
        }
        if !refused.is_empty() {
            return Err(Status::invalid_argument(format!(
                "twins not stored: {}",
                refused.join("; ")
            )));
        }
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        request: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        let request = request.into_inner();
        if request.state.is_empty() || request.device_name.is_empty() {
            return Err(Status::invalid_argument(
                "ReportDeviceStatesRequest is invalid data",
            ));
        }
        let topic = device_topic(
            &request.device_namespace,
            &request.device_name,
            "state/update",
        )?;
        if !self.reports.allow(&topic) {
            return Err(Status::resource_exhausted(format!(
                "fail to report device states because of too many request: {}",
                request.device_name
            )));
        }
        let payload =
            json!({ "event_id": "", "timestamp": crate::now_ms(), "State": request.state });
        self.to_twin(topic, &payload).await?;
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

/// `MapperInfo` as Go's encoding/json writes it (empty fields omitted, `address` base64).
fn mapper_json(mapper: &pb::MapperInfo) -> Value {
    use base64::Engine as _;
    let mut out = serde_json::Map::new();
    for (key, value) in [
        ("name", &mapper.name),
        ("version", &mapper.version),
        ("api_version", &mapper.api_version),
        ("protocol", &mapper.protocol),
    ] {
        if !value.is_empty() {
            out.insert(key.into(), json!(value));
        }
    }
    if !mapper.address.is_empty() {
        let address = base64::engine::general_purpose::STANDARD.encode(&mapper.address);
        out.insert("address".into(), json!(address));
    }
    if !mapper.state.is_empty() {
        out.insert("state".into(), json!(mapper.state));
    }
    Value::Object(out)
}

/// Serves `manager` on `socket` until `cancel`.
pub async fn serve(
    socket: std::path::PathBuf,
    manager: Manager,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let incoming = ke_dmi::socket::listen(&socket)
        .with_context(|| format!("listen for mappers on {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "DMI server listening");
    tonic::transport::Server::builder()
        .add_service(DeviceManagerServiceServer::new(manager))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .context("DMI server")
}
