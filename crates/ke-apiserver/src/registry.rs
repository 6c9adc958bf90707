//! The kinds this server serves. Objects are schemaless JSON, so this catalog is all the server
//! knows about a kind: where it lives (group/version/plural), whether it is namespaced, what
//! discovery advertises, which subresources and field selectors it accepts, its schema and its
//! table columns.
//!
//! The built-in kinds are fixed; custom resources come and go with their
//! CustomResourceDefinitions. A [`Registry`] holds the current [`Catalog`] as an immutable
//! snapshot: a request takes one snapshot and sees one consistent set of kinds even while a CRD
//! is being created, and installing a CRD swaps in a new snapshot.

use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Verbs of an ordinary, fully served resource.
pub const ALL_VERBS: &[&str] = &[
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
/// `pods/binding` and `bindings`: create only.
const CREATE_ONLY: &[&str] = &["create"];
pub const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Where a kind's schema comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    /// A definition in the built-in OpenAPI schemas (`io.k8s.api.core.v1.Pod`).
    Builtin(&'static str),
    /// A CRD version's `openAPIV3Schema`, self-contained (no `$ref`s).
    Custom(Arc<Value>),
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// A simple JSONPath into the object (`.spec.replicas`).
    pub json_path: String,
}

/// One served resource (a kind under one group/version).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group; empty for the core (legacy) group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub verbs: &'static [&'static str],
    pub categories: Vec<String>,
    /// Whether `<plural>/status` is served (PUT/PATCH there touch only `.status`, and the main
    /// resource's writes leave `.status` alone).
    pub status_subresource: bool,
    /// Whether `<plural>/scale` (an `autoscaling/v1` Scale over `spec.replicas`) is served.
    pub scale_subresource: bool,
    /// Field-selector labels beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    pub schema: Schema,
    /// Extra `kubectl get` columns (CRDs); built-in kinds have theirs in [`crate::table`].
    pub columns: Vec<PrinterColumn>,
    /// Served only for creating (`bindings`): not listed, watched or stored under its own key.
    pub create_only: bool,
}

pub type Resource = Arc<ResourceInfo>;

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        group_version(&self.group, &self.version)
    }

    /// The group segment of storage keys (`core` for the legacy group).
    pub fn storage_group(&self) -> &str {
        if self.group.is_empty() {
            "core"
        } else {
            &self.group
        }
    }

    /// `/<group>/<resource>/[<namespace>/]<name>`, as the storage module specifies. The version
    /// is not part of the key: every served version of a CRD reads and writes the same objects.
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

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    pub fn is_custom(&self) -> bool {
        matches!(self.schema, Schema::Custom(_))
    }
}

/// `v1` for the core group, `<group>/<version>` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Builder for the built-in table below.
struct Builtin(ResourceInfo);

impl Builtin {
    fn new(
        gv: (&str, &str),
        kind: &str,
        plural: &str,
        namespaced: bool,
        schema: &'static str,
    ) -> Self {
        Self(ResourceInfo {
            group: gv.0.to_owned(),
            version: gv.1.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: Vec::new(),
            verbs: ALL_VERBS,
            categories: Vec::new(),
            status_subresource: false,
            scale_subresource: false,
            field_labels: &[],
            schema: Schema::Builtin(schema),
            columns: Vec::new(),
            create_only: false,
        })
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.0.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn all(mut self) -> Self {
        self.0.categories = vec!["all".to_owned()];
        self
    }

    fn status(mut self) -> Self {
        self.0.status_subresource = true;
        self
    }

    fn scale(mut self) -> Self {
        self.0.scale_subresource = true;
        self
    }

    fn fields(mut self, labels: &'static [&'static str]) -> Self {
        self.0.field_labels = labels;
        self
    }

    fn verbs(mut self, verbs: &'static [&'static str]) -> Self {
        self.0.verbs = verbs;
        self
    }

    fn create_only(mut self) -> Self {
        self.0.verbs = CREATE_ONLY;
        self.0.create_only = true;
        self
    }
}

const CORE: (&str, &str) = ("", "v1");
const APPS: (&str, &str) = ("apps", "v1");

