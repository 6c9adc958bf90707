//! DeviceTwin (upstream module `twin`, group `twin`): this node's devices and their twins.
//!
//! Data flow:
//! * **Membership** — which devices are this node's — comes from the cloud's membership
//!   updates (golden message 24) and, because those are not acknowledged and can be lost, also
//!   from the Device objects metamanager stores and forwards (source `meta`), at startup too.
//!   Mappers learn of changes on `$hw/events/node/<node>/membership/updated` and can ask
//!   `…/membership/get`.
//! * **Twin reports** from mappers (MQTT `$hw/events/device/<ns>/<name>/twin/update`, or DMI
//!   through the same path) are applied by [`twin::apply_update`], stored, answered on
//!   `…/twin/update/result`, `…/document` and `…/delta`, and reported to the cloud
//!   (`device/<ns>/<name>/twin/edge_updated`, golden 27) through the [`outbox`].
//! * **State reports** (`…/state/update`) likewise: stored, answered on
//!   `…/state/update/result`, reported as `device/<ns>/<name>/state/update` (golden 30).
//! * The cloud confirms each report by answering its message id (golden 28).
//!
//! The module takes whatever has queued (up to [`MAX_BATCH`] messages), applies it in memory,
//! writes the changed rows and reports in one transaction, and only then publishes results and
//! sends reports: what a mapper is told was stored, and a report's row exists before the cloud
//! can confirm it. A transaction that fails three times reloads the state from the database and
//! publishes nothing; mappers report again on their next cycle.
//!
//! Where we differ from upstream, on purpose: reports are durable and merged (see [`outbox`]);
//! a Device object also makes a member; an unparsable twin update is answered on the device's
//! own `…/twin/update/result` (upstream: `$hw/events/device//twin/update/result`); a side
//! without a value is a 400 (upstream panics); deleting an unknown twin skips only that twin;
//! the state `unhealthy` (mapper-framework's) is accepted; `last_online` keeps the last time the
//! device was online when it goes offline (upstream clears it); no `membership/detail` request
//! is sent on connect (no cloudcore answers it). Not built: device attributes
//! (`…/updated`, `device_attr`), the legacy `twin/cloud_updated` sync, DMI v1alpha1.

pub mod device;
mod dmi;
mod json;
pub mod outbox;
mod store;
pub mod twin;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ke_bus::{BoxFuture, Bus, Module, ModuleContext};
use ke_message::Message;
use ke_message::constants::{content, group, operation, resource_type, source};
use serde_json::{Value, json};

use crate::device::{Device, Member};
use crate::dmi::SharedRegistry;
use crate::outbox::Outbox;
pub use crate::store::Store;
use crate::store::{Loaded, Write};

pub const MODULE_NAME: &str = "twin";
pub const GROUP_NAME: &str = "twin";
/// How many queued messages one transaction takes at most.
const MAX_BATCH: usize = 256;
const EVENTBUS: &str = "eventbus";
const EDGEHUB: &str = "websocket";

#[derive(Debug, Clone)]
pub struct DeviceTwinSettings {
    pub node_name: String,
    /// edgecore's DMI socket (`deviceTwin.dmiSockPath`, then `dmi.sock`).
    pub dmi_socket: std::path::PathBuf,
}

impl DeviceTwinSettings {
    pub fn from_config(config: &ke_config::EdgeCoreConfig) -> DeviceTwinSettings {
        DeviceTwinSettings {
            node_name: config.modules.edged.hostname_override.clone(),
            dmi_socket: ke_dmi::socket::edgecore_socket(&config.modules.device_twin.dmi_sock_path),
        }
    }
}

pub struct DeviceTwin {
    settings: DeviceTwinSettings,
    store: Store,
}

impl DeviceTwin {
    /// The module, keeping its rows through `connection` (the edge database, whose device
    /// tables metamanager created).
    pub fn new(settings: DeviceTwinSettings, connection: rusqlite::Connection) -> DeviceTwin {
        // Twins are re-reported every cycle, so the last few milliseconds of them may be lost to
        // a power cut (not to a crash: WAL keeps committed transactions). Without a sync per
        // transaction, 1,000 devices reporting every second cost a fraction of the CPU and of
        // the flash wear.
        if let Err(err) = connection.pragma_update(None, "synchronous", "NORMAL") {
            tracing::warn!(%err, "device tables stay fully synchronous");
        }
        DeviceTwin {
            settings,
            store: Store::new(connection),
        }
    }
}

