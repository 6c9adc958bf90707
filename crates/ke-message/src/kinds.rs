//! The Kubernetes kinds behind the resource-type tokens on the wire (`pod`, `configmap`, `lease`…):
//! group, version, kind, plural and scope. The cloud uses them to reach the API server, the edge
//! to key its local store (metaserver keys are `/<group>/<version>/<plural>/<ns>/<name>`).

use crate::constants::resource_type;

/// A kind that appears on the wire as a resource-type token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub token: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Kind {
    pub const POD: Kind = Kind::core(resource_type::POD, "Pod", "pods", true);
    pub const CONFIGMAP: Kind =
        Kind::core(resource_type::CONFIGMAP, "ConfigMap", "configmaps", true);
    pub const SECRET: Kind = Kind::core(resource_type::SECRET, "Secret", "secrets", true);
    pub const NODE: Kind = Kind::core(resource_type::NODE, "Node", "nodes", false);
    pub const EVENT: Kind = Kind::core(resource_type::EVENT, "Event", "events", true);
    pub const SERVICE: Kind = Kind::core(resource_type::SERVICE, "Service", "services", true);
    pub const ENDPOINTS: Kind =
        Kind::core(resource_type::ENDPOINTS, "Endpoints", "endpoints", true);
    pub const LEASE: Kind = Kind {
        token: resource_type::LEASE,
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
    };

    const fn core(
        token: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
    ) -> Kind {
        Kind {
            token,
            group: "",
            version: "v1",
            kind,
            plural,
            namespaced,
        }
    }

    pub fn by_token(token: &str) -> Option<Kind> {
        KINDS.iter().find(|k| k.token == token).copied()
    }

    /// The kind served at `/<group>/<version>/<plural>` (`group` empty for `/api/v1`).
    pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<Kind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .copied()
    }

    /// Every kind with a wire token.
    pub fn all() -> &'static [Kind] {
        KINDS
    }

    /// `v1` or `<group>/<version>`, as in an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A metaserver key (upstream's `KeyFunc`): `/<group or core>/<version>/<plural>` for a kind,
/// then `/<namespace or null>` and `/<name>` as far as they are given. Used for `meta_v2` rows
/// and in the `Application`s an edge sends the cloud.
pub fn metaserver_key(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> String {
    let group = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    let mut key = format!("/{group}/{}/{}", kind.version, kind.plural);
    let namespace = namespace.filter(|ns| !ns.is_empty());
    match (namespace, name) {
        (Some(ns), Some(name)) => key.push_str(&format!("/{ns}/{name}")),
        (Some(ns), None) => key.push_str(&format!("/{ns}")),
        (None, Some(name)) => key.push_str(&format!("/null/{name}")),
        (None, None) => {}
    }
    key
}

/// A parsed metaserver key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub kind: Kind,
    /// `None` for cluster scope (`null`) or a key without one.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Parses what [`metaserver_key`] builds; `None` for malformed keys and kinds without a token.
pub fn parse_metaserver_key(key: &str) -> Option<KeyParts> {
    let mut parts = key.strip_prefix('/')?.trim_end_matches('/').split('/');
    let group = match parts.next()? {
        "core" => "",
        group => group,
    };
    let (version, plural) = (parts.next()?, parts.next()?);
    let kind = Kind::by_plural(group, version, plural)?;
    let namespace = parts
        .next()
        .filter(|ns| *ns != crate::constants::NULL_NAMESPACE && !ns.is_empty())
        .map(str::to_owned);
    let name = parts.next().filter(|n| !n.is_empty()).map(str::to_owned);
    if parts.next().is_some() {
        return None;
    }
    Some(KeyParts {
        kind,
        namespace,
        name,
    })
}

const KINDS: &[Kind] = &[
    Kind::POD,
    Kind::CONFIGMAP,
    Kind::SECRET,
    Kind::NODE,
    Kind::EVENT,
    Kind::LEASE,
    Kind::SERVICE,
    Kind::ENDPOINTS,
    Kind::core(
        resource_type::PERSISTENT_VOLUME,
        "PersistentVolume",
        "persistentvolumes",
        false,
    ),
    Kind::core(
        resource_type::PERSISTENT_VOLUME_CLAIM,
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    Kind {
        token: resource_type::VOLUME_ATTACHMENT,
        group: "storage.k8s.io",
        version: "v1",
        kind: "VolumeAttachment",
        plural: "volumeattachments",
        namespaced: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_and_plural_is_listed_once() {
        for kind in KINDS {
            assert_eq!(Kind::by_token(kind.token), Some(*kind));
            assert_eq!(
                Kind::by_plural(kind.group, kind.version, kind.plural),
                Some(*kind)
            );
        }
        assert_eq!(
            Kind::by_token("lease").unwrap().api_version(),
            "coordination.k8s.io/v1"
        );
        assert_eq!(Kind::by_token("nope"), None);
    }

    #[test]
    fn metaserver_keys_round_trip() {
        let key = metaserver_key(Kind::POD, Some("default"), Some("web"));
        assert_eq!(key, "/core/v1/pods/default/web");
        let parts = parse_metaserver_key(&key).unwrap();
        assert_eq!(
            (
                parts.kind,
                parts.namespace.as_deref(),
                parts.name.as_deref()
            ),
            (Kind::POD, Some("default"), Some("web"))
        );
        assert_eq!(
            metaserver_key(Kind::NODE, None, Some("e1")),
            "/core/v1/nodes/null/e1"
        );
        assert_eq!(
            parse_metaserver_key("/core/v1/nodes/null/e1")
                .unwrap()
                .namespace,
            None
        );
        assert_eq!(
            metaserver_key(Kind::LEASE, Some("kube-node-lease"), None),
            "/coordination.k8s.io/v1/leases/kube-node-lease"
        );
        assert!(parse_metaserver_key("/core/v1/widgets/x/y").is_none());
        assert!(parse_metaserver_key("core/v1/pods").is_none());
        assert!(parse_metaserver_key("/core/v1/pods/a/b/c").is_none());
    }
}
