//! Which object a message is about: the key that coalescing, ordering and sync records use.

use std::fmt;

use ke_message::Message;
use ke_message::constants::{NULL_NAMESPACE, operation};
use ke_message::resource::trim_node_prefix;
use serde_json::Value;

/// Identity of the object an ACK message carries.
///
/// Upstream keys its ACK store by `metadata.uid` only. A UID names one incarnation of an object,
/// so a deleted-and-recreated pod with the same name never coalesces with its predecessor.
///
/// Messages without a UID fall back to their wire resource (`<ns>/<type>/<name>`). Upstream
/// instead drops content that is not an object and files objects without a UID under the empty
/// key, where unrelated objects overwrite each other. Dropping an ACK message means the edge
/// silently diverges until the next update; keying by resource still coalesces only versions of
/// the same named object, and resourceVersions are cluster-wide etcd revisions, so "newest wins"
/// stays correct across incarnations of a name. Such objects get no [`SyncRecord`](crate::SyncRecord)
/// because an ObjectSync is named after the UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// `content.metadata.uid`.
    Uid(String),
    /// The wire resource, for content without a UID.
    Resource(String),
}

impl ObjectKey {
    pub fn uid(&self) -> Option<&str> {
        match self {
            ObjectKey::Uid(uid) => Some(uid),
            ObjectKey::Resource(_) => None,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Uid(uid) => write!(f, "uid:{uid}"),
            ObjectKey::Resource(resource) => write!(f, "resource:{resource}"),
        }
    }
}

/// The key of an ACK message's object: its UID, else its wire resource; `None` when the message
/// has neither (empty resource), which the queue rejects.
pub fn object_key(msg: &Message) -> Option<ObjectKey> {
    if let Some(uid) = metadata_str(&msg.content, "uid") {
        return Some(ObjectKey::Uid(uid.to_owned()));
    }
    let resource = trim_node_prefix(&msg.router.resource);
    (!resource.is_empty()).then(|| ObjectKey::Resource(resource.to_owned()))
}

/// What a sync record needs to name the object besides its UID: upstream's ObjectSync spec holds
/// the object's name and kind, and lives in the object's namespace (ClusterObjectSync when the
/// namespace is `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// `None` for cluster-scoped objects (namespace token `null`).
    pub namespace: Option<String>,
    /// The resource type token, e.g. `pod`, `configmap`, `devicemodel`.
    pub resource_type: String,
    pub name: String,
    /// `apiVersion` from the content when the sender filled in TypeMeta (informer objects
    /// usually do not; a CRD-backed store maps `resource_type` to a group/version then, as
    /// upstream's `GetMessageAPIVersion` does).
    pub api_version: Option<String>,
}

impl ObjectRef {
    /// Reads namespace, type and name from the resource, falling back to the content's metadata
    /// for the name (list-shaped resources such as `default/pod` carry no name).
    pub fn from_message(msg: &Message) -> ObjectRef {
        let wire = trim_node_prefix(&msg.router.resource);
        let mut tokens = wire.splitn(3, '/');
        let namespace = tokens.next().unwrap_or("");
        let resource_type = tokens.next().unwrap_or("");
        let name = tokens
            .next()
            .filter(|n| !n.is_empty())
            .or_else(|| metadata_str(&msg.content, "name"))
            .unwrap_or("");
        ObjectRef {
            namespace: (!namespace.is_empty() && namespace != NULL_NAMESPACE)
                .then(|| namespace.to_owned()),
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            api_version: msg
                .content
                .get("apiVersion")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }
    }
}

/// Upstream's `isDeleteMessage`: operation `delete`, or an object with a `deletionTimestamp`
/// (graceful deletion in progress, which the edge must see even without a newer version).
pub fn is_delete(msg: &Message) -> bool {
    msg.router.operation == operation::DELETE
        || msg
            .content
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|ts| !ts.is_null())
}

fn metadata_str<'a>(content: &'a Value, field: &str) -> Option<&'a str> {
    content
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_by_uid_when_present_else_by_wire_resource() {
        let with_uid = Message::default()
            .with_route(
                "edgecontroller",
                "resource",
                "node/n1/default/pod/web",
                "update",
            )
            .with_content(json!({"metadata": {"uid": "u-1", "name": "web"}}));
        assert_eq!(object_key(&with_uid), Some(ObjectKey::Uid("u-1".into())));

        let without_uid = Message::default()
            .with_route(
                "edgecontroller",
                "resource",
                "node/n1/default/pod/web",
                "update",
            )
            .with_content(json!({"metadata": {"uid": ""}}));
        let wire_form = Message::default()
            .with_route("edgecontroller", "resource", "default/pod/web", "update")
            .with_content("not an object");
        let want = Some(ObjectKey::Resource("default/pod/web".into()));
        assert_eq!(object_key(&without_uid), want);
        assert_eq!(object_key(&wire_form), want, "both forms key alike");

        assert_eq!(object_key(&Message::default()), None);
    }

    #[test]
    fn object_ref_reads_the_resource_and_type_meta() {
        let msg = Message::default()
            .with_route(
                "devicecontroller",
                "resource",
                "node/n1/default/device/t1",
                "insert",
            )
            .with_content(json!({"apiVersion": "devices.kubeedge.io/v1beta1", "metadata": {}}));
        assert_eq!(
            ObjectRef::from_message(&msg),
            ObjectRef {
                namespace: Some("default".into()),
                resource_type: "device".into(),
                name: "t1".into(),
                api_version: Some("devices.kubeedge.io/v1beta1".into()),
            }
        );
        let cluster = Message::default()
            .with_route("edgecontroller", "resource", "null/node/n1", "update")
            .with_content(json!({"metadata": {"name": "n1"}}));
        let r = ObjectRef::from_message(&cluster);
        assert_eq!(
            (r.namespace, r.name.as_str(), r.api_version),
            (None, "n1", None)
        );
    }

    #[test]
    fn delete_is_the_operation_or_a_deletion_timestamp() {
        let op =
            Message::default().with_route("edgecontroller", "resource", "default/pod/p", "delete");
        assert!(is_delete(&op));
        let graceful = Message::default()
            .with_route("edgecontroller", "resource", "default/pod/p", "update")
            .with_content(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert!(is_delete(&graceful));
        let live = Message::default()
            .with_route("edgecontroller", "resource", "default/pod/p", "update")
            .with_content(json!({"metadata": {"deletionTimestamp": null}}));
        assert!(!is_delete(&live));
    }
}
