//! Events about pods, as kubelet records them (`kubectl describe pod` shows them): what
//! started, what failed, what was killed and why. Sent through metamanager when the cloud is
//! there and dropped when it is not — events are a courtesy, never a reason to wait.

use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use serde_json::json;

use crate::METAMANAGER;
use crate::model::Pod;

#[derive(Debug, Clone, Copy)]
pub enum Type {
    Normal,
    Warning,
}

#[derive(Clone)]
pub(crate) struct Events {
    bus: Bus,
    node: String,
}

impl Events {
    pub fn new(bus: Bus, node: String) -> Events {
        Events { bus, node }
    }

    /// Records `reason` for `pod` (and one of its containers).
    pub fn record(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: Type,
        reason: &str,
        message: String,
    ) {
        let now = crate::clock::now(false);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}.{nanos:x}", pod.metadata.name);
        let mut involved = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace(),
            "name": pod.metadata.name,
            "uid": pod.uid(),
        });
        if let Some(container) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{container}}}"));
        }
        let event = json!({
            "metadata": {"name": name, "namespace": pod.namespace()},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": match kind { Type::Normal => "Normal", Type::Warning => "Warning" },
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        });
        let resource = format!("{}/{}/{name}", pod.namespace(), resource_type::EVENT);
        let message = Message::new()
            .with_route(source::EDGED, group::META, resource, operation::INSERT)
            .with_content(event);
        let bus = self.bus.clone();
        tokio::spawn(async move {
            if let Err(err) = bus.send(METAMANAGER, message).await {
                tracing::debug!(error = %err, "event not recorded");
            }
        });
    }
}