/// Every built-in kind, in discovery order (groups appear in the order of their first resource).
fn builtins() -> Vec<ResourceInfo> {
    const POD_FIELDS: &[&str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    const EVENT_FIELDS: &[&str] = &[
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
    ];
    let core =
        |kind, plural, namespaced, schema| Builtin::new(CORE, kind, plural, namespaced, schema);
    let apps = |kind, plural, schema| Builtin::new(APPS, kind, plural, true, schema);
    [
        core(
            "Namespace",
            "namespaces",
            false,
            "io.k8s.api.core.v1.Namespace",
        )
        .verbs(NAMESPACE_VERBS)
        .short(&["ns"])
        .status()
        .fields(&["status.phase"]),
        core("Node", "nodes", false, "io.k8s.api.core.v1.Node")
            .short(&["no"])
            .status()
            .fields(&["spec.unschedulable"]),
        core("Pod", "pods", true, "io.k8s.api.core.v1.Pod")
            .short(&["po"])
            .all()
            .status()
            .fields(POD_FIELDS),
        core("Binding", "bindings", true, "io.k8s.api.core.v1.Binding").create_only(),
        core(
            "ConfigMap",
            "configmaps",
            true,
            "io.k8s.api.core.v1.ConfigMap",
        )
        .short(&["cm"]),
        core("Secret", "secrets", true, "io.k8s.api.core.v1.Secret").fields(&["type"]),
        core("Service", "services", true, "io.k8s.api.core.v1.Service")
            .short(&["svc"])
            .all()
            .status(),
        core(
            "Endpoints",
            "endpoints",
            true,
            "io.k8s.api.core.v1.Endpoints",
        )
        .short(&["ep"]),
        core("Event", "events", true, "io.k8s.api.core.v1.Event")
            .short(&["ev"])
            .fields(EVENT_FIELDS),
        core(
            "ServiceAccount",
            "serviceaccounts",
            true,
            "io.k8s.api.core.v1.ServiceAccount",
        )
        .short(&["sa"]),
        Builtin::new(
            ("coordination.k8s.io", "v1"),
            "Lease",
            "leases",
            true,
            "io.k8s.api.coordination.v1.Lease",
        ),
        apps("Deployment", "deployments", "io.k8s.api.apps.v1.Deployment")
            .scale()
            .short(&["deploy"])
            .all()
            .status(),
        apps("ReplicaSet", "replicasets", "io.k8s.api.apps.v1.ReplicaSet")
            .scale()
            .short(&["rs"])
            .all()
            .status(),
        apps("DaemonSet", "daemonsets", "io.k8s.api.apps.v1.DaemonSet")
            .short(&["ds"])
            .all()
            .status(),
        apps(
            "StatefulSet",
            "statefulsets",
            "io.k8s.api.apps.v1.StatefulSet",
        )
        .scale()
        .short(&["sts"])
        .all()
        .status(),
        Builtin::new(
            ("batch", "v1"),
            "Job",
            "jobs",
            true,
            "io.k8s.api.batch.v1.Job",
        )
        .all()
        .status()
        .fields(&["status.successful"]),
        Builtin::new(
            ("discovery.k8s.io", "v1"),
            "EndpointSlice",
            "endpointslices",
            true,
            "io.k8s.api.discovery.v1.EndpointSlice",
        ),
        Builtin::new(
            ("apiextensions.k8s.io", "v1"),
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        )
        .short(&["crd", "crds"])
        .status(),
    ]
    .into_iter()
    .map(|b| b.0)
    .collect()
}

/// An immutable set of served kinds.
#[derive(Debug, Clone)]
pub struct Catalog {
    resources: Vec<Resource>,
}

impl Catalog {
    /// Only the built-in kinds.
    pub fn builtin() -> Catalog {
        Catalog {
            resources: builtins().into_iter().map(Arc::new).collect(),
        }
    }

    /// The built-in kinds plus `custom` (resources of CRDs). A custom resource that would shadow
    /// a built-in one (same group and plural) is left out.
    pub fn with_custom(custom: Vec<ResourceInfo>) -> Catalog {
        let mut catalog = Catalog::builtin();
        for r in custom {
            let taken = catalog
                .resources
                .iter()
                .any(|o| o.group == r.group && o.version == r.version && o.plural == r.plural);
            if !taken {
                catalog.resources.push(Arc::new(r));
            }
        }
        catalog
    }

    /// Looks a resource up by its URL coordinates.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// A built-in kind by group and plural; panics if the table lacks it, which is a bug.
    pub fn builtin_resource(&self, group: &str, plural: &str) -> Resource {
        self.resources
            .iter()
            .find(|r| !r.is_custom() && r.is(group, plural))
            .cloned()
            .unwrap_or_else(|| panic!("built-in resource {plural}.{group} is registered"))
    }

    /// The named (non-core) groups in discovery order, each with its versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => {
                    versions.push(r.version.clone())
                }
                Some(_) => {}
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Resources of one group/version.
    pub fn resources_of<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }

    /// Every stored, namespaced collection once (one version of each CRD), for namespace
    /// deletion.
    pub fn namespaced_collections(&self) -> Vec<Resource> {
        let mut out: Vec<Resource> = Vec::new();
        for r in self
            .resources
            .iter()
            .filter(|r| r.namespaced && !r.create_only)
        {
            if !out.iter().any(|o| o.is(&r.group, &r.plural)) {
                out.push(Arc::clone(r));
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter()
    }
}

/// Kubernetes' version ordering: GA before beta before alpha, higher numbers first within each
/// (`v2 > v1 > v1beta2 > v1beta1 > v1alpha1`), and non-Kubernetes version names last.
fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let minor = |prefix: &str| -> Option<u64> { tail.strip_prefix(prefix)?.parse().ok() };
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = minor("beta") {
        (2, major, n)
    } else if let Some(n) = minor("alpha") {
        (1, major, n)
    } else {
        (0, 0, 0)
    }
}

