//! Field validation and pruning against a kind's schema, as kube-apiserver's decoding does:
//! fields the schema does not declare are dropped (and reported as the `fieldValidation`
//! directive asks: `Strict` refuses the request, `Warn` — the default — answers with a
//! `Warning` header per field, `Ignore` says nothing), `null`s are dropped, and a value of the
//! wrong JSON type is an error. Objects are stored as JSON, so this is what keeps a typo or a
//! garbage manifest from being stored and handed to controllers and edge nodes.

use std::collections::HashMap;

use serde_json::Value;

use crate::openapi;
use crate::registry::ResourceInfo;
use crate::schema::Node;
use crate::status::ApiError;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Ignore,
    Warn,
    Strict,
}

impl Directive {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Directive, ApiError> {
        match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(Directive::Warn),
            Some("Ignore") => Ok(Directive::Ignore),
            Some("Strict") => Ok(Directive::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict: got {other:?}"
            ))),
        }
    }
}

/// What a walk found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Findings {
    /// Paths of undeclared fields (removed from the object).
    unknown: Vec<String>,
    /// `(path, message)` of values of the wrong type.
    wrong_type: Vec<(String, String)>,
}

/// Prunes `obj` to what `res`'s schema declares and applies `directive`. Returns the warnings
/// to send back (empty unless `Warn`).
pub fn enforce(
    res: &ResourceInfo,
    directive: Directive,
    obj: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let Some(root) = openapi::root(res) else {
        return Ok(Vec::new());
    };
    let mut found = Findings::default();
    walk(root, obj, String::new(), &mut found);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some((path, message)) = found.wrong_type.first() {
        return Err(if res.is_custom() {
            ApiError::invalid(res, &name, path, message)
        } else {
            ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {message}",
                kind = res.kind,
                v = res.version
            ))
        });
    }
    let unknown = found
        .unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""));
    match directive {
        Directive::Ignore => Ok(Vec::new()),
        Directive::Warn => Ok(unknown.collect()),
        Directive::Strict if found.unknown.is_empty() => Ok(Vec::new()),
        Directive::Strict => {
            let list: Vec<String> = unknown.collect();
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = res.kind,
                v = res.version
            )))
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `v` fits the declared `type` (`number` takes integers; int-or-string takes both).
fn fits(node: &Node<'_>, v: &Value) -> bool {
    if node.extension("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return matches!(json_type(v), "integer" | "number" | "string");
    }
    match (node.type_name(), json_type(v)) {
        (None, _) => true,
        (Some("number"), "integer") => true,
        (Some(want), got) => want == got,
    }
}

fn walk(node: Node<'_>, v: &mut Value, path: String, found: &mut Findings) {
    if !fits(&node, v) {
        let want = node.type_name().unwrap_or("int or string");
        found.wrong_type.push((
            path.clone(),
            format!(
                "json: cannot unmarshal {} into field {path} of type {want}",
                json_type(v)
            ),
        ));
        return;
    }
    match v {
        Value::Object(map) => {
            let open = node.is_open();
            let nullable = |field: &str| {
                node.property(field)
                    .and_then(|p| p.extension("nullable"))
                    .is_some_and(|n| n == &Value::Bool(true))
            };
            map.retain(|k, val| {
                if val.is_null() && !nullable(k) {
                    return false;
                }
                if open || node.property(k).is_some() {
                    return true;
                }
                found.unknown.push(join(&path, k));
                false
            });
            for (k, val) in map.iter_mut() {
                let child = node.property(k).or_else(|| node.additional());
                if let Some(child) = child {
                    walk(child, val, join(&path, k), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.items() {
                for (i, val) in items.iter_mut().enumerate() {
                    walk(item, val, format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Catalog;
    use serde_json::json;

    fn pods() -> crate::registry::Resource {
        Catalog::builtin().builtin_resource("", "pods")
    }

    #[test]
    fn unknown_fields_by_directive() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPortz": 1}]}], "foo": true}});
        let mut strict = pod.clone();
        let err = enforce(&pods(), Directive::Strict, &mut strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .contains("strict decoding error: unknown field \"metadata.bogus\""),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("unknown field \"spec.containers[0].ports[0].hostPortz\"")
        );
        let mut warn = pod.clone();
        let warnings = enforce(&pods(), Directive::Warn, &mut warn).unwrap();
        assert_eq!(warnings.len(), 3);
        assert!(warn["spec"].get("foo").is_none());
        assert_eq!(
            warn["spec"]["containers"][0]["ports"][0],
            json!({"containerPort": 80})
        );
        let mut ignore = pod;
        assert!(
            enforce(&pods(), Directive::Ignore, &mut ignore)
                .unwrap()
                .is_empty()
        );
        assert_eq!(ignore, warn);
    }

    #[test]
    fn maps_and_open_schemas_keep_their_keys() {
        let cms = Catalog::builtin().builtin_resource("", "configmaps");
        let mut cm =
            json!({"metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"any-key": "v"}});
        assert!(
            enforce(&cms, Directive::Strict, &mut cm)
                .unwrap()
                .is_empty()
        );
        assert_eq!(cm["data"]["any-key"], "v");
        let mut bad = json!({"metadata": {"name": "c"}, "data": {"k": 1}});
        assert!(
            enforce(&cms, Directive::Ignore, &mut bad)
                .unwrap_err()
                .message
                .contains("cannot unmarshal integer")
        );
    }

    #[test]
    fn wrong_types_and_nulls() {
        let mut pod = json!({"metadata": {"name": "p", "labels": null},
            "spec": {"containers": "not-a-list"}});
        let err = enforce(&pods(), Directive::Warn, &mut pod).unwrap_err();
        assert!(
            err.message
                .contains("Pod in version \"v1\" cannot be handled as a Pod"),
            "{}",
            err.message
        );
        assert!(err.message.contains("spec.containers"));
        let mut ok = json!({"metadata": {"name": "p", "labels": null},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostIP": null}]}]}});
        enforce(&pods(), Directive::Strict, &mut ok).unwrap();
        assert!(ok["metadata"].get("labels").is_none());
        // intstr fields take numbers and names.
        let deploy = Catalog::builtin().builtin_resource("apps", "deployments");
        let mut d = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}}});
        enforce(&deploy, Directive::Strict, &mut d).unwrap();
    }
}