impl Module for DeviceTwin {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn group(&self) -> &str {
        GROUP_NAME
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let loaded = load(&self.store).await?;
            let registry = SharedRegistry::default();
            dmi::load(&registry, &loaded.objects);
            let cancel = tokio_util::sync::CancellationToken::new();
            let _stop_dmi = cancel.clone().drop_guard();
            let manager =
                dmi::Manager::new(registry.clone(), ctx.bus().clone(), self.store.clone());
            let socket = self.settings.dmi_socket.clone();
            tokio::spawn(async move {
                if let Err(err) = dmi::serve(socket, manager, cancel).await {
                    tracing::error!("{err:#}");
                }
            });
            let mut effects = Effects::default();
            let mut twins = Twins::new(&self.settings.node_name, loaded, registry, &mut effects);
            tracing::info!(
                devices = twins.devices.len(),
                reports = twins.outbox.len(),
                "device twins loaded"
            );
            twins.commit(&self.store, ctx.bus(), effects).await?;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    first = ctx.recv() => {
                        let Some(first) = first else { return Ok(()) };
                        let mut effects = Effects::default();
                        twins.handle(first, now_ms(), &mut effects);
                        for _ in 1..MAX_BATCH {
                            let Some(message) = ctx.try_recv() else { break };
                            twins.handle(message, now_ms(), &mut effects);
                        }
                        twins.commit(&self.store, ctx.bus(), effects).await?;
                    }
                    _ = tick.tick() => twins.reports_changed = true,
                }
                let writes = twins.send_reports(ctx.bus());
                if !writes.is_empty() {
                    let effects = Effects {
                        writes,
                        publishes: Vec::new(),
                    };
                    twins.commit(&self.store, ctx.bus(), effects).await?;
                }
            }
        })
    }
}

/// Writes a batch; a busy or failing database gets three tries a second apart (another
/// writer — metamanager — may hold it beyond the busy timeout).
async fn apply(store: &Store, mut writes: Vec<Write>) -> anyhow::Result<rusqlite::Result<()>> {
    let mut tries = 0;
    loop {
        let (attempt, batch) = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || (store.apply(&writes), writes)).await?
        };
        tries += 1;
        match attempt {
            Err(err) if tries < 3 => {
                tracing::warn!(%err, "storing device twins failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                writes = batch;
            }
            done => return Ok(done),
        }
    }
}

async fn load(store: &Store) -> anyhow::Result<Loaded> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.load())
        .await?
        .context("read the device tables")
}

pub(crate) use ke_message::now_millis as now_ms;

fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What handling a batch of messages changed: rows to write, then MQTT payloads to publish.
#[derive(Default)]
struct Effects {
    writes: Vec<Write>,
    publishes: Vec<(String, String)>,
}

impl Effects {
    fn publish(&mut self, topic: String, payload: &Value) {
        self.publishes.push((topic, json::encode(payload)));
    }
}

/// A topic devicetwin handles.
enum Topic<'a> {
    Device { id: String, suffix: &'a str },
    Node { node: &'a str, suffix: &'a str },
}

const DEVICE_PREFIX: &str = "$hw/events/device/";
const NODE_PREFIX: &str = "$hw/events/node/";

fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    if let Some(rest) = topic.strip_prefix(DEVICE_PREFIX) {
        let mut parts = rest.splitn(3, '/');
        let (namespace, name, suffix) = (parts.next()?, parts.next()?, parts.next()?);
        return (!namespace.is_empty() && !name.is_empty()).then(|| Topic::Device {
            id: format!("{namespace}/{name}"),
            suffix,
        });
    }
    let rest = topic.strip_prefix(NODE_PREFIX)?;
    let (node, suffix) = rest.split_once('/')?;
    Some(Topic::Node { node, suffix })
}

fn device_topic(id: &str, suffix: &str) -> String {
    format!("{DEVICE_PREFIX}{id}/{suffix}")
}

/// The module's state: devices with their twins, and reports not yet confirmed.
struct Twins {
    node: String,
    devices: BTreeMap<String, Device>,
    outbox: Outbox,
    connected: bool,
    /// Devices, models and mappers for the DMI side.
    registry: SharedRegistry,
    /// Something happened that may make a report due (a new report, a confirmation, the
    /// link, a second passing); batches that change none of these do not scan the outbox.
    reports_changed: bool,
}

