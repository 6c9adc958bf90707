//! Label and field selectors, as the API server parses them (`labelSelector=app=web,tier!=db`,
//! `fieldSelector=spec.nodeName=edge-1`).

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {which} selector {text:?}: {reason}")]
pub struct SelectorError {
    which: &'static str,
    text: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Requirements that must all hold; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, SelectorError> {
        Ok(Selector {
            labels: parse_requirements("label", labels.unwrap_or(""), true)?,
            fields: parse_requirements("field", fields.unwrap_or(""), false)?,
        })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let field = |path: &str| field_value(object, path);
        self.labels.iter().all(|r| holds(r, label)) && self.fields.iter().all(|r| holds(r, field))
    }
}

fn holds<'a>(requirement: &Requirement, value_of: impl Fn(&str) -> Option<&'a str>) -> bool {
    match requirement {
        Requirement::Exists(key) => value_of(key).is_some(),
        Requirement::Absent(key) => value_of(key).is_none(),
        Requirement::Equals(key, want) => value_of(key) == Some(want.as_str()),
        Requirement::NotEquals(key, want) => value_of(key) != Some(want.as_str()),
        Requirement::In(key, set) => value_of(key).is_some_and(|v| set.iter().any(|s| s == v)),
        Requirement::NotIn(key, set) => value_of(key).is_none_or(|v| set.iter().all(|s| s != v)),
    }
}

/// A dotted path into the object (`spec.nodeName`); fields that are not strings compare as
/// absent, except booleans and numbers, which the API server compares by their text too —
/// those are rare in field selectors and left out.
fn field_value<'a>(object: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(object, |value, key| value.get(key))
        .and_then(Value::as_str)
}

fn parse_requirements(
    which: &'static str,
    text: &str,
    set_based: bool,
) -> Result<Vec<Requirement>, SelectorError> {
    let error = |reason| SelectorError {
        which,
        text: text.to_owned(),
        reason,
    };
    let mut requirements = Vec::new();
    for part in split_top_level(text) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let requirement = if let Some((key, value)) = part.split_once("!=") {
            Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if !set_based {
            return Err(error("expected key=value or key!=value"));
        } else if let Some((key, set)) = split_set(part, " notin ") {
            Requirement::NotIn(key, set.ok_or_else(|| error("expected (a,b) after notin"))?)
        } else if let Some((key, set)) = split_set(part, " in ") {
            Requirement::In(key, set.ok_or_else(|| error("expected (a,b) after in"))?)
        } else if let Some(key) = part.strip_prefix('!') {
            Requirement::Absent(key.trim().to_owned())
        } else {
            Requirement::Exists(part.to_owned())
        };
        let key = match &requirement {
            Requirement::Exists(k)
            | Requirement::Absent(k)
            | Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => k,
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(error("empty or malformed key"));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// Splits at commas outside parentheses: `env in (a,b),tier` → `env in (a,b)`, `tier`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
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

/// `key <op> (a, b)` → the key and the set (`None` if the set is malformed).
fn split_set(part: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, rest) = part.split_once(op)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_owned()).collect());
    Some((key.trim().to_owned(), set))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selects_like_the_api_server() {
        let pod = json!({"metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}},
                         "spec": {"nodeName": "edge-1"}});
        let sel = |l: &str, f: &str| Selector::parse(Some(l), Some(f)).unwrap().matches(&pod);
        assert!(sel("", ""));
        assert!(sel("app=web", ""));
        assert!(sel("app==web,tier!=db", ""));
        assert!(sel("tier in (front, back),!canary", ""));
        assert!(!sel("tier notin (front)", ""));
        assert!(!sel("app", "spec.nodeName=edge-2"));
        assert!(sel("app", "spec.nodeName=edge-1,metadata.name!=web-2"));
        assert!(Selector::parse(None, Some("spec.nodeName")).is_err());
        assert!(Selector::parse(Some("env in a,b"), None).is_err());
        assert!(Selector::parse(Some("=x"), None).is_err());
    }
}
