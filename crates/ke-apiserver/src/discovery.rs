//! Legacy discovery documents (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`) and
//! `/version`. kubectl 1.32 first asks for aggregated discovery
//! (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) and falls back to
//! these when the response's content type is plain `application/json`.

use serde_json::{Value, json};

use crate::registry::{Catalog, ResourceInfo, STATUS_VERBS, group_version};

/// The Kubernetes version whose API we mimic (KubeEdge v1.23 vendors v1.32.10).
pub const GIT_VERSION: &str = "v1.32.10-kubeedge-rs";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": group_version(group, v), "version": v }))
        .collect();
    json!({ "name": group, "versions": entries, "preferredVersion": entries[0] })
}

pub fn group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub fn group(catalog: &Catalog, name: &str) -> Option<Value> {
    let (g, v) = catalog.groups().into_iter().find(|(g, _)| g == name)?;
    let mut doc = group_doc(&g, &v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// What kube-apiserver advertises for the pod subresources besides `status`.
const POD_SUBRESOURCES: &[(&str, &str, &[&str])] = &[
    ("attach", "PodAttachOptions", &["create", "get"]),
    ("binding", "Binding", &["create"]),
    ("exec", "PodExecOptions", &["create", "get"]),
    ("log", "Pod", &["get"]),
    ("portforward", "PodPortForwardOptions", &["create", "get"]),
];

fn subresource_entry(r: &ResourceInfo, sub: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({
        "name": format!("{}/{sub}", r.plural),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    })
}

pub fn resource_list(catalog: &Catalog, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in catalog.resources_of(group, version) {
        resources.push(resource_entry(r));
        if r.status_subresource {
            resources.push(subresource_entry(r, "status", &r.kind, STATUS_VERBS));
        }
        if r.scale_subresource {
            let mut scale = subresource_entry(r, "scale", "Scale", STATUS_VERBS);
            scale["group"] = json!("autoscaling");
            scale["version"] = json!("v1");
            resources.push(scale);
        }
        if r.is("", "pods") {
            for (sub, kind, verbs) in POD_SUBRESOURCES {
                resources.push(subresource_entry(r, sub, kind, verbs));
            }
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let c = Catalog::builtin();
        let core = resource_list(&c, "", "v1");
        assert_eq!(core["groupVersion"], "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status"));
        assert!(!names.contains(&"configmaps/status"));
        let apps = resource_list(&c, "apps", "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let gl = group_list(&c);
        assert_eq!(
            gl["groups"][1]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert_eq!(group(&c, "batch").unwrap()["kind"], "APIGroup");
        assert!(group(&c, "nope").is_none());
    }
}
