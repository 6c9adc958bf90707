//! Field ownership (`metadata.managedFields`) and server-side apply, after kube-apiserver's
//! field manager. Every write records which manager set which fields:
//!
//! * an **Update** (create, PUT, PATCH) gives its manager the fields it changed and takes them
//!   from everyone else — no conflicts;
//! * an **Apply** (`PATCH application/apply-patch+yaml`) declares the full set of fields the
//!   manager wants: fields another manager owns with a different value are conflicts (409)
//!   unless forced, fields the manager applied before and no longer applies are removed when
//!   nobody else owns them, and the applied values are merged in by the schema's list
//!   semantics.
//!
//! Field sets live in [`fieldset`]. Only the main resource's fields are tracked for writes to
//! it and only `status` for writes to the status subresource, as kube-apiserver resets the
//! other part.

pub mod fieldset;

use serde_json::{Map, Value, json};

use crate::meta;
use crate::schema::Node;
use fieldset::{FieldSet, ListKind, Path};

/// Metadata the server owns, never part of anyone's field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        Some(Entry {
            manager: v.get("manager")?.as_str()?.to_owned(),
            operation: v.get("operation")?.as_str()?.to_owned(),
            api_version: v["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: v["time"].as_str().unwrap_or_default().to_owned(),
            subresource: v["subresource"].as_str().unwrap_or_default().to_owned(),
            fields: FieldSet::from_fields_v1(&v["fieldsV1"]),
        })
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }

    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How conflict messages name a manager.
    fn describe(&self) -> String {
        let mut s = format!("\"{}\"", self.manager);
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
            if !self.time.is_empty() {
                s.push_str(&format!(" at {}", self.time));
            }
        }
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource \"{}\"", self.subresource));
        }
        s
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::parse)
        .collect()
}

fn store(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.fields.is_empty());
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if list.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(list.iter().map(Entry::to_json).collect()),
        );
    }
}

/// The part of an object a manager's fields are computed on.
fn tracked(obj: &Value, subresource: &str) -> Value {
    let Some(root) = obj.as_object() else {
        return json!({});
    };
    if subresource == "status" {
        return root
            .get("status")
            .map_or_else(|| json!({}), |s| json!({ "status": s }));
    }
    let mut out: Map<String, Value> = root
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "status"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::Object(m)) = out.get_mut("metadata") {
        for f in SERVER_METADATA {
            m.shift_remove(*f);
        }
        if m.is_empty() {
            out.shift_remove("metadata");
        }
    }
    Value::Object(out)
}

/// Who is writing, for the Update entry: the `fieldManager` parameter, else the first word of
/// the User-Agent (as kube-apiserver derives it: `kubectl/v1.32 …` → `kubectl`).
pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    match field_manager.filter(|m| !m.is_empty()) {
        Some(m) => m.to_owned(),
        None => user_agent
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_owned(),
    }
}

