//! CustomResourceDefinitions: what apiextensions-apiserver does with one. A stored CRD is checked
//! ([`validate`]), given the status that tells clients it is served ([`set_status`]), and turned
//! into one [`ResourceInfo`] per served version ([`resources`]), which the server adds to its
//! catalog. Versions are not converted (`conversion.strategy: None`): every version reads and
//! writes the same stored objects, with `apiVersion` set to the version asked for.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::{ALL_VERBS, PrinterColumn, ResourceInfo, Schema};
use crate::{meta, openapi};

/// A CRD field that is not acceptable, as `(field path, message)`.
pub type Invalid = (String, String);

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn versions(crd: &Value) -> &[Value] {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The checks of apiextensions' validation that clients run into; the first failure wins.
pub fn validate(crd: &Value) -> Result<(), Invalid> {
    let bad = |field: &str, message: String| Err((field.to_owned(), message));
    let group = text(crd, "/spec/group");
    let plural = text(crd, "/spec/names/plural");
    let kind = text(crd, "/spec/names/kind");
    if group.is_empty() {
        return bad("spec.group", "Required value".into());
    }
    if !group.contains('.') || meta::validate_subdomain(group).is_err() {
        return bad(
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        );
    }
    if plural.is_empty() {
        return bad("spec.names.plural", "Required value".into());
    }
    if let Err(m) = meta::validate_label(plural) {
        return bad(
            "spec.names.plural",
            format!("Invalid value: \"{plural}\": {m}"),
        );
    }
    if kind.is_empty() {
        return bad("spec.names.kind", "Required value".into());
    }
    let name = text(crd, "/metadata/name");
    if name != format!("{plural}.{group}") {
        return bad(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        );
    }
    match text(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        other => {
            return bad(
                "spec.scope",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
                ),
            );
        }
    }
    let versions = versions(crd);
    if versions.is_empty() {
        return bad(
            "spec.versions",
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        );
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        return bad(
            "spec.versions",
            format!(
                "Invalid value: {storage}: must have exactly one version marked as storage version"
            ),
        );
    }
    for (i, v) in versions.iter().enumerate() {
        let vname = v["name"].as_str().unwrap_or_default();
        if meta::validate_label(vname).is_err() {
            return bad(
                &format!("spec.versions[{i}].name"),
                format!("Invalid value: \"{vname}\": must be a valid DNS label"),
            );
        }
        if !v["schema"]["openAPIV3Schema"].is_object() {
            return bad(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            );
        }
        if versions[..i].iter().any(|o| o["name"] == v["name"]) {
            return bad(
                &format!("spec.versions[{i}].name"),
                format!("Duplicate value: \"{vname}\""),
            );
        }
    }
    Ok(())
}

/// The status apiextensions-apiserver sets once the names are accepted and the resource is
/// served: `acceptedNames`, the `NamesAccepted` and `Established` conditions (kept with their
/// transition times when already true), and `storedVersions` (every version ever used for
/// storage, as the field's contract says).
pub fn set_status(crd: &mut Value, previous: Option<&Value>) {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = names.clone();
    if let Some(a) = accepted.as_object_mut() {
        let kind = text(&names, "/kind").to_owned();
        a.entry("singular")
            .or_insert_with(|| json!(kind.to_ascii_lowercase()));
        a.entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let old_status = previous.and_then(|p| p.get("status"));
    let condition = |type_: &str, reason: &str, message: &str| {
        let since = old_status
            .and_then(|s| s["conditions"].as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == type_ && c["status"] == "True")
            })
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(meta::now);
        json!({
            "type": type_,
            "status": "True",
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        })
    };
    let mut stored: Vec<Value> = old_status
        .and_then(|s| s["storedVersions"].as_array())
        .cloned()
        .unwrap_or_default();
    for v in versions(crd).iter().filter(|v| v["storage"] == true) {
        if !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    let status = json!({
        "acceptedNames": accepted,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
    if let Some(root) = crd.as_object_mut() {
        root.insert("status".into(), status);
    }
}

/// The resources a CRD serves: one per version with `served: true`.
pub fn resources(crd: &Value) -> Vec<ResourceInfo> {
    let names = &crd["spec"]["names"];
    let kind = names["kind"].as_str().unwrap_or_default();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    versions(crd)
        .iter()
        .filter(|v| v["served"] != false)
        .map(|v| ResourceInfo {
            group: text(crd, "/spec/group").to_owned(),
            version: v["name"].as_str().unwrap_or_default().to_owned(),
            kind: kind.to_owned(),
            plural: names["plural"].as_str().unwrap_or_default().to_owned(),
            singular: names["singular"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| kind.to_ascii_lowercase()),
            namespaced: text(crd, "/spec/scope") == "Namespaced",
            short_names: strings(&names["shortNames"]),
            verbs: ALL_VERBS,
            categories: strings(&names["categories"]),
            status_subresource: v.pointer("/subresources/status").is_some(),
            scale_subresource: false,
            field_labels: &[],
            schema: Schema::Custom(Arc::new(openapi::custom_schema(
                v.pointer("/schema/openAPIV3Schema").unwrap_or(&json!({
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true
                })),
            ))),
            columns: v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: text(c, "/name").to_owned(),
                    type_: text(c, "/type").to_owned(),
                    format: text(c, "/format").to_owned(),
                    description: text(c, "/description").to_owned(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: text(c, "/jsonPath").to_owned(),
                })
                .collect(),
            create_only: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}},
                     "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1alpha1", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            }
        })
    }

    #[test]
    fn served_versions_become_resources() {
        let rs = resources(&widget());
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].api_version(), "example.com/v1");
        assert_eq!(rs[0].singular, "widget");
        assert!(rs[0].status_subresource && !rs[1].status_subresource);
        assert_eq!(rs[0].columns[0].json_path, ".spec.size");
        assert_eq!(rs[0].key(Some("ns"), "a"), rs[1].key(Some("ns"), "a"));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate(&widget()), Ok(()));
        let mut bad = widget();
        bad["metadata"]["name"] = json!("widget.example.com");
        assert_eq!(validate(&bad).unwrap_err().0, "metadata.name");
        let mut bad = widget();
        bad["spec"]["versions"][1]["storage"] = json!(true);
        assert!(
            validate(&bad)
                .unwrap_err()
                .1
                .contains("exactly one version")
        );
        let mut bad = widget();
        bad["spec"]["group"] = json!("example");
        assert_eq!(validate(&bad).unwrap_err().0, "spec.group");
    }

    #[test]
    fn status_is_established_and_keeps_history() {
        let mut crd = widget();
        set_status(&mut crd, None);
        let conds = crd["status"]["conditions"].as_array().unwrap();
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        );
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
        let before = crd.clone();
        let mut next = widget();
        next["spec"]["versions"][0]["storage"] = json!(false);
        next["spec"]["versions"][1]["storage"] = json!(true);
        set_status(&mut next, Some(&before));
        assert_eq!(next["status"]["storedVersions"], json!(["v1", "v1beta1"]));
        assert_eq!(
            next["status"]["conditions"][1]["lastTransitionTime"],
            before["status"]["conditions"][1]["lastTransitionTime"]
        );
    }
}
