//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch
//! ([`strategic`], driven by the kind's schema).

pub mod strategic;

use serde_json::{Map, Value};

use crate::schema::Node;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("patch body is not valid json: {0}")]
    Json(String),
    #[error("json patch must be an array of operations")]
    NotAnArray,
    #[error("json patch operation {index}: {reason}")]
    Operation { index: usize, reason: String },
    #[error("json patch test operation {index} failed at {path}")]
    TestFailed { index: usize, path: String },
    #[error("patch result must be a json object")]
    NotAnObject,
    #[error("{0}")]
    Strategic(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    /// Maps a request `Content-Type` (parameters ignored). `None` for unsupported types such as
    /// server-side apply's `application/apply-patch+yaml`.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            _ => None,
        }
    }
}

/// Applies `body` (raw request bytes) to `target`; `schema` is the kind's, which strategic
/// merge patch needs.
pub fn apply(
    kind: PatchType,
    schema: Option<Node<'_>>,
    target: &Value,
    body: &[u8],
) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| PatchError::Json(e.to_string()))?;
    let out = match kind {
        PatchType::Merge => merge_patch(target, &patch),
        PatchType::Strategic => strategic::apply(schema, target, &patch)?,
        PatchType::Json => json_patch(target, &patch)?,
    };
    if !out.is_object() {
        return Err(PatchError::NotAnObject);
    }
    Ok(out)
}

/// RFC 7386.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// RFC 6902, with RFC 6901 pointers.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or(PatchError::NotAnArray)?;
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        let fail = |reason: String| PatchError::Operation { index, reason };
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("missing \"op\"".into()))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("missing \"path\"".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| fail("missing \"value\"".into()))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| fail("missing \"from\"".into()))
        };
        match name {
            "add" => add(&mut doc, path, value()?).map_err(fail)?,
            "remove" => {
                remove(&mut doc, path).map_err(fail)?;
            }
            "replace" => {
                remove(&mut doc, path).map_err(fail)?;
                add(&mut doc, path, value()?).map_err(fail)?;
            }
            "move" => {
                let from = from()?;
                if path.starts_with(&format!("{from}/")) {
                    return Err(fail("cannot move a value into itself".into()));
                }
                let v = remove(&mut doc, from).map_err(fail)?;
                add(&mut doc, path, v).map_err(fail)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| fail("\"from\" does not exist".into()))?;
                add(&mut doc, path, v).map_err(fail)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(PatchError::TestFailed {
                        index,
                        path: path.to_owned(),
                    });
                }
            }
            other => return Err(fail(format!("unknown op {other:?}"))),
        }
    }
    Ok(doc)
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("path {path:?} is not a json pointer"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("array index {last:?} out of range at {path:?}"))?
            };
            a.insert(idx, value);
            Ok(())
        }
        Some(_) => Err(format!("parent of {path:?} is not a container")),
        None => Err(format!("parent of {path:?} does not exist")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("path {path:?} does not exist");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.shift_remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let idx = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(idx))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        let p = json!({"a": "z", "c": {"f": null}});
        assert_eq!(merge_patch(&t, &p), json!({"a": "z", "c": {"d": "e"}}));
        assert_eq!(
            merge_patch(&json!({"a": [1]}), &json!({"a": [2, 3]})),
            json!({"a": [2, 3]})
        );
        assert_eq!(
            merge_patch(&json!({}), &json!({"a": {"bb": {"ccc": null}}})),
            json!({"a": {"bb": {}}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let p = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "remove", "path": "/list/0"},
            {"op": "copy", "from": "/metadata/labels/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "test", "path": "/d", "value": "2"},
            {"op": "add", "path": "/metadata/annotations", "value": {"k~/": "v"}},
            {"op": "remove", "path": "/metadata/annotations/k~0~1"}
        ]);
        assert_eq!(
            json_patch(&t, &p).unwrap(),
            json!({"metadata": {"labels": {"a": "x", "b": "2"}, "annotations": {}}, "list": [2, 3], "d": "2"})
        );
        assert!(matches!(
            json_patch(&t, &json!([{"op": "test", "path": "/list/0", "value": 9}])),
            Err(PatchError::TestFailed { .. })
        ));
        assert!(json_patch(&t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&t, &json!([{"op": "add", "path": "/x/y", "value": 1}])).is_err());
        assert!(json_patch(&t, &json!([{"op": "add", "path": "/list/9", "value": 1}])).is_err());
        assert!(json_patch(&t, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert!(apply(PatchType::Merge, None, &json!({}), b"not json").is_err());
        assert_eq!(
            apply(
                PatchType::Json,
                None,
                &json!({}),
                br#"[{"op":"add","path":"","value":1}]"#
            ),
            Err(PatchError::NotAnObject)
        );
    }
}
