//! The kinds this server serves. Objects are schemaless JSON, so this table is all the server
//! knows about a kind: where it lives (group/version/plural), whether it is namespaced, what
//! discovery advertises, and which subresources and field selectors it accepts.

/// Verbs of an ordinary, fully served resource.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces have no `deletecollection` in Kubernetes.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// One served resource (a kind under one group/version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core (legacy) group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `<plural>/status` is served (PUT/PATCH there touch only `.status`, and the main
    /// resource's writes leave `.status` alone).
    pub status_subresource: bool,
    /// Field-selector labels beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group segment of storage keys (`core` for the legacy group).
    pub fn storage_group(&self) -> &'static str {
        if self.group.is_empty() {
            "core"
        } else {
            self.group
        }
    }

    /// `/<group>/<resource>/[<namespace>/]<name>`, as the storage module specifies.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/{}/{}/{ns}/{name}", self.storage_group(), self.plural)
            }
            _ => format!("/{}/{}/{name}", self.storage_group(), self.plural),
        }
    }

    /// The collection prefix: one namespace, or every namespace when `namespace` is `None`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/{}/{}/{ns}/", self.storage_group(), self.plural)
            }
            _ => format!("/{}/{}/", self.storage_group(), self.plural),
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `label` may be used in a field selector on this kind.
    pub fn supports_field(&self, label: &str) -> bool {
        META_FIELDS.contains(&label) || self.field_labels.contains(&label)
    }
}

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        status_subresource: false,
        field_labels: &[],
    }
}

const fn short(mut r: ResourceInfo, names: &'static [&'static str]) -> ResourceInfo {
    r.short_names = names;
    r
}

const fn all(mut r: ResourceInfo) -> ResourceInfo {
    r.categories = &["all"];
    r
}

const fn status(mut r: ResourceInfo) -> ResourceInfo {
    r.status_subresource = true;
    r
}

const fn fields(mut r: ResourceInfo, labels: &'static [&'static str]) -> ResourceInfo {
    r.field_labels = labels;
    r
}

/// Everything served, in discovery order (groups appear in the order of their first resource).
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        verbs: NAMESPACE_VERBS,
        ..fields(
            status(short(
                res("", "v1", "Namespace", "namespaces", "namespace", false),
                &["ns"],
            )),
            &["status.phase"],
        )
    },
    fields(
        status(short(
            res("", "v1", "Node", "nodes", "node", false),
            &["no"],
        )),
        &["spec.unschedulable"],
    ),
    fields(
        all(status(short(
            res("", "v1", "Pod", "pods", "pod", true),
            &["po"],
        ))),
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    short(
        res("", "v1", "ConfigMap", "configmaps", "configmap", true),
        &["cm"],
    ),
    fields(
        res("", "v1", "Secret", "secrets", "secret", true),
        &["type"],
    ),
    all(status(short(
        res("", "v1", "Service", "services", "service", true),
        &["svc"],
    ))),
    short(
        res("", "v1", "Endpoints", "endpoints", "endpoints", true),
        &["ep"],
    ),
    fields(
        short(res("", "v1", "Event", "events", "event", true), &["ev"]),
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    ),
    short(
        res(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        ),
        &["sa"],
    ),
    res(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
    ),
    all(status(short(
        res(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            true,
        ),
        &["deploy"],
    ))),
    all(status(short(
        res(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            "replicaset",
            true,
        ),
        &["rs"],
    ))),
    all(status(short(
        res("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true),
        &["ds"],
    ))),
    all(status(short(
        res(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            true,
        ),
        &["sts"],
    ))),
    fields(
        all(status(res("batch", "v1", "Job", "jobs", "job", true))),
        &["status.successful"],
    ),
    status(short(
        res(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            false,
        ),
        &["crd", "crds"],
    )),
];

/// Looks a resource up by its URL coordinates.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The named (non-core) groups, in discovery order, each with its single served version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Resources of one group/version.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let group = group.to_owned();
    let version = version.to_owned();
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Status subresource verbs, for discovery.
pub fn status_verbs() -> &'static [&'static str] {
    STATUS_VERBS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_storage_layout() {
        let cm = lookup("", "v1", "configmaps").unwrap();
        assert_eq!(cm.key(Some("ns"), "a"), "/core/configmaps/ns/a");
        assert_eq!(cm.prefix(Some("ns")), "/core/configmaps/ns/");
        assert_eq!(cm.prefix(None), "/core/configmaps/");
        let node = lookup("", "v1", "nodes").unwrap();
        assert_eq!(node.key(Some("ignored"), "n1"), "/core/nodes/n1");
        let dep = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(dep.key(Some("x"), "d"), "/apps/deployments/x/d");
        assert_eq!(dep.api_version(), "apps/v1");
    }

    #[test]
    fn table_is_consistent() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert!(
                !RESOURCES[..i]
                    .iter()
                    .any(|o| o.group == r.group && o.plural == r.plural),
                "duplicate {}",
                r.plural
            );
            for s in r.short_names {
                assert!(
                    !RESOURCES[..i].iter().any(|o| o.short_names.contains(s)),
                    "duplicate short name {s}"
                );
            }
        }
        assert_eq!(
            groups(),
            vec![
                ("coordination.k8s.io", "v1"),
                ("apps", "v1"),
                ("batch", "v1"),
                ("apiextensions.k8s.io", "v1")
            ]
        );
        assert!(
            lookup("", "v1", "pods")
                .unwrap()
                .supports_field("spec.nodeName")
        );
        assert!(
            !lookup("", "v1", "configmaps")
                .unwrap()
                .supports_field("spec.nodeName")
        );
    }
}
