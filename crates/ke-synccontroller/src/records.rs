//! The ObjectSync / ClusterObjectSync records (`reliablesyncs.kubeedge.io/v1alpha1`), in
//! upstream's shape: name `<node>.<object uid>`, in the object's namespace (cluster-scoped
//! objects get a ClusterObjectSync), `spec.{objectAPIVersion, objectKind, objectName}`,
//! `status.objectResourceVersion`.

use ke_delivery::ObjectRef;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{Value, json};

pub const GROUP: &str = "reliablesyncs.kubeedge.io";
pub const VERSION: &str = "v1alpha1";

/// Which of the two record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Namespaced,
    Cluster,
}

impl Scope {
    pub fn of(object: &ObjectRef) -> Scope {
        if object.namespace.is_some() {
            Scope::Namespaced
        } else {
            Scope::Cluster
        }
    }

    fn resource(self) -> ApiResource {
        let (kind, plural) = match self {
            Scope::Namespaced => ("ObjectSync", "objectsyncs"),
            Scope::Cluster => ("ClusterObjectSync", "clusterobjectsyncs"),
        };
        ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: format!("{GROUP}/{VERSION}"),
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    pub fn api(self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self == Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &self.resource())
            }
            _ => Api::all_with(client.clone(), &self.resource()),
        }
    }
}

/// `<node>.<uid>`.
pub(crate) fn record_name(node: &str, uid: &str) -> String {
    format!("{node}.{uid}")
}

/// Splits a record name into node and uid: the uid is after the last dot, so node names may
/// contain dots (upstream's `getNodeName` / `getObjectUID`).
pub(crate) fn split_record_name(name: &str) -> Option<(&str, &str)> {
    let (node, uid) = name.rsplit_once('.')?;
    (!node.is_empty() && !uid.is_empty()).then_some((node, uid))
}

/// apiVersion and Kind of the object behind a resource-type token, as upstream's
/// `GetMessageAPIVersion` / `GetMessageResourceType` give them.
pub(crate) fn type_of(object: &ObjectRef) -> Option<(String, &'static str)> {
    let (core, kind) = match object.resource_type.as_str() {
        "pod" => (true, "Pod"),
        "configmap" => (true, "ConfigMap"),
        "secret" => (true, "Secret"),
        "service" => (true, "Service"),
        "endpoints" => (true, "Endpoints"),
        "node" => (true, "Node"),
        "persistentvolume" => (true, "PersistentVolume"),
        "persistentvolumeclaim" => (true, "PersistentVolumeClaim"),
        "device" => (false, "Device"),
        "devicemodel" => (false, "DeviceModel"),
        _ => return None,
    };
    let api_version = object.api_version.clone().unwrap_or_else(|| {
        if core {
            "v1".to_owned()
        } else {
            "devices.kubeedge.io/v1beta1".to_owned()
        }
    });
    Some((api_version, kind))
}

/// The API of the objects a record describes: plural from the kind by upstream's
/// `UnsafeKindToResource` rule (`Endpoints` stays `endpoints`).
pub(crate) fn object_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let lower = kind.to_ascii_lowercase();
    let plural = if lower == "endpoints" {
        lower
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural,
    };
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A new record's body (status is written separately: the CRDs have a status subresource).
pub(crate) fn new_record(node: &str, uid: &str, object: &ObjectRef) -> Option<DynamicObject> {
    let (api_version, kind) = type_of(object)?;
    let scope = Scope::of(object);
    let mut metadata = json!({ "name": record_name(node, uid) });
    if let Some(ns) = &object.namespace {
        metadata["namespace"] = json!(ns);
    }
    let body = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": match scope { Scope::Namespaced => "ObjectSync", Scope::Cluster => "ClusterObjectSync" },
        "metadata": metadata,
        "spec": {
            "objectAPIVersion": api_version,
            "objectKind": kind,
            "objectName": object.name,
        },
    });
    serde_json::from_value(body).ok()
}

/// A record read back from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub node: String,
    pub uid: String,
    pub object: ObjectRef,
    pub version: u64,
}

pub(crate) fn parse_record(record: &DynamicObject) -> Option<Loaded> {
    let name = record.metadata.name.as_deref()?;
    let (node, uid) = split_record_name(name)?;
    let spec = record.data.get("spec")?;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = field(spec, "objectKind");
    let version = record
        .data
        .get("status")
        .map(|s| field(s, "objectResourceVersion"))
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    Some(Loaded {
        node: node.to_owned(),
        uid: uid.to_owned(),
        object: ObjectRef {
            namespace: record.metadata.namespace.clone(),
            resource_type: kind.to_ascii_lowercase(),
            name: field(spec, "objectName"),
            api_version: Some(field(spec, "objectAPIVersion")).filter(|v| !v.is_empty()),
        },
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_keep_dotted_node_names() {
        assert_eq!(record_name("edge.site-1", "u-1"), "edge.site-1.u-1");
        assert_eq!(
            split_record_name("edge.site-1.u-1"),
            Some(("edge.site-1", "u-1"))
        );
        assert_eq!(split_record_name("nodot"), None);
        assert_eq!(split_record_name(".u"), None);
    }

    #[test]
    fn a_new_record_round_trips_through_parse() {
        let object = ObjectRef {
            namespace: Some("default".into()),
            resource_type: "devicemodel".into(),
            name: "m".into(),
            api_version: None,
        };
        let mut record = new_record("n1", "u-9", &object).unwrap();
        assert_eq!(record.data["spec"]["objectKind"], "DeviceModel");
        assert_eq!(
            record.data["spec"]["objectAPIVersion"],
            "devices.kubeedge.io/v1beta1"
        );
        record.data["status"] = json!({"objectResourceVersion": "42"});
        let loaded = parse_record(&record).unwrap();
        assert_eq!(loaded.node, "n1");
        assert_eq!(loaded.uid, "u-9");
        assert_eq!(loaded.version, 42);
        assert_eq!(loaded.object.resource_type, "devicemodel");
        assert_eq!(loaded.object.namespace.as_deref(), Some("default"));
        assert_eq!(Scope::of(&loaded.object), Scope::Namespaced);

        let node = ObjectRef {
            namespace: None,
            resource_type: "node".into(),
            name: "n1".into(),
            api_version: None,
        };
        let record = new_record("n1", "u-1", &node).unwrap();
        assert_eq!(record.types.unwrap().kind, "ClusterObjectSync");
        assert!(record.metadata.namespace.is_none());
        assert!(
            new_record(
                "n1",
                "u",
                &ObjectRef {
                    resource_type: "weird".into(),
                    ..node
                }
            )
            .is_none()
        );
    }
}
