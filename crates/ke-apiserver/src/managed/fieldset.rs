//! Sets of field paths in the `FieldsV1` shape of `metadata.managedFields`:
//! `{"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}}`.
//!
//! A path steps through struct and map fields (`f:<name>`), elements of keyed lists
//! (`k:{<key fields as JSON>}`, per `x-kubernetes-list-map-keys`) and elements of sets
//! (`v:<value as JSON>`). Atomic lists and scalars are leaves. What is a keyed list or a set
//! comes from the kind's schema; without one, lists are atomic.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::schema::Node;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    /// The element of a keyed list whose key fields have these values (in key order).
    Key(Vec<(String, Value)>),
    /// The element of a set with this value.
    Value(Value),
}

impl Step {
    /// The `FieldsV1` key: `f:name`, `k:{"name":"c"}`, `v:"x"`.
    pub fn encode(&self) -> String {
        match self {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(kv) => {
                let m: Map<String, Value> = kv.iter().cloned().collect();
                format!("k:{}", Value::Object(m))
            }
            Step::Value(v) => format!("v:{v}"),
        }
    }

    pub fn decode(s: &str) -> Option<Step> {
        if let Some(f) = s.strip_prefix("f:") {
            return Some(Step::Field(f.to_owned()));
        }
        if let Some(k) = s.strip_prefix("k:") {
            let Value::Object(m) = serde_json::from_str(k).ok()? else {
                return None;
            };
            return Some(Step::Key(m.into_iter().collect()));
        }
        if let Some(v) = s.strip_prefix("v:") {
            return serde_json::from_str(v).ok().map(Step::Value);
        }
        None
    }

    /// How structured-merge-diff prints a step in conflict messages: `.spec`,
    /// `[name="c"]`, `[="x"]`.
    fn display(&self) -> String {
        match self {
            Step::Field(f) => format!(".{f}"),
            Step::Key(kv) => {
                let parts: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Step::Value(v) => format!("[={v}]"),
        }
    }
}

pub type Path = Vec<Step>;

pub fn display(path: &Path) -> String {
    path.iter().map(Step::display).collect()
}

/// A set of paths, as a trie. `member` marks that the node itself is in the set (a leaf, or
/// the `"."` of a list element or map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, (Step, FieldSet)>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[Step]) {
        match path {
            [] => self.member = true,
            [first, rest @ ..] => {
                let entry = self
                    .children
                    .entry(first.encode())
                    .or_insert_with(|| (first.clone(), FieldSet::default()));
                entry.1.insert(rest);
            }
        }
    }

    pub fn contains(&self, path: &[Step]) -> bool {
        match path {
            [] => self.member,
            [first, rest @ ..] => self
                .children
                .get(&first.encode())
                .is_some_and(|(_, c)| c.contains(rest)),
        }
    }

    pub fn remove(&mut self, path: &[Step]) {
        match path {
            [] => self.member = false,
            [first, rest @ ..] => {
                let key = first.encode();
                if let Some((_, child)) = self.children.get_mut(&key) {
                    child.remove(rest);
                    if child.is_empty() {
                        self.children.remove(&key);
                    }
                }
            }
        }
    }

    /// Every member path (leaves and `.` markers), depth first.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (step, child) in self.children.values() {
            prefix.push(step.clone());
            child.walk(prefix, out);
            prefix.pop();
        }
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (key, (_, child)) in &self.children {
            m.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(m)
    }

    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(m) = v.as_object() else {
            return set;
        };
        if m.is_empty() {
            set.member = true;
        }
        for (key, child) in m {
            if key == "." {
                set.member = true;
                continue;
            }
            if let Some(step) = Step::decode(key) {
                set.children
                    .insert(key.clone(), (step, FieldSet::from_fields_v1(child)));
            }
        }
        set
    }
}

/// The list semantics of a field, from its raw schema.
pub enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

pub fn list_kind(raw: Option<&Value>) -> ListKind {
    let Some(raw) = raw else {
        return ListKind::Atomic;
    };
    match raw.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListKind::Set,
        Some("map") => {
            let keys: Vec<String> = raw
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            if keys.is_empty() {
                ListKind::Atomic
            } else {
                ListKind::Map(keys)
            }
        }
        _ => ListKind::Atomic,
    }
}

