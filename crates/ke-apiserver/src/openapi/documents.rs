//! The `/openapi/v3` index and the per-group/version documents, built once per catalog.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{PATCH, definitions, gvk, schema_name};
use crate::discovery::GIT_VERSION;
use crate::registry::{Catalog, ResourceInfo, Schema, group_version};

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

/// Every document of one catalog, serialized.
#[derive(Debug)]
pub struct Documents {
    index: Bytes,
    /// By index key (`api/v1`, `apis/apps/v1`).
    docs: BTreeMap<String, Bytes>,
}

impl Documents {
    pub fn build(catalog: &Catalog) -> Documents {
        let mut gvs: Vec<(String, String)> = Vec::new();
        for r in catalog.iter() {
            let gv = (r.group.clone(), r.version.clone());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
        let mut docs = BTreeMap::new();
        let mut index = Map::new();
        for (group, version) in gvs {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let doc = document(catalog, &group, &version);
            let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            index.insert(
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&bytes)) }),
            );
            docs.insert(key, bytes);
        }
        let index = json!({ "paths": index });
        Documents {
            index: Bytes::from(serde_json::to_vec(&index).unwrap_or_default()),
            docs,
        }
    }

    pub fn index(&self) -> Bytes {
        self.index.clone()
    }

    /// The document at `key` (`api/v1`, `apis/apps/v1`).
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.docs.get(key).cloned()
    }
}

/// FNV-1a, uppercase hex: the index only has to change when a document does.
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn document(catalog: &Catalog, group: &str, version: &str) -> Value {
    let defs = definitions();
    let mut schemas = Map::new();
    let mut roots: Vec<String> = vec![STATUS.into(), DELETE_OPTIONS.into(), PATCH.into()];
    let mut paths = Map::new();
    for r in catalog.resources_of(group, version) {
        let name = schema_name(r);
        match &r.schema {
            Schema::Builtin(def) => roots.push((*def).to_owned()),
            Schema::Custom(schema) => {
                let mut s = schema.as_ref().clone();
                if let Value::Object(m) = &mut s {
                    m.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
                }
                collect_refs(&s, &mut roots);
                schemas.insert(name.clone(), s);
            }
        }
        for (path, item) in resource_paths(r, &name) {
            paths.insert(path, item);
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(def) = roots.pop() {
        if !seen.insert(def.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&def) {
            collect_refs(schema, &mut roots);
            schemas.insert(def, schema.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": GIT_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// Pushes the definition names `schema` references.
fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            if let Some(name) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(name.to_owned());
            }
            for v in m.values() {
                collect_refs(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn query(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "uniqueItems": true } })
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ]
    .iter()
    .map(|n| query(n, ""))
    .collect()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn ok(name: &str) -> Value {
    json!({ "200": { "description": "OK", "content": { "application/json": { "schema": schema_ref(name) } } } })
}

struct Op<'a> {
    r: &'a ResourceInfo,
    schema: &'a str,
    /// `list`, `get`, `post`, `put`, `patch`, `delete`, `deletecollection`.
    action: &'static str,
    id_suffix: String,
}

impl Op<'_> {
    fn build(&self) -> Value {
        let kind = &self.r.kind;
        let mut params = match self.action {
            "list" => list_params(),
            "post" | "put" => write_params(),
            "patch" => {
                let mut p = write_params();
                p.push(query(
                    "force",
                    "Force is going to \"force\" Apply requests.",
                ));
                p
            }
            "delete" | "deletecollection" => vec![
                query("dryRun", ""),
                query("gracePeriodSeconds", ""),
                query("propagationPolicy", ""),
            ],
            _ => vec![],
        };
        if self.action == "deletecollection" {
            params.extend(list_params());
        }
        let mut op = json!({
            "operationId": format!("{}{kind}{}", self.action, self.id_suffix),
            "parameters": params,
            "responses": ok(self.schema),
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": gvk(self.r),
        });
        match self.action {
            "post" | "put" => {
                op["requestBody"] = json!({ "content": { "application/json": { "schema": schema_ref(self.schema) } }, "required": true });
            }
            "patch" => {
                let mut content = Map::new();
                let mut types = vec![
                    "application/apply-patch+yaml",
                    "application/json-patch+json",
                    "application/merge-patch+json",
                ];
                // Custom resources take no strategic merge patch (kubectl then sends a JSON
                // merge patch), built-in kinds do.
                if !self.r.is_custom() {
                    types.push("application/strategic-merge-patch+json");
                }
                for t in types {
                    content.insert(t.into(), json!({ "schema": schema_ref(PATCH) }));
                }
                op["requestBody"] = json!({ "content": content, "required": true });
            }
            "delete" | "deletecollection" => {
                op["requestBody"] = json!({ "content": { "application/json": { "schema": schema_ref(DELETE_OPTIONS) } } });
                op["responses"] = ok(STATUS);
            }
            _ => {}
        }
        op
    }
}

/// The paths kube-apiserver publishes for one resource.
fn resource_paths(r: &ResourceInfo, schema: &str) -> Vec<(String, Value)> {
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}", group_version(&r.group, &r.version))
    };
    let scoped = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let scope_params = || -> Vec<Value> {
        if r.namespaced {
            vec![path_param("namespace")]
        } else {
            vec![]
        }
    };
    let op = |action: &'static str, suffix: &str| {
        Op {
            r,
            schema,
            action,
            id_suffix: suffix.to_owned(),
        }
        .build()
    };
    let mut out = Vec::new();
    if r.create_only {
        let mut item = json!({ "post": op("post", "") });
        item["parameters"] = json!(scope_params());
        out.push((scoped, item));
        return out;
    }
    let mut collection = json!({
        "get": op("list", ""),
        "post": op("post", ""),
    });
    if r.verbs.contains(&"deletecollection") {
        collection["delete"] = op("deletecollection", "");
    }
    collection["parameters"] = json!(scope_params());
    out.push((scoped.clone(), collection));
    let mut named_params = scope_params();
    named_params.push(path_param("name"));
    let mut item = json!({
        "get": op("get", ""),
        "put": op("put", ""),
        "patch": op("patch", ""),
        "delete": op("delete", ""),
    });
    item["parameters"] = json!(named_params.clone());
    out.push((format!("{scoped}/{{name}}"), item));
    if r.status_subresource {
        let mut status = json!({
            "get": op("get", "Status"),
            "put": op("put", "Status"),
            "patch": op("patch", "Status"),
        });
        status["parameters"] = json!(named_params);
        out.push((format!("{scoped}/{{name}}/status"), status));
    }
    if r.namespaced {
        out.push((
            format!("{prefix}/{}", r.plural),
            json!({ "get": op("list", "ForAllNamespaces") }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_self_contained_and_patchable() {
        let docs = Documents::build(&Catalog::builtin());
        let index: Value = serde_json::from_slice(&docs.index()).unwrap();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let apps: Value = serde_json::from_slice(&docs.get("apis/apps/v1").unwrap()).unwrap();
        let schemas = apps["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&apps, &mut refs);
        for r in refs {
            assert!(
                schemas.contains_key(&r),
                "{r} is referenced but not in the document"
            );
        }
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        let core: Value = serde_json::from_slice(&docs.get("api/v1").unwrap()).unwrap();
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some());
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"].is_object());
    }
}
