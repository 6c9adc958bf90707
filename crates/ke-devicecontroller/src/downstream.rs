//! Cloud → edge, as upstream's devicecontroller (golden frames 24–26), per Device:
//!
//! | event                     | old node                                   | new / current node |
//! |---------------------------|--------------------------------------------|--------------------|
//! | added with `nodeName` N   | –                                          | membership (added) → DeviceModel `insert` if N lacks it → Device `insert` |
//! | changed, same node        | –                                          | DeviceModel `update` → Device `update` |
//! | `nodeName` A → B          | membership (removed) → DeviceModel `delete` if no other device of it is left on A → Device `delete` | as "added" on B |
//! | deleted                   | as the old node above                      | – |
//!
//! Membership updates are NO-ACK (group `twin`); DeviceModels and Devices are ACK messages
//! with their resourceVersion and TypeMeta set. Improvements on upstream: a DeviceModel that
//! appears after its devices is sent when it appears (upstream retries for 10 s, then gives
//! up), and DeviceModel changes and deletions reach the nodes that hold the model at once
//! (upstream leaves that to the synccontroller's next pass).
//!
//! Every added Device also gets its DeviceStatus (same name, owned by the Device), where twin
//! reports land.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use kube::Client;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::kinds::{self, API_VERSION};

/// `(namespace, name)` of a Device or DeviceModel.
pub(crate) type Key = (String, String);

/// What upstream uses of a Device; shared with the upstream handlers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceInfo {
    pub uid: String,
    pub node: Option<String>,
    pub model: Option<String>,
    /// `spec.properties[].name`: the twins the device declares.
    pub properties: Vec<String>,
    pub description: Option<String>,
    pub json: Value,
}

impl DeviceInfo {
    fn from_object(object: &DynamicObject) -> DeviceInfo {
        let spec = object.data.get("spec");
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        DeviceInfo {
            uid: object.metadata.uid.clone().unwrap_or_default(),
            node: text(spec.and_then(|s| s.get("nodeName"))),
            model: text(spec.and_then(|s| s.pointer("/deviceModelRef/name"))),
            properties: spec
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(|p| text(p.get("name"))).collect())
                .unwrap_or_default(),
            description: object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("description").cloned()),
            json: with_type_meta(object, "Device"),
        }
    }
}

/// Devices by key, as the downstream last saw them.
pub(crate) type Devices = Arc<Mutex<HashMap<Key, DeviceInfo>>>;

fn with_type_meta(object: &DynamicObject, kind: &str) -> Value {
    let mut json = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = json.as_object_mut() {
        map.insert("apiVersion".into(), json!(API_VERSION));
        map.insert("kind".into(), json!(kind));
        // Upstream's Device always carries a (legacy) status.
        if kind == "Device" {
            map.entry("status").or_insert_with(|| json!({}));
        }
    }
    json
}

