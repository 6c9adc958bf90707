//! Label and field selectors, in the syntax of `k8s.io/apimachinery/pkg/labels` and `fields`,
//! for whatever serves Kubernetes-style lists: the embedded API server and the edge's
//! metaserver. Pure parsing and matching over JSON objects.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unable to parse requirement {0:?}: {1}")]
    Syntax(String, &'static str),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Exists, v) => v.is_some(),
            (Op::NotExists, v) => v.is_none(),
            (Op::Equals(want), Some(v)) => v == want,
            (Op::Equals(_), None) => false,
            // As in Kubernetes: `!=` and `notin` also select objects without the key.
            (Op::NotEquals(want), v) => v != Some(want.as_str()),
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::In(_), None) => false,
            (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
        }
    }
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            out.push(parse_label_requirement(part)?);
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.matches(v)
        })
    }
}

/// Splits on commas that are not inside `( … )` (set-based values contain commas).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let err = |why| SelectorError::Syntax(part.to_owned(), why);
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(err)?;
        return Ok(Requirement {
            key: key.to_owned(),
            op: Op::NotExists,
        });
    }
    for (sym, ctor) in [
        ("!=", Op::NotEquals as fn(String) -> Op),
        ("==", Op::Equals),
        ("=", Op::Equals),
    ] {
        if let Some((k, v)) = part.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k).map_err(err)?;
            check_value(v).map_err(err)?;
            return Ok(Requirement {
                key: k.to_owned(),
                op: ctor(v.to_owned()),
            });
        }
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let close = part.rfind(')').ok_or_else(|| err("missing ')'"))?;
        if close < open || !part[close + 1..].trim().is_empty() {
            return Err(err("text after ')'"));
        }
        let (key, word) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| err("expected 'in' or 'notin'"))?;
        let key = key.trim();
        check_key(key).map_err(err)?;
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_owned())
            .collect();
        for v in &values {
            check_value(v).map_err(err)?;
        }
        let op = match word {
            "in" => Op::In(values),
            "notin" => Op::NotIn(values),
            _ => return Err(err("expected 'in' or 'notin'")),
        };
        return Ok(Requirement {
            key: key.to_owned(),
            op,
        });
    }
    let key = part.trim();
    check_key(key).map_err(err)?;
    Ok(Requirement {
        key: key.to_owned(),
        op: Op::Exists,
    })
}

/// Label keys: optional DNS prefix and `/`, then a name of up to 63 characters.
fn check_key(key: &str) -> Result<(), &'static str> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("invalid label key prefix");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 {
        return Err("label key name must be 1-63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("invalid label key");
    }
    Ok(())
}

fn check_value(v: &str) -> Result<(), &'static str> {
    if v.len() > 63
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("invalid label value");
    }
    Ok(())
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `supported` says which fields the resource can be selected by (the API server refuses
    /// the others, as Kubernetes does).
    pub fn parse(text: &str, supported: impl Fn(&str) -> bool) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Syntax(
                    part.to_owned(),
                    "expected field=value or field!=value",
                ));
            };
            let field = field.trim();
            if !supported(field) {
                return Err(SelectorError::UnsupportedField(field.to_owned()));
            }
            out.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields this selector reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(f, _, _)| f.as_str())
    }

    /// The `metadata.name=<x>` requirement, which lets a list read one key instead of a prefix.
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, want)| {
            let actual = field_value(obj, field);
            (actual == *want) == *equal
        })
    }
}

/// A field's value as a selector sees it: missing fields are "", scalars are stringified.
fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for seg in field.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // `source` on events is an object; Kubernetes selects on its `component`.
        Value::Object(m) => m
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the API server allows for pods and for ConfigMaps.
    fn pods(field: &str) -> bool {
        field.starts_with("metadata.")
            || ["spec.nodeName", "status.phase", "status.podIP"].contains(&field)
    }

    fn configmaps(field: &str) -> bool {
        field.starts_with("metadata.")
    }

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("missing notin (web)"));
        assert!(m("app,tier=front"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("app in (web),tier notin (back)"));
        assert!(m("example.com/x notin (y)"));
    }

    #[test]
    fn label_syntax_errors() {
        for bad in [
            "app in web",
            "a b c",
            "app=(x",
            "=x",
            "app=x y",
            "app in (a) z",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, pods).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("spec.nodeName=n1,status.phase!=Pending"));
        assert!(!m("metadata.namespace==other"));
        assert!(m("status.podIP="));
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", configmaps),
            Err(SelectorError::UnsupportedField("spec.nodeName".into()))
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=x", configmaps)
                .unwrap()
                .exact_name(),
            Some("x")
        );
    }
}
