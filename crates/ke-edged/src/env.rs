//! A container's environment: literal `env`, `valueFrom` (ConfigMap and Secret keys, pod
//! fields) and `envFrom`, with ConfigMaps and Secrets read through metamanager — from the cloud
//! when it is reachable, from the node's store when it is not.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use serde_json::Value;

const METAMANAGER: &str = "metamanager";

/// Why a container cannot be configured yet (kubelet's `CreateContainerConfigError`).
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// The environment of container `spec` in `pod`, in kubelet's order: `envFrom` first, then
/// `env` (later entries win).
pub async fn resolve(
    bus: &Bus,
    pod: &Value,
    spec: &Value,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut sources = Sources {
        bus,
        namespace,
        cache: BTreeMap::new(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    for from in spec["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, reference) = if from["configMapRef"].is_object() {
            (resource_type::CONFIGMAP, &from["configMapRef"])
        } else {
            (resource_type::SECRET, &from["secretRef"])
        };
        let optional = reference["optional"].as_bool().unwrap_or(false);
        let name = reference["name"].as_str().unwrap_or_default();
        match sources.data(kind, name).await {
            Some(data) => {
                for (key, value) in data {
                    set(&mut env, format!("{prefix}{key}"), value);
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{kind} {namespace}/{name} not found"))),
        }
    }
    for var in spec["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let from = &var["valueFrom"];
        let value = if !from.is_object() {
            Some(var["value"].as_str().unwrap_or_default().to_owned())
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            Some(field(pod, path, pod_ip))
        } else {
            let (kind, reference) = if from["configMapKeyRef"].is_object() {
                (resource_type::CONFIGMAP, &from["configMapKeyRef"])
            } else {
                (resource_type::SECRET, &from["secretKeyRef"])
            };
            let object = reference["name"].as_str().unwrap_or_default();
            let key = reference["key"].as_str().unwrap_or_default();
            let found = sources
                .data(kind, object)
                .await
                .and_then(|data| data.get(key).cloned());
            if found.is_none() && !reference["optional"].as_bool().unwrap_or(false) {
                return Err(ConfigError(format!(
                    "key {key:?} of {kind} {namespace}/{object} not found"
                )));
            }
            found
        };
        if let Some(value) = value {
            set(&mut env, name.to_owned(), value);
        }
    }
    Ok(env)
}

/// The downward API fields kubelet resolves for env.
fn field(pod: &Value, path: &str, pod_ip: &str) -> String {
    match path {
        "status.podIP" => pod_ip.to_owned(),
        path => path
            .split('.')
            .try_fold(pod, |value, key| value.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

struct Sources<'a> {
    bus: &'a Bus,
    namespace: &'a str,
    cache: BTreeMap<(String, String), Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    /// A ConfigMap's data, or a Secret's decoded data; `None` if it does not exist.
    async fn data(&mut self, kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let key = (kind.to_owned(), name.to_owned());
        if let Some(cached) = self.cache.get(&key) {
            return cached.clone();
        }
        let data = self.query(kind, name).await;
        self.cache.insert(key, data.clone());
        data
    }

    async fn query(&self, kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let query = Message::new().with_route(
            source::EDGED,
            group::META,
            format!("{}/{kind}/{name}", self.namespace),
            operation::QUERY,
        );
        let reply = self
            .bus
            .send_sync(METAMANAGER, query, Duration::from_secs(70))
            .await
            .ok()?;
        // The cloud answers with the object; the local store with a list of stored values.
        let object = match &reply.content {
            Value::Array(values) => values
                .first()
                .and_then(Value::as_str)
                .and_then(|v| serde_json::from_str(v).ok())?,
            object if object["metadata"].is_object() => object.clone(),
            _ => return None,
        };
        let secret = kind == resource_type::SECRET;
        let mut data = BTreeMap::new();
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let Some(text) = value.as_str() else { continue };
            let value = if secret {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                text.to_owned()
            };
            data.insert(key.clone(), value);
        }
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pod_fields() {
        let pod =
            json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"nodeName": "e1"}});
        assert_eq!(field(&pod, "metadata.name", ""), "web");
        assert_eq!(field(&pod, "spec.nodeName", ""), "e1");
        assert_eq!(field(&pod, "status.podIP", "10.0.0.7"), "10.0.0.7");
        assert_eq!(field(&pod, "metadata.labels", ""), "");
    }
}