/// The current catalog, swapped whole when CRDs change.
#[derive(Debug)]
pub struct Registry {
    current: RwLock<Arc<Catalog>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            current: RwLock::new(Arc::new(Catalog::builtin())),
        }
    }
}

impl Registry {
    pub fn snapshot(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace(&self, catalog: Catalog) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_storage_layout() {
        let c = Catalog::builtin();
        let cm = c.lookup("", "v1", "configmaps").unwrap();
        assert_eq!(cm.key(Some("ns"), "a"), "/core/configmaps/ns/a");
        assert_eq!(cm.prefix(Some("ns")), "/core/configmaps/ns/");
        assert_eq!(cm.prefix(None), "/core/configmaps/");
        let node = c.lookup("", "v1", "nodes").unwrap();
        assert_eq!(node.key(Some("ignored"), "n1"), "/core/nodes/n1");
        let dep = c.lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(dep.key(Some("x"), "d"), "/apps/deployments/x/d");
        assert_eq!(dep.api_version(), "apps/v1");
    }

    #[test]
    fn table_is_consistent() {
        let c = Catalog::builtin();
        let all: Vec<&Resource> = c.iter().collect();
        for (i, r) in all.iter().enumerate() {
            assert!(
                !all[..i].iter().any(|o| o.is(&r.group, &r.plural)),
                "duplicate {}",
                r.plural
            );
            for s in &r.short_names {
                assert!(
                    !all[..i].iter().any(|o| o.short_names.contains(s)),
                    "duplicate short name {s}"
                );
            }
        }
        let groups: Vec<String> = c.groups().into_iter().map(|(g, _)| g).collect();
        assert_eq!(
            groups,
            [
                "coordination.k8s.io",
                "apps",
                "batch",
                "discovery.k8s.io",
                "apiextensions.k8s.io"
            ]
        );
        assert!(
            c.lookup("", "v1", "pods")
                .unwrap()
                .supports_field("spec.nodeName")
        );
        assert!(
            !c.lookup("", "v1", "configmaps")
                .unwrap()
                .supports_field("spec.nodeName")
        );
    }

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v1beta2", "v2", "v1beta1", "foo", "v10"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn custom_resources_join_without_shadowing_builtins() {
        let mut widget = Catalog::builtin()
            .lookup("", "v1", "configmaps")
            .unwrap()
            .as_ref()
            .clone();
        widget.group = "example.com".into();
        widget.plural = "widgets".into();
        widget.schema = Schema::Custom(Arc::new(serde_json::json!({"type": "object"})));
        let mut shadow = widget.clone();
        shadow.group = String::new();
        shadow.plural = "pods".into();
        let c = Catalog::with_custom(vec![widget, shadow]);
        assert!(
            c.lookup("example.com", "v1", "widgets")
                .unwrap()
                .is_custom()
        );
        assert!(!c.lookup("", "v1", "pods").unwrap().is_custom());
        assert!(
            c.groups()
                .iter()
                .any(|(g, v)| g == "example.com" && v == &["v1"])
        );
    }
}