impl Twins {
    fn new(node: &str, loaded: Loaded, registry: SharedRegistry, effects: &mut Effects) -> Twins {
        let mut twins = Twins {
            node: node.to_owned(),
            devices: loaded.devices,
            outbox: Outbox::load(loaded.reports),
            connected: false,
            registry,
            reports_changed: true,
        };
        // Devices the cloud sent while a membership update was lost, or before a crash.
        for (kind, object) in &loaded.objects {
            if kind == resource_type::DEVICE
                && let Some(member) = Member::from_device_object(object)
            {
                twins.add_member(member, None, now_ms(), effects);
            }
        }
        twins
    }

    fn handle(&mut self, message: Message, now: i64, effects: &mut Effects) {
        if !message.header.parent_id.is_empty() {
            if let Some(write) = self.outbox.confirm(&message.header.parent_id) {
                effects.writes.push(write);
                self.reports_changed = true;
            }
            if message.router.operation == operation::RESPONSE
                && message.router.resource == resource_type::TWIN
            {
                return;
            }
        }
        let route = &message.router;
        if route.resource == resource_type::NODE_CONNECTION {
            match message.content.as_str() {
                Some(content::CLOUD_CONNECTED) => {
                    self.connected = true;
                    self.reports_changed = true;
                    self.outbox.resend_all();
                }
                Some(content::CLOUD_DISCONNECTED) => self.connected = false,
                _ => {}
            }
            return;
        }
        match route.source.as_str() {
            group::BUS => self.mqtt_message(&message, now, effects),
            source::DEVICE_CONTROLLER | source::EDGE_MANAGER
                if route.resource.contains(resource_type::MEMBERSHIP) =>
            {
                self.membership(&message, now, effects);
            }
            group::META => self.device_object(&message, now, effects),
            _ => tracing::debug!(
                source = %route.source,
                resource = %route.resource,
                operation = %route.operation,
                "message devicetwin does not handle"
            ),
        }
    }

    fn mqtt_message(&mut self, message: &Message, now: i64, effects: &mut Effects) {
        let Some(topic) = ke_message::resource::topic_of_resource(&message.router.resource) else {
            tracing::warn!(resource = %message.router.resource, "bus message without a topic");
            return;
        };
        let payload = message.content_bytes();
        match parse_topic(&topic) {
            Some(Topic::Device { id, suffix }) => match suffix {
                "twin/update" => self.twin_update(&id, &payload, now, effects),
                "twin/get" => self.twin_get(&id, &payload, now, effects),
                "state/update" => self.state_update(&id, &payload, now, effects),
                _ => tracing::debug!(%topic, "device topic devicetwin does not handle"),
            },
            Some(Topic::Node {
                node,
                suffix: "membership/get",
            }) => {
                let event_id = serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .and_then(|b| json::str_field(&b, "event_id").map(str::to_owned))
                    .unwrap_or_default();
                let result = device::membership_get_result(self.devices.values(), &event_id, now);
                effects.publish(
                    format!("{NODE_PREFIX}{node}/membership/get/result"),
                    &result,
                );
            }
            _ => tracing::debug!(%topic, "topic devicetwin does not handle"),
        }
    }

