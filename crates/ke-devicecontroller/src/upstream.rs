//! Edge → cloud: what a node's devicetwin reports, written into the device's DeviceStatus.
//!
//! * `device/<ns>/<name>/twin/edge_updated` (`DeviceTwinUpdate`): the declared twins become
//!   `status.twins` entries ([`crate::twin`]); answered with `"OK"` on resource `twin`, group
//!   `twin` (golden frame 28), which clears the edge's pending confirmation.
//! * `device/<ns>/<name>/state/update` (a JSON string of `DeviceStateUpdate`):
//!   `status.state` and `status.lastOnlineTime`; answered the same way once written.
//! * `membership/detail`: upstream answers nothing and neither do we; the edge re-asks.
//!
//! Only the node a Device is bound to may report for it. DeviceStatus has no status
//! subresource, so writes are merge patches of the object itself, guarded by its
//! resourceVersion so concurrent twin reports cannot drop each other's entries.

use std::collections::HashMap;
use std::sync::Mutex;

use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{MESSAGE_SUCCESSFUL_CONTENT, group, operation, resource_type, source};
use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::downstream::{Devices, Key, post_params};
use crate::kinds::{self, API_VERSION};
use crate::twin::apply_twin_update;

pub(crate) struct Upstream {
    client: Client,
    bus: Bus,
    devices: Devices,
    /// Per device, what was last written to its DeviceStatus.
    twins: Mutex<HashMap<Key, Written>>,
}

/// The twins last written and the DeviceStatus resourceVersion after the write.
#[derive(Clone)]
struct Written {
    twins: Vec<Value>,
    version: String,
}

/// What a device report is about, parsed from `node/<node>/device/<ns>/<name>/<what>`.
struct Report<'a> {
    node: &'a str,
    namespace: &'a str,
    name: &'a str,
    what: &'a str,
}

fn parse(resource: &str) -> Option<Report<'_>> {
    let rest = resource.strip_prefix("node/")?;
    let (node, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("device/")?;
    let mut parts = rest.splitn(3, '/');
    let (namespace, name, what) = (parts.next()?, parts.next()?, parts.next()?);
    (!node.is_empty() && !namespace.is_empty() && !name.is_empty()).then_some(Report {
        node,
        namespace,
        name,
        what,
    })
}

impl Upstream {
    pub(crate) fn new(client: Client, bus: Bus, devices: Devices) -> Upstream {
        Upstream {
            client,
            bus,
            devices,
            twins: Mutex::default(),
        }
    }

    pub(crate) async fn handle(&self, message: Message) {
        let resource = message.router.resource.as_str();
        if resource.contains("membership/detail") {
            return;
        }
        let Some(report) = parse(resource) else {
            tracing::debug!(%resource, "device message this controller does not handle");
            return;
        };
        let declared = {
            let devices = self.devices.lock().expect("device cache lock poisoned");
            match devices.get(&(report.namespace.to_owned(), report.name.to_owned())) {
                Some(device) if device.node.as_deref() == Some(report.node) => {
                    device.properties.clone()
                }
                Some(_) => {
                    tracing::warn!(
                        node = report.node,
                        device = report.name,
                        "report for a device bound to another node; ignored"
                    );
                    return;
                }
                None => {
                    tracing::debug!(
                        node = report.node,
                        device = report.name,
                        "report for an unknown device; ignored"
                    );
                    return;
                }
            }
        };
        let written = match report.what {
            "twin/edge_updated" => {
                let twin = message
                    .decode_content::<Value>()
                    .ok()
                    .and_then(|c| c.get("twin").cloned());
                match twin {
                    Some(twin) => self.write_twins(&report, &twin, &declared).await,
                    None => Err("twin report without a twin map".to_owned()),
                }
            }
            "state/update" => match message.decode_content::<Value>() {
                Ok(content) => self.write_state(&report, &content).await,
                Err(err) => Err(format!("state report: {err}")),
            },
            other => {
                tracing::debug!(
                    what = other,
                    "device report this controller does not handle"
                );
                return;
            }
        };
        match written {
            Ok(()) => self.confirm(&message, report.node).await,
            Err(err) => {
                tracing::warn!(node = report.node, device = report.name, %err, "device report not written; the edge will resend it")
            }
        }
    }

