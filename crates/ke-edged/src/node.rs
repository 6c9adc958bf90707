//! The node's own lifecycle, as kubelet runs it: register, report status, renew the lease — all
//! through metamanager, so none of it needs the cloud to be up. Registration waits for the
//! cloud; status and lease reports made offline are kept by metamanager and sent later.

use std::collections::BTreeMap;
use std::time::Duration;

use ke_bus::Bus;
use ke_message::constants::{operation, resource_type};
use serde_json::{Value, json};

use crate::cloud::Answer;
use crate::host::{Machine, Pressure};
use crate::runtime::RuntimeInfo;

/// The label that makes cloudcore treat a node as an edge node.
pub const EDGE_ROLE_LABEL: &str = "node-role.kubernetes.io/edge";
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub status_update_frequency: Duration,
    pub lease_duration_seconds: i32,
    pub max_pods: i32,
    pub kubelet_version: String,
}

pub(crate) struct NodeAgent {
    settings: NodeSettings,
    machine: Machine,
    bus: Bus,
    registered: bool,
    node_uid: Option<String>,
    lease_exists: bool,
    started: String,
    runtime: RuntimeInfo,
}

impl NodeAgent {
    pub fn new(settings: NodeSettings, machine: Machine, bus: Bus) -> NodeAgent {
        NodeAgent {
            settings,
            machine,
            bus,
            registered: false,
            node_uid: None,
            lease_exists: false,
            started: now(),
            runtime: RuntimeInfo::default(),
        }
    }

