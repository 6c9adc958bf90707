//! OpenAPI v3, as kubectl 1.32 reads it: `/openapi/v3` lists one document per group/version,
//! and each document carries the paths of that group/version (kubectl's validation looks for a
//! PATCH operation with a `fieldValidation` parameter; `explain` finds the kind through the
//! operations' `x-kubernetes-group-version-kind`) and every schema they reference (documents
//! are self-contained: kubectl resolves `$ref`s within one document only).
//!
//! The built-in schemas are generated from k8s-openapi (`builtin.json`, see
//! `openapi-gen/`), completed here with the extensions kubectl and the server need
//! ([`extensions`]). A CRD's schema is its `openAPIV3Schema`, with `apiVersion`, `kind` and
//! `metadata` added as kube-apiserver publishes it.

mod documents;
mod extensions;

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::registry::{Catalog, ResourceInfo, Schema};
use crate::schema::Node;

pub use documents::Documents;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

static BUILTIN: LazyLock<Map<String, Value>> = LazyLock::new(load_builtin);

/// The built-in definitions, by name, with extensions and group-version-kinds.
pub fn definitions() -> &'static Map<String, Value> {
    &BUILTIN
}

fn load_builtin() -> Map<String, Value> {
    // Generated and checked in; the tests load it, so a broken file fails CI, not a server.
    let mut defs: Map<String, Value> =
        serde_json::from_str(include_str!("builtin.json")).expect("builtin.json is valid JSON");
    for entry in extensions::FIELDS {
        let (_, property, strategy, merge_key, list_type, map_keys) = *entry;
        let Some(field) = defs
            .get_mut(&extensions::definition(entry))
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (key, value) in [
            ("x-kubernetes-patch-strategy", strategy),
            ("x-kubernetes-patch-merge-key", merge_key),
            ("x-kubernetes-list-type", list_type),
        ] {
            if !value.is_empty() {
                field.insert(key.into(), json!(value));
            }
        }
        if !map_keys.is_empty() {
            field.insert("x-kubernetes-list-map-keys".into(), json!(map_keys));
        }
    }
    for r in Catalog::builtin().iter() {
        if let Schema::Builtin(name) = r.schema
            && let Some(Value::Object(def)) = defs.get_mut(name)
        {
            def.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
        }
    }
    defs.insert(
        PATCH.into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    defs
}

/// `{group, kind, version}`, exactly these keys (kubectl compares them as a whole).
pub fn gvk(r: &ResourceInfo) -> Value {
    json!({ "group": r.group, "kind": r.kind, "version": r.version })
}

/// The name a kind's schema has in the documents: the built-in definition, or
/// `<reversed group>.<version>.<Kind>` for a CRD (`io.kubeedge.devices.v1beta1.Device`).
pub fn schema_name(r: &ResourceInfo) -> String {
    match &r.schema {
        Schema::Builtin(name) => (*name).to_owned(),
        Schema::Custom(_) => {
            let reversed: Vec<&str> = r.group.split('.').rev().collect();
            format!("{}.{}.{}", reversed.join("."), r.version, r.kind)
        }
    }
}

/// A CRD version's schema as served: its `openAPIV3Schema` with the standard object fields.
pub fn custom_schema(open_api_v3: &Value) -> Value {
    let mut schema = open_api_v3.clone();
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    let props = schema
        .as_object_mut()
        .expect("made an object above")
        .entry("properties")
        .or_insert_with(|| json!({}));
    if let Value::Object(p) = props {
        p.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        p.entry("kind").or_insert_with(|| json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        p.insert(
            "metadata".into(),
            json!({
                "description": "Standard object's metadata.",
                "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
            }),
        );
    }
    schema
}

/// The schema of a kind, ready to walk alongside one of its objects.
pub fn root(r: &ResourceInfo) -> Option<Node<'_>> {
    let defs = definitions();
    match &r.schema {
        Schema::Builtin(name) => defs.get(*name).map(|s| Node::new(defs, s)),
        Schema::Custom(s) => Some(Node::new(defs, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PatchMeta;

    #[test]
    fn every_builtin_kind_has_a_schema_with_its_gvk() {
        for r in Catalog::builtin().iter() {
            let node = root(r).unwrap_or_else(|| panic!("{} has no schema", r.kind));
            assert_eq!(
                node.extension("x-kubernetes-group-version-kind"),
                Some(&json!([gvk(r)]))
            );
        }
    }

    #[test]
    fn extensions_land_on_existing_fields() {
        let defs = definitions();
        for entry in extensions::FIELDS {
            let def = extensions::definition(entry);
            let field = defs[&def]["properties"].get(entry.1);
            assert!(field.is_some(), "{def}.{} does not exist", entry.1);
        }
        let pods = Catalog::builtin().builtin_resource("", "pods");
        let pod = root(&pods).unwrap();
        let spec = pod.property("spec").unwrap();
        let meta = PatchMeta::of(spec.property_raw("containers"));
        assert!(meta.merge);
        assert_eq!(meta.merge_key.as_deref(), Some("name"));
        assert!(PatchMeta::of(spec.property_raw("volumes")).retain_keys);
    }

    #[test]
    fn custom_schema_names_and_metadata() {
        let mut r = Catalog::builtin()
            .builtin_resource("", "configmaps")
            .as_ref()
            .clone();
        r.group = "devices.kubeedge.io".into();
        r.version = "v1beta1".into();
        r.kind = "Device".into();
        r.schema = Schema::Custom(std::sync::Arc::new(custom_schema(
            &json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
        )));
        assert_eq!(schema_name(&r), "io.kubeedge.devices.v1beta1.Device");
        let node = root(&r).unwrap();
        assert!(
            node.property("metadata")
                .unwrap()
                .property("labels")
                .is_some()
        );
        assert!(node.property("spec").is_some());
    }
}