    /// The `"OK"` that clears the edge's pending confirmation (golden frame 28).
    async fn confirm(&self, request: &Message, node: &str) {
        let reply = Message::new()
            .with_parent_id(request.header.id.clone())
            .with_route(
                source::DEVICE_CONTROLLER,
                group::TWIN,
                format!("node/{node}/{}", resource_type::TWIN),
                operation::RESPONSE,
            )
            .with_content(MESSAGE_SUCCESSFUL_CONTENT);
        if let Err(err) = self.bus.send(source::CLOUD_HUB, reply).await {
            tracing::debug!(error = %err, "twin confirmation not handed to cloudhub");
        }
    }

    async fn write_twins(
        &self,
        report: &Report<'_>,
        twin: &Value,
        declared: &[String],
    ) -> Result<(), String> {
        let key = (report.namespace.to_owned(), report.name.to_owned());
        let api = kinds::device_statuses(&self.client, report.namespace);
        // One retry after a conflict, from a fresh read.
        for _ in 0..2 {
            let cached = self
                .twins
                .lock()
                .expect("twin cache lock poisoned")
                .get(&key)
                .cloned();
            let current = match cached {
                Some(cached) => cached,
                None => match api.get_opt(report.name).await.map_err(|e| e.to_string())? {
                    Some(status) => Written {
                        twins: status
                            .data
                            .pointer("/status/twins")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                        version: status.metadata.resource_version.unwrap_or_default(),
                    },
                    None => return Err("no DeviceStatus yet".into()),
                },
            };
            let twins = apply_twin_update(&current.twins, twin, declared);
            let version = current.version;
            let patch = json!({
                "metadata": { "resourceVersion": version },
                "status": { "twins": twins },
            });
            match api
                .patch(report.name, &patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    let version = updated.metadata.resource_version.unwrap_or_default();
                    self.twins
                        .lock()
                        .expect("twin cache lock poisoned")
                        .insert(key, Written { twins, version });
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    self.twins
                        .lock()
                        .expect("twin cache lock poisoned")
                        .remove(&key);
                }
                Err(err) => {
                    self.twins
                        .lock()
                        .expect("twin cache lock poisoned")
                        .remove(&key);
                    return Err(err.to_string());
                }
            }
        }
        Err("DeviceStatus kept changing".into())
    }

    async fn write_state(&self, report: &Report<'_>, content: &Value) -> Result<(), String> {
        let device = content
            .get("device")
            .ok_or("state report without a device")?;
        let mut status = serde_json::Map::new();
        for field in ["state", "lastOnlineTime"] {
            if let Some(value) = device.get(field).and_then(Value::as_str) {
                status.insert(field.into(), json!(value));
            }
        }
        let patch = json!({ "status": status });
        let api = kinds::device_statuses(&self.client, report.namespace);
        let updated = api
            .patch(report.name, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| e.to_string())?;
        // The twins cache's resourceVersion is stale now; keep the twins, drop the guard.
        let key = (report.namespace.to_owned(), report.name.to_owned());
        if let Some(entry) = self
            .twins
            .lock()
            .expect("twin cache lock poisoned")
            .get_mut(&key)
        {
            entry.version = updated.metadata.resource_version.unwrap_or_default();
        }
        Ok(())
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some("cloudcore".into()),
        ..Default::default()
    }
}

/// The DeviceStatus of a Device: same name and namespace, owned by the Device (so it goes
/// when the Device goes). Created when missing; an existing one is left as it is.
pub(crate) async fn ensure_device_status(
    client: &Client,
    key: &(String, String),
    device_uid: &str,
) {
    let (namespace, name) = key;
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "DeviceStatus",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [{
                "apiVersion": API_VERSION,
                "kind": "Device",
                "name": name,
                "uid": device_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {},
        "status": {},
    });
    let Ok(status) = serde_json::from_value::<DynamicObject>(body) else {
        return;
    };
    match kinds::device_statuses(client, namespace)
        .create(&post_params(), &status)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => tracing::warn!(%namespace, %name, error = %err, "DeviceStatus not created"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_resources_parse_with_the_node_prefix() {
        let r = parse("node/edge-1/device/default/thermometer-01/twin/edge_updated").unwrap();
        assert_eq!(
            (r.node, r.namespace, r.name, r.what),
            ("edge-1", "default", "thermometer-01", "twin/edge_updated")
        );
        let r = parse("node/edge-1/device/default/t/state/update").unwrap();
        assert_eq!(r.what, "state/update");
        assert!(parse("node/edge-1/membership/detail").is_none());
        assert!(parse("device/default/t/twin/edge_updated").is_none());
        assert!(parse("node//device/default/t/x").is_none());
    }
}
