//! Strategic merge patch, as kube-apiserver applies it (`StrategicMergeMapPatch`). Maps merge
//! key by key; a list merges only when its field says `x-kubernetes-patch-strategy: merge`
//! (lists of objects by their `x-kubernetes-patch-merge-key`, lists of scalars as a set), and is
//! replaced otherwise. The directives clients send:
//!
//! * `$patch: replace | delete` in a map; `{<key>: v, $patch: delete}` and `{$patch: replace}`
//!   as list elements;
//! * `$retainKeys: [...]`: drop the live keys not listed;
//! * `$setElementOrder/<field>: [...]`: the order of a merged list;
//! * `$deleteFromPrimitiveList/<field>: [...]`: remove scalars from a merged list.
//!
//! Patch metadata comes from the kind's schema ([`crate::openapi`]), the same extensions
//! kubectl computes its patches from.

use serde_json::{Map, Value};

use super::PatchError;
use crate::schema::{Node, PatchMeta};

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const RETAIN_KEYS: &str = "$retainKeys";
const PATCH: &str = "$patch";

fn invalid(reason: impl Into<String>) -> PatchError {
    PatchError::Strategic(reason.into())
}

/// Applies `patch` to `original`, both JSON objects, guided by `node` (the kind's schema).
pub fn apply(node: Option<Node<'_>>, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let (Value::Object(o), Value::Object(p)) = (original, patch) else {
        return Err(invalid("a strategic merge patch must be a json object"));
    };
    merge_map(node, o.clone(), p).map(Value::Object)
}

fn merge_map(
    node: Option<Node<'_>>,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(s)) if s == "replace" => {
            let mut replaced = patch.clone();
            replaced.shift_remove(PATCH);
            return Ok(clean_map(&replaced));
        }
        Some(Value::String(s)) if s == "delete" => return Ok(Map::new()),
        Some(other) => return Err(invalid(format!("unknown patch type: {other} in map"))),
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keys = retain
            .as_array()
            .ok_or_else(|| invalid("invalid patch format of retainKeys: not a list"))?;
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        for (k, v) in patch {
            let directive = k.starts_with('$');
            if !directive && !v.is_null() && !keys.contains(&k.as_str()) {
                return Err(invalid(format!(
                    "invalid patch format of retainKeys: {k} is in the patch but not in $retainKeys"
                )));
            }
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let child = node.and_then(|n| n.property(key).or_else(|| n.additional()));
        let meta = PatchMeta::of(node.and_then(|n| n.property_raw(key)));
        if value.is_null() {
            original.shift_remove(key);
            continue;
        }
        let merged = match (original.get(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(child, o.clone(), p)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) if meta.merge => {
                let order = patch
                    .get(&format!("{SET_ORDER}{key}"))
                    .and_then(Value::as_array);
                Value::Array(merge_list(
                    child.and_then(|c| c.items()),
                    &meta,
                    o,
                    p,
                    order,
                )?)
            }
            (_, v) => match clean(v) {
                Some(v) => v,
                None => {
                    original.shift_remove(key);
                    continue;
                }
            },
        };
        original.insert(key.clone(), merged);
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE) {
            let remove = value
                .as_array()
                .ok_or_else(|| invalid(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| invalid(format!("{key} must be a list")))?;
            // A field the patch also changed was ordered while merging.
            if !patch.contains_key(field)
                && let Some(Value::Array(list)) = original.get_mut(field)
            {
                let meta = PatchMeta::of(node.and_then(|n| n.property_raw(field)));
                let live = list.clone();
                *list = apply_order(
                    std::mem::take(list),
                    order,
                    &live,
                    meta.merge_key.as_deref(),
                );
            }
        }
    }
    Ok(original)
}

