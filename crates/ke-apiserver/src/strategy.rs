//! Per-kind rules for writes, in the spirit of kube-apiserver's registry strategies: what a
//! create resets, what every write normalizes or defaults, and what makes an object invalid.
//! The generic verbs in [`crate::handlers`] call these and know nothing about particular kinds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::status::ApiError;
use crate::{crd, defaults, meta, services};

/// Before a create, once the server-owned metadata is set.
pub fn prepare_create(res: &ResourceInfo, obj: &mut Value) {
    reset_status_on_create(res, obj);
    normalize(res, obj, None);
}

/// Once the final name is known (it may come from `generateName`).
pub fn named(res: &ResourceInfo, obj: &mut Value, name: &str) {
    if res.is("", "namespaces") {
        namespace_defaults(obj, name);
    }
    if res.is("batch", "jobs") {
        job_selector(obj, name);
    }
}

/// kube-apiserver generates a Job's selector from its uid (unless `manualSelector`), and labels
/// the pod template to match, so a Job's pods are its own even when names repeat.
fn job_selector(obj: &mut Value, name: &str) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let Some(template) = template.as_object_mut() else {
        return;
    };
    let meta = template.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Value::Object(labels) = labels {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name),
            ("controller-uid", uid.as_str()),
            ("job-name", name),
        ] {
            labels.insert(k.into(), json!(v));
        }
    }
}

/// Before an update (PUT, PATCH, a status write), once the server-owned metadata is restored.
pub fn prepare_update(res: &ResourceInfo, current: &Value, next: &mut Value) {
    if res.is("", "services") {
        services::keep_allocations(current, next);
    }
    normalize(res, next, Some(current));
}

/// The last check before a write.
pub fn validate(res: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    let check = match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => meta::validate_label(name),
        ("", "services") => meta::validate_dns1035(name),
        _ => meta::validate_subdomain(name),
    };
    check.map_err(|m| ApiError::invalid(res, name, "metadata.name", &m))?;
    if is_crd(res) {
        crd::validate(obj)
            .map_err(|(field, message)| ApiError::invalid(res, name, &field, &message))?;
    }
    if res.is("batch", "jobs") {
        let policy = obj
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(policy, "OnFailure" | "Never") {
            return Err(ApiError::invalid(
                res,
                name,
                "spec.template.spec.restartPolicy",
                &format!(
                    "Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""
                ),
            ));
        }
    }
    Ok(())
}

pub fn is_crd(res: &ResourceInfo) -> bool {
    res.is("apiextensions.k8s.io", "customresourcedefinitions")
}

fn reset_status_on_create(res: &ResourceInfo, obj: &mut Value) {
    if !res.status_subresource {
        return;
    }
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (res.group.as_str(), res.plural.as_str()) {
        // Nodes may be created with their status (kubelet registers that way).
        ("", "nodes") => {}
        ("", "pods") => {
            root.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        _ => {
            root.shift_remove("status");
        }
    }
}

fn namespace_defaults(obj: &mut Value, name: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let labels = root
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(Value::Object(l)) = labels {
        l.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if let Value::Object(s) = spec
        && !s.contains_key("finalizers")
    {
        s.insert("finalizers".into(), json!(["kubernetes"]));
    }
    root.insert("status".into(), json!({"phase": "Active"}));
}

/// Conversions and defaults kube-apiserver applies on every write of a kind.
fn normalize(res: &ResourceInfo, obj: &mut Value, current: Option<&Value>) {
    if res.is("", "secrets") {
        secret_string_data(obj);
    }
    if is_crd(res) {
        crd::set_status(obj, current);
    }
    defaults::apply(res, obj);
}

/// A Secret's `stringData` is write-only: merged into `data`, base64-encoded.
fn secret_string_data(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(sd)) = root.shift_remove("stringData") {
        let data = root.entry("data").or_insert_with(|| json!({}));
        if let Value::Object(d) = data {
            for (k, v) in sd {
                let text = v.as_str().unwrap_or_default();
                d.insert(k, json!(STANDARD.encode(text)));
            }
        }
    }
}
