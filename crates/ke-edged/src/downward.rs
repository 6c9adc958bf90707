//! The downward API: what a container may learn about its pod, for env (`fieldRef`,
//! `resourceFieldRef`) and for downwardAPI volumes.

use std::collections::BTreeMap;

use crate::model::{Pod, ResourceFieldRef};
use crate::resources::{self, Allocatable};

/// What edged knows about a pod beyond its spec.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
    pub node: Allocatable,
}

/// The value of `fieldRef.fieldPath`; `None` for a path the API does not allow.
pub fn field(pod: &Pod, path: &str, facts: &PodFacts) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: &BTreeMap<String, String>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => pod.namespace().to_owned(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => multiline(&meta.labels),
        "metadata.annotations" => multiline(&meta.annotations),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            return keyed("metadata.labels['", &meta.labels)
                .or_else(|| keyed("metadata.annotations['", &meta.annotations));
        }
    };
    Some(value)
}

/// The value of a `resourceFieldRef`; `container` is the referring container unless the
/// reference names another.
pub fn resource(
    pod: &Pod,
    container: &str,
    reference: &ResourceFieldRef,
    facts: &PodFacts,
) -> Option<String> {
    let name = if reference.container_name.is_empty() {
        container
    } else {
        &reference.container_name
    };
    let container = pod.all_containers().find(|c| c.name == name)?;
    resources::field(
        container,
        &reference.resource,
        reference.divisor.as_ref(),
        facts.node,
    )
}

/// Labels or annotations as a downwardAPI file holds them: `key="value"` lines, values quoted
/// as Go's `%q` does.
fn multiline(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={}\n", serde_json::Value::from(value.as_str())))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pod_fields() {
        let pod = Pod::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "tier": "a\"b"}},
            "spec": {"nodeName": "e1"},
        }))
        .unwrap();
        let facts = PodFacts {
            pod_ip: "10.0.0.7".into(),
            host_ip: "192.0.2.1".into(),
            node: Allocatable {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
            },
        };
        let f = |path| field(&pod, path, &facts);
        assert_eq!(f("metadata.name").as_deref(), Some("web"));
        assert_eq!(f("metadata.namespace").as_deref(), Some("shop"));
        assert_eq!(f("spec.nodeName").as_deref(), Some("e1"));
        assert_eq!(f("status.podIP").as_deref(), Some("10.0.0.7"));
        assert_eq!(f("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(f("metadata.labels['none']").as_deref(), Some(""));
        assert_eq!(
            f("metadata.labels").as_deref(),
            Some("app=\"web\"\ntier=\"a\\\"b\"\n")
        );
        assert_eq!(f("spec.containers"), None);
    }
}