/// The key step of a keyed-list element; `None` when it lacks every key field.
pub fn key_of(element: &Value, keys: &[String]) -> Option<Step> {
    let kv: Vec<(String, Value)> = keys
        .iter()
        .filter_map(|k| element.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    (!kv.is_empty()).then_some(Step::Key(kv))
}

/// Every path `value` sets, under `node`'s schema.
pub fn of_value(node: Option<Node<'_>>, value: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    collect(node, value, &mut Vec::new(), &mut set);
    set
}

fn collect(node: Option<Node<'_>>, value: &Value, prefix: &mut Path, set: &mut FieldSet) {
    match value {
        Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
            for (k, v) in m {
                let child = node.and_then(|n| n.property(k).or_else(|| n.additional()));
                let raw = node.and_then(|n| {
                    n.property_raw(k)
                        .or_else(|| n.raw().get("additionalProperties"))
                });
                prefix.push(Step::Field(k.clone()));
                match v {
                    Value::Array(items) => collect_list(child, raw, items, prefix, set),
                    _ => collect(child, v, prefix, set),
                }
                prefix.pop();
            }
        }
        _ => set.insert(prefix),
    }
}

fn collect_list(
    node: Option<Node<'_>>,
    raw: Option<&Value>,
    items: &[Value],
    prefix: &mut Path,
    set: &mut FieldSet,
) {
    let item_node = node.and_then(|n| n.items());
    match list_kind(raw) {
        ListKind::Atomic => set.insert(prefix),
        ListKind::Set => {
            for v in items {
                prefix.push(Step::Value(v.clone()));
                set.insert(prefix);
                prefix.pop();
            }
        }
        ListKind::Map(keys) => {
            for v in items {
                let Some(step) = key_of(v, &keys) else {
                    continue;
                };
                prefix.push(step);
                set.insert(prefix);
                collect(item_node, v, prefix, set);
                prefix.pop();
            }
        }
    }
}

/// The value at `path` in `obj`, if any.
pub fn get<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(f) => cur.get(f)?,
            Step::Key(kv) => cur
                .as_array()?
                .iter()
                .find(|e| kv.iter().all(|(k, v)| e.get(k) == Some(v)))?,
            Step::Value(v) => cur.as_array()?.iter().find(|e| *e == v)?,
        };
    }
    Some(cur)
}

/// Removes the value at `path` from `obj` (nothing if it is not there).
pub fn remove(obj: &mut Value, path: &[Step]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parent_path {
        let next = match step {
            Step::Field(f) => cur.get_mut(f),
            Step::Key(kv) => cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|e| kv.iter().all(|(k, v)| e.get(k) == Some(v)))
            }),
            Step::Value(v) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| *e == v)),
        };
        let Some(next) = next else { return };
        cur = next;
    }
    match last {
        Step::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.shift_remove(f);
            }
        }
        Step::Key(kv) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|e| !kv.iter().all(|(k, v)| e.get(k) == Some(v)));
            }
        }
        Step::Value(v) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|e| e != v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi;
    use crate::registry::Catalog;

    #[test]
    fn pods_fields_in_fields_v1_shape() {
        let pods = Catalog::builtin().builtin_resource("", "pods");
        let pod = json!({"metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"containers": [{"name": "c", "image": "x", "args": ["1", "2"]}]}});
        let set = of_value(openapi::root(&pods), &pod);
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {"f:app": {}}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
        let image = vec![
            Step::Field("spec".into()),
            Step::Field("containers".into()),
            Step::Key(vec![("name".into(), json!("c"))]),
            Step::Field("image".into()),
        ];
        assert!(set.contains(&image));
        assert_eq!(display(&image), ".spec.containers[name=\"c\"].image");
        assert_eq!(get(&pod, &image), Some(&json!("x")));
        let mut p = pod.clone();
        remove(&mut p, &image);
        assert!(p["spec"]["containers"][0].get("image").is_none());
        remove(&mut p, &image[..3]);
        assert_eq!(p["spec"]["containers"], json!([]));
    }
}