    fn twin_update(&mut self, id: &str, payload: &[u8], now: i64, effects: &mut Effects) {
        let result_topic = device_topic(id, "twin/update/result");
        let request = match twin::parse_update(payload) {
            Ok(request) => request,
            Err(err) => {
                tracing::debug!(device = id, %err, "twin update refused");
                effects.publish(result_topic, &err.result("", now));
                return;
            }
        };
        let Some(device) = self.devices.get_mut(id) else {
            let err =
                twin::TwinError::not_found("Update rejected due to the device is not existed");
            effects.publish(result_topic, &err.result(&request.event_id, now));
            return;
        };
        let outcome = match twin::apply_update(&device.twins, &request, now) {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::debug!(device = id, %err, "twin update refused");
                effects.publish(result_topic, &err.result(&request.event_id, now));
                return;
            }
        };
        for name in &outcome.changed {
            effects.writes.push(Write::PutTwin {
                device: id.to_owned(),
                name: name.clone(),
                twin: outcome.twins[name].clone(),
            });
        }
        device.twins = outcome.twins;
        effects.publish(result_topic, &outcome.result);
        if let Some(document) = &outcome.document {
            effects.publish(device_topic(id, "twin/update/document"), document);
        }
        if let Some(delta) = twin::delta(&device.twins, &new_event_id(), now) {
            effects.publish(device_topic(id, "twin/update/delta"), &delta);
        }
        if let Some(sync) = outcome.sync {
            let content = json!({ "event_id": new_event_id(), "timestamp": now, "twin": sync });
            let report = Message::new()
                .with_route(
                    source::TWIN,
                    group::RESOURCE,
                    format!("device/{id}/twin/edge_updated"),
                    operation::UPDATE,
                )
                .with_content(content);
            self.report(report, effects);
        }
    }

    fn twin_get(&mut self, id: &str, payload: &[u8], now: i64, effects: &mut Effects) {
        let topic = device_topic(id, "twin/get/result");
        let request = serde_json::from_slice::<Value>(payload)
            .ok()
            .filter(Value::is_object);
        let Some(request) = request else {
            let err = twin::TwinError::bad_request(format!(
                "Unmarshal twin info {} failed",
                String::from_utf8_lossy(payload)
            ));
            effects.publish(topic, &err.result("", now));
            return;
        };
        let event_id = json::str_field(&request, "event_id").unwrap_or_default();
        match self.devices.get(id) {
            Some(device) => {
                effects.publish(topic, &twin::get_result(&device.twins, event_id, now));
            }
            None => {
                let err =
                    twin::TwinError::not_found(format!("Device {id} not found while getting twin"));
                effects.publish(topic, &err.result(event_id, now));
            }
        }
    }

    fn state_update(&mut self, id: &str, payload: &[u8], now: i64, effects: &mut Effects) {
        let state = match device::parse_state(payload) {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(device = id, %err, "device state report ignored");
                return;
            }
        };
        let Some(device) = self.devices.get_mut(id) else {
            tracing::warn!(
                device = id,
                "state report for a device this node does not have"
            );
            return;
        };
        if device::is_online(&state) {
            device.last_online = device::rfc3339(now);
        }
        device.state = state;
        effects.writes.push(Write::PutDevice(without_twins(device)));
        let result = device::state_result(device, &new_event_id(), now);
        effects.publish(device_topic(id, "state/update/result"), &result);
        let report = Message::new()
            .with_route(
                source::TWIN,
                group::RESOURCE,
                format!("device/{id}/state/update"),
                operation::UPDATE,
            )
            .with_content(json::encode(&result));
        self.report(report, effects);
    }

    fn membership(&mut self, message: &Message, now: i64, effects: &mut Effects) {
        let content = message.decode_content::<Value>().unwrap_or(Value::Null);
        let Some(update) = device::parse_membership_update(&content) else {
            tracing::warn!(resource = %message.router.resource, "membership message without a device list");
            return;
        };
        if message.router.resource.contains("membership/detail") {
            // A full list: whatever this node has that the list lacks is gone.
            let listed: Vec<String> = update
                .added
                .iter()
                .filter_map(Member::from_membership)
                .map(|m| m.id)
                .collect();
            let stale: Vec<String> = self
                .devices
                .keys()
                .filter(|id| !listed.contains(id))
                .cloned()
                .collect();
            for id in stale {
                self.remove(&id, None, now, effects);
            }
        }
        for entry in &update.added {
            match Member::from_membership(entry) {
                Some(member) => self.add_member(member, Some(entry), now, effects),
                None => tracing::warn!(%entry, "membership entry without an id"),
            }
        }
        for entry in &update.removed {
            if let Some(member) = Member::from_membership(entry) {
                self.remove(&member.id, Some(entry), now, effects);
            }
        }
    }

    /// A Device or DeviceModel metamanager stored (`<ns>/<type>/<name>`): models and device
    /// specs are for the mappers, devices are also members.
    fn device_object(&mut self, message: &Message, now: i64, effects: &mut Effects) {
        let resource = &message.router.resource;
        let mut parts = resource.splitn(3, '/');
        let (Some(namespace), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if kind == resource_type::DEVICE || kind == resource_type::DEVICE_MODEL {
            self.registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .object_changed(
                    kind,
                    &message.router.operation,
                    &message.content,
                    format!("{namespace}/{name}"),
                );
        }
        if kind != resource_type::DEVICE {
            return;
        }
        // The resource names the device even when a deletion carries no object.
        let member = Member::from_device_object(&message.content).unwrap_or_else(|| Member {
            id: format!("{namespace}/{name}"),
            name: name.to_owned(),
            description: String::new(),
        });
        match message.router.operation.as_str() {
            operation::DELETE => self.remove(&member.id, None, now, effects),
            _ => self.add_member(member, None, now, effects),
        }
    }

    /// Makes `member` one of this node's devices; tells mappers if it is new.
    fn add_member(
        &mut self,
        member: Member,
        entry: Option<&Value>,
        now: i64,
        effects: &mut Effects,
    ) {
        let announce = entry.cloned().unwrap_or_else(
            || json!({ "id": member.id, "name": member.name, "description": member.description }),
        );
        match self.devices.get_mut(&member.id) {
            Some(device) => {
                if device.name != member.name || device.description != member.description {
                    device.name = member.name;
                    device.description = member.description;
                    effects.writes.push(Write::PutDevice(without_twins(device)));
                }
            }
            None => {
                let device = Device {
                    id: member.id.clone(),
                    name: member.name,
                    description: member.description,
                    ..Device::default()
                };
                effects.writes.push(Write::PutDevice(device.clone()));
                self.devices.insert(member.id, device);
                let updated = device::membership_updated(&announce, true, &new_event_id(), now);
                effects.publish(
                    format!("{NODE_PREFIX}{}/membership/updated", self.node),
                    &updated,
                );
            }
        }
    }

    fn remove(&mut self, id: &str, entry: Option<&Value>, now: i64, effects: &mut Effects) {
        let Some(device) = self.devices.remove(id) else {
            return;
        };
        effects.writes.push(Write::DeleteDevice(id.to_owned()));
        effects.writes.extend(self.outbox.forget_device(id));
        let announce = entry.cloned().unwrap_or_else(
            || json!({ "id": device.id, "name": device.name, "description": device.description }),
        );
        let updated = device::membership_updated(&announce, false, &new_event_id(), now);
        effects.publish(
            format!("{NODE_PREFIX}{}/membership/updated", self.node),
            &updated,
        );
    }

    /// Queues a report for the cloud (its row is written with the batch).
    fn report(&mut self, report: Message, effects: &mut Effects) {
        effects.writes.push(self.outbox.push(report));
        self.reports_changed = true;
    }

    /// Stores `effects`, then publishes them; on a failed write, starts over from the database.
    async fn commit(&mut self, store: &Store, bus: &Bus, effects: Effects) -> anyhow::Result<()> {
        let Effects { writes, publishes } = effects;
        if let Err(err) = apply(store, writes).await? {
            tracing::error!(%err, "storing device twins failed; reloading them from the database");
            let loaded = load(store).await?;
            let mut effects = Effects::default();
            let connected = self.connected;
            *self = Twins::new(&self.node, loaded, self.registry.clone(), &mut effects);
            self.connected = connected;
            if let Err(err) = apply(store, effects.writes).await? {
                tracing::error!(%err, "the device tables cannot be written");
            }
            return Ok(());
        }
        if !bus.contains(EVENTBUS) {
            return Ok(());
        }
        // Never waiting on eventbus keeps the two from waiting on each other (eventbus waits
        // for room here); a full eventbus costs answers to mappers, not stored twins.
        let mut dropped = 0;
        for (topic, payload) in publishes {
            let request = Message::new()
                .with_route(source::TWIN, group::BUS, topic, operation::PUBLISH)
                .with_content(payload);
            if bus.try_send(EVENTBUS, request).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "eventbus is full; twin answers not published");
        }
        Ok(())
    }

    /// Hands due reports to edgehub, without waiting: a full or absent link leaves them for
    /// the next tick. Returns the outbox rows that changed on the way.
    fn send_reports(&mut self, bus: &Bus) -> Vec<Write> {
        if !self.connected || !std::mem::take(&mut self.reports_changed) {
            return Vec::new();
        }
        let (due, writes) = self.outbox.due(Instant::now());
        for report in due {
            let id = report.header.id.clone();
            if bus.try_send(EDGEHUB, report).is_err() {
                self.outbox.unsent(&id);
            }
        }
        writes
    }
}

fn without_twins(device: &Device) -> Device {
    Device {
        twins: BTreeMap::new(),
        ..device.clone()
    }
}

#[cfg(test)]
mod tests;