fn key(object: &DynamicObject) -> Key {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

enum Change {
    Device(watcher::Event<DynamicObject>),
    Model(watcher::Event<DynamicObject>),
}

struct State {
    client: Client,
    bus: Bus,
    devices: Devices,
    models: HashMap<Key, Value>,
    /// Which nodes hold which DeviceModel.
    model_holders: HashMap<Key, BTreeSet<String>>,
    relisting_devices: Option<HashSet<Key>>,
    relisting_models: Option<HashSet<Key>>,
}

pub(crate) async fn run(client: Client, bus: Bus, devices: Devices) {
    let mut changes: SelectAll<BoxStream<'static, Change>> = SelectAll::new();
    // Models first, so a device's model is usually known when the device arrives.
    changes.push(stream(kinds::device_models(&client), Change::Model));
    changes.push(stream(kinds::devices(&client), Change::Device));
    let mut state = State {
        client,
        bus,
        devices,
        models: HashMap::new(),
        model_holders: HashMap::new(),
        relisting_devices: None,
        relisting_models: None,
    };
    while let Some(change) = changes.next().await {
        match change {
            Change::Device(event) => state.device_event(event).await,
            Change::Model(event) => state.model_event(event).await,
        }
    }
}

fn stream(
    api: kube::Api<DynamicObject>,
    wrap: fn(watcher::Event<DynamicObject>) -> Change,
) -> BoxStream<'static, Change> {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(wrap(event)),
                Err(err) => {
                    tracing::warn!(error = %err, "devicecontroller watch failed; retrying");
                    None
                }
            }
        })
        .boxed()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn version_of(object: &Value) -> String {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl State {
    async fn device_event(&mut self, event: watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Init => self.relisting_devices = Some(HashSet::new()),
            watcher::Event::InitApply(object) => {
                if let Some(seen) = &mut self.relisting_devices {
                    seen.insert(key(&object));
                }
                self.device_seen(&object).await;
            }
            watcher::Event::InitDone => {
                let seen = self.relisting_devices.take().unwrap_or_default();
                let gone: Vec<(Key, DeviceInfo)> = self
                    .devices()
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(k, d)| (k.clone(), d.clone()))
                    .collect();
                for (key, device) in gone {
                    self.device_gone(&key, &device).await;
                }
            }
            watcher::Event::Apply(object) => self.device_seen(&object).await,
            watcher::Event::Delete(object) => {
                let key = key(&object);
                let device = self.devices().get(&key).cloned();
                if let Some(device) = device {
                    self.device_gone(&key, &device).await;
                }
            }
        }
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<Key, DeviceInfo>> {
        self.devices.lock().expect("device cache lock poisoned")
    }

    async fn device_seen(&mut self, object: &DynamicObject) {
        let key = key(object);
        let new = DeviceInfo::from_object(object);
        let old = self.devices().insert(key.clone(), new.clone());
        match old {
            Some(old) if old.node == new.node => {
                if old.json == new.json {
                    return;
                }
                if let Some(node) = &new.node {
                    self.send_model(node, &key.0, new.model.as_deref(), operation::UPDATE)
                        .await;
                    self.send_device(node, &key, &new.json, operation::UPDATE)
                        .await;
                }
            }
            old => {
                if let Some(old) = old
                    && let Some(node) = &old.node
                {
                    self.remove_from_node(node, &key, &old).await;
                }
                if let Some(node) = &new.node {
                    self.add_to_node(node, &key, &new).await;
                }
            }
        }
    }

    async fn device_gone(&mut self, key: &Key, device: &DeviceInfo) {
        self.devices().remove(key);
        if let Some(node) = &device.node {
            self.remove_from_node(node, key, device).await;
        }
    }

    async fn add_to_node(&mut self, node: &str, key: &Key, device: &DeviceInfo) {
        self.membership(node, key, device, true).await;
        crate::upstream::ensure_device_status(&self.client, key, &device.uid).await;
        self.send_model(node, &key.0, device.model.as_deref(), operation::INSERT)
            .await;
        self.send_device(node, key, &device.json, operation::INSERT)
            .await;
    }

    async fn remove_from_node(&mut self, node: &str, key: &Key, device: &DeviceInfo) {
        self.membership(node, key, device, false).await;
        if let Some(model) = &device.model {
            let still_used = self.devices().iter().any(|(k, d)| {
                k != key
                    && d.node.as_deref() == Some(node)
                    && k.0 == key.0
                    && d.model.as_ref() == Some(model)
            });
            if !still_used {
                self.send_model(node, &key.0, Some(model), operation::DELETE)
                    .await;
            }
        }
        self.send_device(node, key, &device.json, operation::DELETE)
            .await;
    }

    /// `types.MembershipUpdate`: `added_devices` / `removed_devices` (the other one `null`).
    async fn membership(&self, node: &str, key: &Key, device: &DeviceInfo, added: bool) {
        let mut entry = json!({ "id": format!("{}/{}", key.0, key.1), "name": key.1 });
        if let Some(description) = &device.description {
            entry["description"] = json!(description);
        }
        let (added_devices, removed_devices) = if added {
            (json!([entry]), Value::Null)
        } else {
            (Value::Null, json!([entry]))
        };
        let content = json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "timestamp": now_ms(),
            "added_devices": added_devices,
            "removed_devices": removed_devices,
        });
        let message = Message::new()
            .with_route(
                source::DEVICE_CONTROLLER,
                group::TWIN,
                format!("node/{node}/{}", resource_type::MEMBERSHIP),
                operation::UPDATE,
            )
            .with_content(content);
        self.send(message).await;
    }

    async fn send_device(&self, node: &str, key: &Key, device: &Value, op: &str) {
        let resource = format!("node/{node}/{}/{}/{}", key.0, resource_type::DEVICE, key.1);
        self.send_object(resource, device, op).await;
    }

    /// Sends the model to `node` and records that the node holds it (or not, for `delete`).
    /// An unknown model is sent when it appears (see [`State::model_event`]).
    async fn send_model(&mut self, node: &str, namespace: &str, model: Option<&str>, op: &str) {
        let Some(model) = model else { return };
        let key = (namespace.to_owned(), model.to_owned());
        let Some(json) = self.models.get(&key).cloned() else {
            return;
        };
        let holders = self.model_holders.entry(key.clone()).or_default();
        let op = match op {
            operation::DELETE => {
                holders.remove(node);
                operation::DELETE
            }
            // The first time a node gets the model it is an insert, whatever the device did.
            _ if holders.insert(node.to_owned()) => operation::INSERT,
            _ => operation::UPDATE,
        };
        let resource = format!(
            "node/{node}/{namespace}/{}/{model}",
            resource_type::DEVICE_MODEL
        );
        self.send_object(resource, &json, op).await;
    }

    async fn send_object(&self, resource: String, object: &Value, op: &str) {
        let message = Message::new()
            .with_route(source::DEVICE_CONTROLLER, group::RESOURCE, resource, op)
            .with_resource_version(version_of(object))
            .with_content(object.clone());
        self.send(message).await;
    }

    async fn send(&self, message: Message) {
        if let Err(err) = self.bus.send(source::CLOUD_HUB, message).await {
            tracing::warn!(error = %err, "cannot hand a device message to cloudhub");
        }
    }

    async fn model_event(&mut self, event: watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Init => self.relisting_models = Some(HashSet::new()),
            watcher::Event::InitApply(object) => {
                if let Some(seen) = &mut self.relisting_models {
                    seen.insert(key(&object));
                }
                self.model_seen(&object).await;
            }
            watcher::Event::InitDone => {
                let seen = self.relisting_models.take().unwrap_or_default();
                let gone: Vec<Key> = self
                    .models
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.model_gone(&key).await;
                }
            }
            watcher::Event::Apply(object) => self.model_seen(&object).await,
            watcher::Event::Delete(object) => self.model_gone(&key(&object)).await,
        }
    }

    async fn model_seen(&mut self, object: &DynamicObject) {
        let key = key(object);
        let json = with_type_meta(object, "DeviceModel");
        let previous = self.models.insert(key.clone(), json.clone());
        if previous.as_ref() == Some(&json) {
            return;
        }
        // Nodes that hold it get the change; nodes with a device of it that never got it
        // (it did not exist yet) get it now.
        let holders: BTreeSet<String> = self.model_holders.get(&key).cloned().unwrap_or_default();
        let waiting: BTreeMap<String, ()> = self
            .devices()
            .iter()
            .filter(|(k, d)| k.0 == key.0 && d.model.as_deref() == Some(key.1.as_str()))
            .filter_map(|(_, d)| d.node.clone())
            .map(|n| (n, ()))
            .collect();
        let resource_of = |node: &str| {
            format!(
                "node/{node}/{}/{}/{}",
                key.0,
                resource_type::DEVICE_MODEL,
                key.1
            )
        };
        for node in &holders {
            self.send_object(resource_of(node), &json, operation::UPDATE)
                .await;
        }
        for node in waiting.keys().filter(|n| !holders.contains(*n)) {
            self.model_holders
                .entry(key.clone())
                .or_default()
                .insert(node.clone());
            self.send_object(resource_of(node), &json, operation::INSERT)
                .await;
        }
    }

    async fn model_gone(&mut self, key: &Key) {
        let Some(json) = self.models.remove(key) else {
            return;
        };
        for node in self.model_holders.remove(key).unwrap_or_default() {
            let resource = format!(
                "node/{node}/{}/{}/{}",
                key.0,
                resource_type::DEVICE_MODEL,
                key.1
            );
            self.send_object(resource, &json, operation::DELETE).await;
        }
    }
}

/// Creates objects with the cloudcore field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some("cloudcore".into()),
        ..Default::default()
    }
}