/// Records an Update by `manager` that turns `old` (absent for a create) into `new`.
pub fn record_update(
    schema: Option<Node<'_>>,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
) {
    let sent = entries(new);
    let mut list = match old {
        // A client may rewrite managedFields (kubectl does, migrating to server-side apply);
        // one that sends none keeps what was there.
        Some(old) if sent.is_empty() => entries(old),
        _ => sent,
    };
    let empty = json!({});
    let old_view = old.map_or_else(|| empty.clone(), |o| tracked(o, subresource));
    let new_view = tracked(new, subresource);
    let old_set = fieldset::of_value(schema, &old_view);
    let new_set = fieldset::of_value(schema, &new_view);
    let changed: Vec<Path> = new_set
        .paths()
        .into_iter()
        .filter(|p| {
            fieldset::get(&old_view, p) != fieldset::get(&new_view, p) || !old_set.contains(p)
        })
        .collect();
    let gone: Vec<Path> = old_set
        .paths()
        .into_iter()
        .filter(|p| !new_set.contains(p))
        .collect();
    if changed.is_empty() && gone.is_empty() && old.is_some() {
        store(new, list);
        return;
    }
    for e in &mut list {
        for p in changed.iter().chain(&gone) {
            e.fields.remove(p);
        }
    }
    match list
        .iter_mut()
        .find(|e| e.is(manager, "Update", subresource))
    {
        Some(e) => {
            for p in &changed {
                e.fields.insert(p);
            }
            e.time = meta::now();
            e.api_version = api_version.to_owned();
        }
        None => {
            let mut fields = FieldSet::default();
            for p in &changed {
                fields.insert(p);
            }
            list.push(Entry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version: api_version.to_owned(),
                time: meta::now(),
                subresource: subresource.to_owned(),
                fields,
            });
        }
    }
    store(new, list);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Server-side apply of `applied` (the manager's whole intent) onto `live` (absent: the object
/// is created). Returns the resulting object, with managedFields updated, or the conflicts.
pub fn apply(
    schema: Option<Node<'_>>,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    subresource: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied_view = tracked(applied, subresource);
    let applied_set = fieldset::of_value(schema, &applied_view);
    let Some(live) = live else {
        let mut obj = applied.clone();
        store(
            &mut obj,
            vec![apply_entry(manager, api_version, subresource, applied_set)],
        );
        return Ok(obj);
    };
    let mut list = entries(live);
    let live_view = tracked(live, subresource);
    // Values, not the list elements holding them, conflict: an element is "owned" by whoever
    // created it, and applying a field of it must not clash with that.
    let leaves: Vec<Path> = applied_set
        .paths()
        .into_iter()
        .filter(|p| !matches!(p.last(), Some(fieldset::Step::Key(_))))
        .collect();
    let mut conflicts = Vec::new();
    for e in list
        .iter_mut()
        .filter(|e| !e.is(manager, "Apply", subresource))
    {
        for p in &leaves {
            if e.fields.contains(p)
                && fieldset::get(&live_view, p) != fieldset::get(&applied_view, p)
            {
                if force {
                    e.fields.remove(p);
                } else {
                    conflicts.push((e.describe(), fieldset::display(p)));
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts
            .into_iter()
            .map(|(manager, field)| Conflict { manager, field })
            .collect());
    }
    let mut result = live.clone();
    let previous = list
        .iter()
        .position(|e| e.is(manager, "Apply", subresource))
        .map(|i| list.remove(i));
    if let Some(prev) = previous {
        // Fields this manager stopped applying go, unless someone else still owns them.
        let mut dropped: Vec<Path> = prev
            .fields
            .paths()
            .into_iter()
            .filter(|p| !applied_set.contains(p))
            .collect();
        dropped.retain(|p| !list.iter().any(|e| e.fields.contains(p)));
        // Deepest first, so removing an element does not hide a field inside it.
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in &dropped {
            fieldset::remove(&mut result, p);
            // A map or list emptied this way goes too, as Go's `omitempty` would drop it.
            for depth in (2..p.len()).rev() {
                match fieldset::get(&result, &p[..depth]) {
                    Some(Value::Object(m)) if m.is_empty() => {
                        fieldset::remove(&mut result, &p[..depth])
                    }
                    Some(Value::Array(a)) if a.is_empty() => {
                        fieldset::remove(&mut result, &p[..depth])
                    }
                    _ => break,
                }
            }
        }
    }
    let mut merged = merge(schema, &result, applied);
    list.push(apply_entry(manager, api_version, subresource, applied_set));
    store(&mut merged, list);
    Ok(merged)
}

fn apply_entry(manager: &str, api_version: &str, subresource: &str, fields: FieldSet) -> Entry {
    Entry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: api_version.to_owned(),
        time: meta::now(),
        subresource: subresource.to_owned(),
        fields,
    }
}

/// `applied` merged onto `live` by the schema: objects by key, keyed lists by element key,
/// sets as a union, everything else replaced.
fn merge(schema: Option<Node<'_>>, live: &Value, applied: &Value) -> Value {
    let (Value::Object(l), Value::Object(a)) = (live, applied) else {
        return applied.clone();
    };
    let mut out = l.clone();
    for (k, av) in a {
        let child = schema.and_then(|n| n.property(k).or_else(|| n.additional()));
        let raw = schema.and_then(|n| n.property_raw(k));
        let merged = match (l.get(k), av) {
            (Some(lv @ Value::Object(_)), Value::Object(_)) => merge(child, lv, av),
            (Some(Value::Array(lv)), Value::Array(items)) => match fieldset::list_kind(raw) {
                ListKind::Map(keys) => {
                    let item = child.and_then(|c| c.items());
                    let mut list = lv.clone();
                    for e in items {
                        let step = fieldset::key_of(e, &keys);
                        let found = step.as_ref().and_then(|s| {
                            list.iter()
                                .position(|le| fieldset::key_of(le, &keys).as_ref() == Some(s))
                        });
                        match found {
                            Some(i) => list[i] = merge(item, &list[i], e),
                            None => list.push(e.clone()),
                        }
                    }
                    Value::Array(list)
                }
                ListKind::Set => {
                    let mut list = lv.clone();
                    for e in items {
                        if !list.contains(e) {
                            list.push(e.clone());
                        }
                    }
                    Value::Array(list)
                }
                ListKind::Atomic => av.clone(),
            },
            _ => av.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi;
    use crate::registry::Catalog;

    fn deploy(image: &str, replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn apply_create_update_conflict_force_and_removal() {
        let deployments = Catalog::builtin().builtin_resource("apps", "deployments");
        let schema = openapi::root(&deployments);
        let created = apply(
            schema,
            None,
            &deploy("busybox:1", 2),
            "ci",
            false,
            "apps/v1",
            "",
        )
        .unwrap();
        let mf = &created["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "ci");
        assert_eq!(mf["operation"], "Apply");
        assert!(
            mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
                ["f:image"]
                .is_object()
        );

        // Another manager scales with an Update: it now owns replicas.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            schema,
            Some(&created),
            &mut scaled,
            "kubectl-scale",
            "apps/v1",
            "",
        );
        assert_eq!(
            scaled["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // Re-applying replicas: 2 conflicts with the scaler; the same value would not.
        let err = apply(
            schema,
            Some(&scaled),
            &deploy("busybox:2", 2),
            "ci",
            false,
            "apps/v1",
            "",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, ".spec.replicas");
        assert!(
            err[0]
                .manager
                .starts_with("\"kubectl-scale\" using apps/v1"),
            "{}",
            err[0].manager
        );
        let ok = apply(
            schema,
            Some(&scaled),
            &deploy("busybox:2", 5),
            "ci",
            false,
            "apps/v1",
            "",
        )
        .unwrap();
        assert_eq!(
            ok["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox:2"
        );
        let forced = apply(
            schema,
            Some(&scaled),
            &deploy("busybox:2", 2),
            "ci",
            true,
            "apps/v1",
            "",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);

        // Dropping the label from the applied config removes it (nobody else owns it).
        let mut no_label = deploy("busybox:2", 2);
        no_label["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("labels");
        let out = apply(schema, Some(&forced), &no_label, "ci", false, "apps/v1", "").unwrap();
        assert!(
            out["metadata"].get("labels").is_none(),
            "{}",
            out["metadata"]
        );
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn manager_names() {
        assert_eq!(manager_name(Some("me"), Some("kubectl/v1.32")), "me");
        assert_eq!(
            manager_name(None, Some("kubectl/v1.32.4 (linux/amd64)")),
            "kubectl"
        );
        assert_eq!(manager_name(None, None), "unknown");
    }
}
