//! Reading a few fields out of a stored object without decoding all of it. Selecting 100 pods
//! out of 10,000 by `spec.nodeName` would otherwise build 10,000 full JSON trees; here each
//! object is scanned (borrowed, no allocation per field) and only the named paths are
//! materialized, into a sparse object the ordinary selectors can run on.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A sparse copy of `raw` with only the values at `paths` (each a list of field names). `None`
/// when `raw` cannot be skimmed (not an object, or keys with escapes): decode it fully instead.
pub fn sparse(raw: &[u8], paths: &[Vec<&str>]) -> Option<Value> {
    let text = std::str::from_utf8(raw).ok()?;
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let mut out = Value::Object(Map::new());
    for path in paths {
        let mut cur = text;
        let mut found = true;
        for seg in path {
            match field(cur, seg) {
                Found::Value(v) => cur = v,
                Found::Missing => {
                    found = false;
                    break;
                }
                Found::Unskimmable => return None,
            }
        }
        if found {
            let value: Value = serde_json::from_str(cur).ok()?;
            insert(&mut out, path, value);
        }
    }
    Some(out)
}

enum Found<'a> {
    Value(&'a str),
    /// Absent, or `json` is not an object: a selector sees a missing field.
    Missing,
    /// An object this cannot read without decoding (escaped keys, malformed).
    Unskimmable,
}

/// The raw JSON of field `name` of the object `json`, found by one scan that skips every other
/// field without building it.
fn field<'a>(json: &'a str, name: &str) -> Found<'a> {
    if !json.trim_start().starts_with('{') {
        return Found::Missing;
    }
    let mut de = serde_json::Deserializer::from_str(json);
    match serde::de::DeserializeSeed::deserialize(FindKey(name), &mut de) {
        Ok(Some(v)) => Found::Value(v.get()),
        Ok(None) => Found::Missing,
        Err(_) => Found::Unskimmable,
    }
}

struct FindKey<'n>(&'n str);

impl<'de> serde::de::DeserializeSeed<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            if key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

fn insert(out: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = out;
    for seg in parents {
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        cur = map.entry(*seg).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert((*last).to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_asked_fields_come_out() {
        let raw = br#"{"metadata":{"name":"p","labels":{"a":"b"}},"spec":{"nodeName":"n1","containers":[{"x":1}]},"status":"odd"}"#;
        let paths = vec![
            vec!["metadata", "labels"],
            vec!["spec", "nodeName"],
            vec!["status", "phase"],
            vec!["nope"],
        ];
        assert_eq!(
            sparse(raw, &paths),
            Some(json!({"metadata": {"labels": {"a": "b"}}, "spec": {"nodeName": "n1"}}))
        );
        assert_eq!(sparse(b"[1]", &paths), None);
        assert_eq!(sparse(b"{\"a\\u0062\":1}", &paths), None);
    }
}
