//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets: an `autoscaling/v1`
//! Scale view of `spec.replicas`, which `kubectl scale` and autoscalers read and write.

use serde_json::{Value, json};

use crate::patch::{self, PatchType};
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// The Scale of a workload object.
pub fn of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut selector: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    selector.sort();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": { "replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

/// The replica count a PUT body or a patch of the Scale asks for.
pub fn requested(
    res: &ResourceInfo,
    current: &Value,
    patch_kind: Option<PatchType>,
    body: &[u8],
) -> Result<i64, ApiError> {
    let scale = match patch_kind {
        Some(kind) => patch::apply(kind, None, &of(current), body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not a valid Scale: {e}"))
        })?,
    };
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && patch_kind.is_none()
        && current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(
            res,
            current["metadata"]["name"].as_str().unwrap_or_default(),
        ));
    }
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    match scale.pointer("/spec/replicas") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r >= 0) => Ok(n.as_i64().unwrap_or(0)),
        Some(v) => Err(ApiError::invalid(
            res,
            name,
            "spec.replicas",
            &format!("Invalid value: {v}: must be greater than or equal to 0"),
        )),
        None => Ok(0),
    }
}
