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
}
