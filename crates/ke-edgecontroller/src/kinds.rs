//! The Kubernetes kinds behind the resource-type tokens edges use (`configmap`, `lease`, …).

use ke_message::constants::resource_type;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

/// A kind an edge may name, with what it takes to reach it through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub token: &'static str,
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
    pub const LEASE: Kind = Kind {
        token: resource_type::LEASE,
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
    };
}

/// Every kind an edge may query.
const KINDS: &[Kind] = &[
    Kind::POD,
    Kind::CONFIGMAP,
    Kind::SECRET,
    Kind::NODE,
    Kind::EVENT,
    Kind::LEASE,
    Kind::core(resource_type::SERVICE, "Service", "services", true),
    Kind::core(resource_type::ENDPOINTS, "Endpoints", "endpoints", true),
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

impl Kind {
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

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }

    /// The API for objects of this kind in `namespace` (ignored for cluster-scoped kinds).
    pub fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.resource();
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_is_listed_once() {
        for kind in KINDS {
            assert_eq!(Kind::by_token(kind.token), Some(*kind));
        }
        assert_eq!(
            Kind::by_token("lease").unwrap().api_version(),
            "coordination.k8s.io/v1"
        );
        assert_eq!(Kind::by_token("nope"), None);
    }
}