    /// Registers the node, then reports its status and renews its lease every
    /// `nodeStatusUpdateFrequency` until `cancel`; the status carries the latest
    /// `runtime_info`, and `registered` tells the pods' side whether the cloud knows the node.
    pub async fn run(
        mut self,
        cancel: tokio_util::sync::CancellationToken,
        runtime_info: tokio::sync::watch::Receiver<RuntimeInfo>,
        registered: tokio::sync::watch::Sender<bool>,
    ) {
        let mut report = tokio::time::interval(self.settings.status_update_frequency);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut register = tokio::time::interval(crate::REGISTER_RETRY);
        register.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = register.tick(), if !self.registered => {
                    if cancel.run_until_cancelled(self.register()).await.is_none() {
                        break;
                    }
                    if self.registered {
                        // Report at once rather than up to a period later.
                        report.reset_immediately();
                    }
                }
                _ = report.tick() => {
                    self.runtime = runtime_info.borrow().clone();
                    if cancel.run_until_cancelled(self.report()).await.is_none() {
                        break;
                    }
                }
                _ = cancel.cancelled() => break,
            }
            let now = self.registered;
            registered.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
    }

    /// Registers the node; only the cloud can answer, so offline this fails quickly and is
    /// retried.
    async fn register(&mut self) {
        let node = self.node_object();
        let resource = format!("null/{}/{}", resource_type::NODE, self.settings.name);
        match self.request(&resource, operation::INSERT, node).await {
            Answer::Object(node) => {
                self.node_uid = node["metadata"]["uid"].as_str().map(str::to_owned);
                self.registered = true;
                tracing::info!(node = %self.settings.name, "node registered");
            }
            Answer::Failed { reason, .. } if reason == "AlreadyExists" => {
                self.registered = true;
                tracing::info!(node = %self.settings.name, "node was registered before");
            }
            Answer::Failed { reason, message } => {
                tracing::debug!(node = %self.settings.name, reason, message, "node registration failed; retrying");
            }
        }
    }

    /// Reports status and renews the lease. Offline, metamanager keeps both for later.
    async fn report(&mut self) {
        self.report_status().await;
        if self.registered {
            self.renew_lease().await;
        }
    }

    async fn report_status(&mut self) {
        let patch = json!({ "status": self.status() });
        let resource = format!("null/{}/{}", resource_type::NODE_PATCH, self.settings.name);
        // JSON in a string, as upstream's kubelet bridge sends it (golden 07).
        let content = Value::String(patch.to_string());
        if let Answer::Object(node) = self.request(&resource, operation::PATCH, content).await {
            self.registered = true;
            if let Some(uid) = node["metadata"]["uid"].as_str() {
                self.node_uid = Some(uid.to_owned());
            }
        }
    }

    async fn renew_lease(&mut self) {
        let resource = format!(
            "{LEASE_NAMESPACE}/{}/{}",
            resource_type::LEASE,
            self.settings.name
        );
        let lease = self.lease_object();
        let op = if self.lease_exists {
            operation::UPDATE
        } else {
            operation::INSERT
        };
        match self.request(&resource, op, lease).await {
            Answer::Object(_) => self.lease_exists = true,
            Answer::Failed { reason, .. } if reason == "AlreadyExists" => {
                // Renewed on the next tick with an update.
                self.lease_exists = true;
            }
            Answer::Failed { reason, .. } if reason == "NotFound" => self.lease_exists = false,
            Answer::Failed { .. } => {}
        }
    }

    async fn request(&self, resource: &str, op: &str, content: Value) -> Answer {
        crate::cloud::request(&self.bus, resource, op, content).await
    }

    fn labels(&self) -> Value {
        let arch = self.machine.architecture;
        let mut labels = BTreeMap::from([
            ("beta.kubernetes.io/arch".to_owned(), arch.to_owned()),
            ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), arch.to_owned()),
            (
                "kubernetes.io/hostname".to_owned(),
                self.settings.name.clone(),
            ),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("node-role.kubernetes.io/agent".to_owned(), String::new()),
            (EDGE_ROLE_LABEL.to_owned(), String::new()),
        ]);
        labels.extend(self.settings.labels.clone());
        json!(labels)
    }

    pub(crate) fn node_object(&self) -> Value {
        json!({
            "metadata": {
                "name": self.settings.name,
                "labels": self.labels(),
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {},
            "status": self.status(),
        })
    }

    fn status(&self) -> Value {
        let now = now();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": kind,
                "status": status,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.started,
                "reason": reason,
                "message": message,
            })
        };
        let m = &self.machine;
        let capacity = m.capacity(self.settings.max_pods);
        let pressure = Pressure::measure(&m.root_directory);
        let pressure_condition = |kind: &str, under: bool, yes: (&str, &str), no: (&str, &str)| {
            let (reason, message) = if under { yes } else { no };
            condition(kind, if under { "True" } else { "False" }, reason, message)
        };
        let mut status = json!({
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                pressure_condition("MemoryPressure", pressure.memory,
                    ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                    ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
                pressure_condition("DiskPressure", pressure.disk,
                    ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                    ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
                pressure_condition("PIDPressure", pressure.pids,
                    ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
                    ("KubeletHasSufficientPID", "kubelet has sufficient PID available")),
                condition("Ready", "True", "EdgeReady", "edge is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.settings.ip},
                {"type": "Hostname", "address": self.settings.name},
            ],
            "nodeInfo": {
                "machineID": m.machine_id,
                "systemUUID": m.machine_id,
                "bootID": m.boot_id,
                "kernelVersion": m.kernel_version,
                "osImage": m.os_image,
                "containerRuntimeVersion": self.runtime.version,
                "kubeletVersion": self.settings.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": m.architecture,
            },
        });
        if !self.runtime.images.is_empty() {
            status["images"] = json!(self.runtime.images);
        }
        status
    }

    fn lease_object(&self) -> Value {
        let mut metadata = json!({"name": self.settings.name, "namespace": LEASE_NAMESPACE});
        if let Some(uid) = &self.node_uid {
            metadata["ownerReferences"] = json!([{
                "apiVersion": "v1", "kind": "Node", "name": self.settings.name, "uid": uid,
            }]);
        }
        json!({
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.settings.name,
                "leaseDurationSeconds": self.settings.lease_duration_seconds,
                // A MicroTime: six fractional digits (golden 13).
                "renewTime": crate::clock::now(true),
            },
        })
    }
}

fn now() -> String {
    crate::clock::now(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_carries_the_edge_role_and_configured_labels() {
        let settings = NodeSettings {
            name: "edge-1".into(),
            ip: "192.0.2.7".into(),
            labels: BTreeMap::from([("site".to_owned(), "plant-3".to_owned())]),
            status_update_frequency: Duration::from_secs(10),
            lease_duration_seconds: 40,
            max_pods: 110,
            kubelet_version: "v1.32.10-kubeedge-rs".into(),
        };
        let agent = NodeAgent::new(settings, Machine::detect("/"), Bus::new());
        let node = agent.node_object();
        assert_eq!(node["metadata"]["labels"][EDGE_ROLE_LABEL], "");
        assert_eq!(node["metadata"]["labels"]["site"], "plant-3");
        assert_eq!(node["status"]["addresses"][0]["address"], "192.0.2.7");
        assert_eq!(node["status"]["conditions"][3]["type"], "Ready");
        let renew = agent.lease_object()["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(renew.split('.').nth(1).map(str::len), Some(7), "{renew}");
    }
}
