//! The JSONPath subset CRD `additionalPrinterColumns` use: `.a.b`, `.a[0]`, `.a[*].b` and
//! filters `.a[?(@.type=="Ready")].status`. apiextensions accepts "simple" paths only, so
//! anything else is a parse error (the column prints empty), never a panic.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.<path>=="<value>")]`
    Filter(Vec<String>, Value),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    pub fn parse(text: &str) -> Option<Path> {
        let text = text.trim();
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let mut rest = text.strip_prefix('.')?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                let inner = &after[..end];
                steps.push(bracket(inner)?);
                rest = &after[end + 1..];
                rest = rest.strip_prefix('.').unwrap_or(rest);
                continue;
            }
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Field(rest[..end].to_owned()));
            rest = &rest[end..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        if steps.is_empty() {
            return None;
        }
        Some(Path(steps))
    }

    /// Every value the path selects, in order.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(f) => next.extend(v.get(f)),
                    Step::Index(i) => next.extend(v.get(*i)),
                    Step::All => next.extend(v.as_array().into_iter().flatten()),
                    Step::Filter(path, want) => next.extend(
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .filter(|item| lookup(item, path) == Some(want)),
                    ),
                }
            }
            current = next;
        }
        current
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, f| v.get(f))
}

fn bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(Step::Index(i));
    }
    let filter = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (lhs, rhs) = filter.split_once("==")?;
    let path: Vec<String> = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_owned)
        .collect();
    let rhs = rhs.trim();
    let want = if let Some(s) = rhs
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Value::String(s.to_owned())
    } else {
        serde_json::from_str(rhs).ok()?
    };
    Some(Step::Filter(path, want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let v = json!({"spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let sel =
            |p: &str| Path::parse(p).map(|p| p.select(&v).into_iter().cloned().collect::<Vec<_>>());
        assert_eq!(sel(".spec.replicas"), Some(vec![json!(3)]));
        assert_eq!(sel("{.spec.ports[1].port}"), Some(vec![json!(443)]));
        assert_eq!(
            sel(".spec.ports[*].port"),
            Some(vec![json!(80), json!(443)])
        );
        assert_eq!(
            sel(r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(vec![json!("True")])
        );
        assert_eq!(sel(".spec.missing"), Some(vec![]));
        for bad in ["spec", ".", ".a[", ".a[?(x)]", ".a..b"] {
            assert!(Path::parse(bad).is_none(), "{bad}");
        }
    }
}