/// Merges a list whose strategy is `merge`.
fn merge_list(
    item: Option<Node<'_>>,
    meta: &PatchMeta,
    original: &[Value],
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Result<Vec<Value>, PatchError> {
    let maps = patch.iter().any(Value::is_object) || original.iter().any(Value::is_object);
    if !maps {
        let mut out = original.to_vec();
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(match order {
            Some(order) => apply_order(out, order, original, None),
            None => out,
        });
    }
    let key = meta
        .merge_key
        .as_deref()
        .ok_or_else(|| invalid("cannot merge lists without merge key"))?;
    let mut out: Vec<Value> = original.to_vec();
    let mut added = Vec::new();
    for p in patch {
        let Value::Object(pm) = p else {
            return Err(invalid("lists of maps and scalars cannot be mixed"));
        };
        match pm.get(PATCH).and_then(Value::as_str) {
            Some("delete") => {
                let k = pm.get(key).ok_or_else(|| missing_key(pm, key))?;
                out.retain(|o| o.get(key) != Some(k));
                continue;
            }
            Some("replace") => {
                let rest: Vec<Value> = patch
                    .iter()
                    .filter(|v| v.get(PATCH).is_none())
                    .filter_map(clean)
                    .collect();
                return Ok(rest);
            }
            Some(other) => {
                return Err(invalid(format!(
                    "unknown patch type: {other} in list element (merging lists cannot yet be specified in the patch)"
                )));
            }
            None => {}
        }
        let k = pm.get(key).ok_or_else(|| missing_key(pm, key))?;
        match out.iter_mut().find(|o| o.get(key) == Some(k)) {
            Some(Value::Object(existing)) => {
                *existing = merge_map(item, std::mem::take(existing), pm)?;
            }
            _ => {
                if let Some(v) = clean(p) {
                    added.push(v);
                }
            }
        }
    }
    out.extend(added);
    Ok(match order {
        Some(order) => apply_order(out, order, original, Some(key)),
        None => out,
    })
}

fn missing_key(m: &Map<String, Value>, key: &str) -> PatchError {
    invalid(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(m.clone())
    ))
}

/// Orders a merged list by `$setElementOrder`: the items the order names come in its order, the
/// items only the server has keep their place relative to those (apimachinery's
/// `normalizeElementOrder`).
fn apply_order(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let index_in = |list: &[Value], v: &Value| -> Option<usize> {
        let want = id(v);
        list.iter().position(|o| id(o) == want)
    };
    let (mut named, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_in(order, v).is_some());
    named.sort_by_key(|v| index_in(order, v));
    // Merge the two sorted lists; a server-only item goes first only when both are on the
    // server and it was first there.
    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        named.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server, l), index_in(server, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// A patch value as stored when nothing live is merged into it: nulls dropped, directives
/// removed, and anything marked `$patch` left out. `None` when the value itself is marked.
fn clean(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(PATCH) {
                return None;
            }
            Some(Value::Object(clean_map(m)))
        }
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(clean).collect())),
        other => Some(other.clone()),
    }
}

fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .filter_map(|(k, v)| clean(v).map(|v| (k.clone(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi;
    use crate::registry::Catalog;
    use serde_json::json;

    fn pod_patch(original: Value, patch: Value) -> Result<Value, PatchError> {
        let pods = Catalog::builtin().builtin_resource("", "pods");
        apply(openapi::root(&pods), &original, &patch)
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}, "spec": {"containers": containers}})
    }

    #[test]
    fn containers_merge_by_name() {
        let live = pod(
            json!([{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "y"}]),
        );
        let out = pod_patch(live.clone(), json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}})).unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
        assert_eq!(out["spec"]["containers"][0]["env"][0]["value"], "1");
        // Nested merge lists merge too; null removes a field.
        let out = pod_patch(live.clone(), json!({"spec": {"containers": [{"name": "a", "image": null, "env": [{"name": "F", "value": "2"}]}]}})).unwrap();
        assert!(out["spec"]["containers"][0].get("image").is_none());
        assert_eq!(
            out["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn directives() {
        let live = pod(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
        let out = pod_patch(
            live.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "y"}])
        );
        let out = pod_patch(
            live.clone(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "n", "image": "i"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "n", "image": "i"}])
        );
        let out = pod_patch(
            live.clone(),
            json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "z"}]}}),
        )
        .unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
        // Finalizers are a merged set of scalars.
        let out = pod_patch(live.clone(), json!({"metadata": {"finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        let out = pod_patch(
            live.clone(),
            json!({"metadata": {"$patch": "replace", "name": "p"}}),
        )
        .unwrap();
        assert_eq!(out["metadata"], json!({"name": "p"}));
        assert!(pod_patch(live.clone(), json!({"metadata": {"$patch": "merge"}})).is_err());
        assert!(
            pod_patch(
                live,
                json!({"spec": {"containers": [{"image": "no-name"}]}})
            )
            .is_err()
        );
    }

    #[test]
    fn lists_without_strategy_are_replaced_and_retain_keys_drops_others() {
        let deploy = Catalog::builtin().builtin_resource("apps", "deployments");
        let live = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "image": "1"}]}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {"spec": {"tolerations": [{"key": "b"}]}}}});
        let out = apply(openapi::root(&deploy), &live, &patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b"}])
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "1"
        );
    }
}
