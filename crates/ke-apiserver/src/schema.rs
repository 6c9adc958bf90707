//! Walking the OpenAPI schema of a kind alongside an object: what field validation, pruning and
//! strategic merge patch need to know about each field. Built-in schemas are a set of named
//! definitions that reference each other (`$ref`, often wrapped as `allOf: [{$ref}]` next to a
//! description); a CRD's schema is one self-contained tree. [`Node`] hides the difference.

use serde_json::{Map, Value};

/// A position in a schema: the schema value plus the definitions its `$ref`s point into.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    defs: &'a Map<String, Value>,
    schema: &'a Value,
}

const REF_PREFIX: &str = "#/components/schemas/";

/// Follows references a bounded number of times (a reference cycle is a broken schema, not a
/// reason to hang).
const MAX_REF_HOPS: usize = 16;

impl<'a> Node<'a> {
    pub fn new(defs: &'a Map<String, Value>, schema: &'a Value) -> Node<'a> {
        Node { defs, schema }.resolved()
    }

    /// The definition this node is (or points at), when it is a named one.
    pub fn definition_name(defs: &Map<String, Value>, schema: &Value) -> Option<String> {
        let mut s = schema;
        for _ in 0..MAX_REF_HOPS {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let name = r.strip_prefix(REF_PREFIX)?;
                if defs.contains_key(name) {
                    return Some(name.to_owned());
                }
                return None;
            }
            match single_all_of(s) {
                Some(inner) => s = inner,
                None => return None,
            }
        }
        None
    }

    fn resolved(self) -> Node<'a> {
        let mut s = self.schema;
        for _ in 0..MAX_REF_HOPS {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r.strip_prefix(REF_PREFIX).and_then(|n| self.defs.get(n)) {
                    Some(target) => {
                        s = target;
                        continue;
                    }
                    None => break,
                }
            }
            match single_all_of(s) {
                Some(inner) => s = inner,
                None => break,
            }
        }
        Node {
            defs: self.defs,
            schema: s,
        }
    }

    pub fn raw(&self) -> &'a Value {
        self.schema
    }

    /// The schema of field `name` of an object, if the schema declares it.
    pub fn property(&self, name: &str) -> Option<Node<'a>> {
        let p = self.schema.get("properties")?.get(name)?;
        Some(Node::new(self.defs, p))
    }

    /// The raw (unresolved) schema of field `name`, which carries the field's own extensions
    /// (`x-kubernetes-patch-strategy` sits next to the `$ref`, not in the definition).
    pub fn property_raw(&self, name: &str) -> Option<&'a Value> {
        self.schema.get("properties")?.get(name)
    }

    /// The schema of a list's items.
    pub fn items(&self) -> Option<Node<'a>> {
        let i = self.schema.get("items")?;
        Some(Node::new(self.defs, i))
    }

    /// The schema of a map's values (`additionalProperties` that is a schema).
    pub fn additional(&self) -> Option<Node<'a>> {
        match self.schema.get("additionalProperties")? {
            v @ Value::Object(_) => Some(Node::new(self.defs, v)),
            _ => None,
        }
    }

    /// Whether fields not in `properties` are allowed (and kept) here.
    pub fn is_open(&self) -> bool {
        let s = self.schema;
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true))
                && s.get("properties").is_none()
        {
            return true;
        }
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => false,
            Some(_) => true,
            None => s.get("properties").is_none(),
        }
    }

    /// The declared JSON type, if any.
    pub fn type_name(&self) -> Option<&'a str> {
        self.schema.get("type").and_then(Value::as_str)
    }

    pub fn extension(&self, key: &str) -> Option<&'a Value> {
        self.schema.get(key)
    }
}

/// `allOf: [x]` with nothing else that constrains: how kube-openapi attaches a description to a
/// reference.
fn single_all_of(s: &Value) -> Option<&Value> {
    match s.get("allOf")?.as_array()?.as_slice() {
        [inner] => Some(inner),
        _ => None,
    }
}

/// A field's patch metadata, read from its (raw) schema's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchMeta {
    pub merge: bool,
    pub retain_keys: bool,
    pub merge_key: Option<String>,
}

impl PatchMeta {
    pub fn of(raw: Option<&Value>) -> PatchMeta {
        let Some(raw) = raw else {
            return PatchMeta::default();
        };
        let strategy = raw
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .unwrap_or_default();
        PatchMeta {
            merge: strategy.split(',').any(|s| s == "merge"),
            retain_keys: strategy.split(',').any(|s| s == "retainKeys"),
            merge_key: raw
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_and_wrapped_refs_resolve() {
        let defs = json!({
            "A": {"type": "object", "properties": {
                "b": {"description": "x", "allOf": [{"$ref": "#/components/schemas/B"}]},
                "list": {"type": "array", "items": {"$ref": "#/components/schemas/B"},
                         "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "B": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Loop": {"$ref": "#/components/schemas/Loop"}
        });
        let defs = defs.as_object().unwrap();
        let root = json!({"$ref": "#/components/schemas/A"});
        let a = Node::new(defs, &root);
        assert!(!a.is_open());
        let b = a.property("b").unwrap();
        assert!(b.property("name").is_some());
        assert!(
            a.property("list")
                .unwrap()
                .items()
                .unwrap()
                .property("name")
                .is_some()
        );
        assert_eq!(
            a.property("labels")
                .unwrap()
                .additional()
                .unwrap()
                .type_name(),
            Some("string")
        );
        assert!(a.property("labels").unwrap().is_open());
        let meta = PatchMeta::of(a.property_raw("list"));
        assert!(meta.merge && meta.merge_key.as_deref() == Some("name"));
        let looped = json!({"$ref": "#/components/schemas/Loop"});
        let _ = Node::new(defs, &looped); // terminates
        assert_eq!(
            Node::definition_name(defs, &a.schema["properties"]["b"]).as_deref(),
            Some("B")
        );
    }
}
