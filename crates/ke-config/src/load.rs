//! File → value → merge onto defaults → typed struct → validation.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ConfigError, FieldError};

/// Real configs are a few KiB; anything this large is a mistake (or an
/// attempt to make us allocate), and we say so instead of parsing it.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Configs nest about seven levels; the limit keeps every recursive pass in
/// this crate (convert, merge, render) far from the stack's end.
const MAX_DEPTH: usize = 64;

const INLINE: &str = "<inline>";

/// What the loader needs from a config type.
pub(crate) trait ConfigDoc: Serialize + DeserializeOwned {
    const API_VERSION: &'static str;
    const KIND: &'static str;
    fn validation_errors(&self) -> Vec<FieldError>;
}

pub(crate) fn load_file<T: ConfigDoc>(path: &Path, defaults: &T) -> Result<T, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Read one byte past the limit so an oversized file is detected without
    // trusting metadata (which lies for pipes and /proc files).
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: path.to_owned(),
            size: std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len()),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
        file: path.to_owned(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    load_str(&text, Some(path), defaults)
}

pub(crate) fn load_str<T: ConfigDoc>(
    text: &str,
    path: Option<&Path>,
    defaults: &T,
) -> Result<T, ConfigError> {
    let file: PathBuf = path.map_or_else(|| PathBuf::from(INLINE), Path::to_owned);
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file,
            size: text.len() as u64,
            limit: MAX_CONFIG_BYTES,
        });
    }
    let overlay = parse_yaml(text, &file)?;
    let mut merged =
        serde_json::to_value(defaults).map_err(|e| ConfigError::Internal(e.to_string()))?;
    merge(&mut merged, overlay);
    // Checked after merging so a case-variant key (`apiversion`) that the
    // merge folded onto `apiVersion` is checked too.
    if let Value::Object(map) = &merged {
        check_type_meta::<T>(map, &file)?;
    }

    let config: T = serde_path_to_error::deserialize(merged).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Field {
            file: file.clone(),
            field,
            message: e.into_inner().to_string(),
        }
    })?;
    let errors = config.validation_errors();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { file, errors })
    }
}

/// YAML text → JSON value with string keys, the shape Go's sigs.k8s.io/yaml
/// hands to encoding/json.
pub(crate) fn parse_yaml(text: &str, file: &Path) -> Result<Map<String, Value>, ConfigError> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
    // Go's YAML library honours `<<: *anchor` merge keys; so do we.
    doc.apply_merge().map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let found = match &doc {
        serde_yaml::Value::Mapping(_) => "",
        serde_yaml::Value::Null => {
            return Err(ConfigError::Empty {
                file: file.to_owned(),
            });
        }
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a sequence",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    };
    if !found.is_empty() {
        return Err(ConfigError::NotAMapping {
            file: file.to_owned(),
            found,
        });
    }
    match to_json(doc, "", 0).map_err(|(field, message)| ConfigError::Field {
        file: file.to_owned(),
        field,
        message,
    })? {
        Value::Object(map) => Ok(map),
        _ => Err(ConfigError::Internal(
            "mapping converted to non-object".into(),
        )),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn to_json(v: serde_yaml::Value, path: &str, depth: usize) -> Result<Value, (String, String)> {
    if depth > MAX_DEPTH {
        return Err((
            path.to_owned(),
            format!("nested more than {MAX_DEPTH} levels deep"),
        ));
    }
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let num = serde_json::Number::from_f64(f)
                    .ok_or_else(|| (path.to_owned(), format!("{n} is not a finite number")))?;
                Value::Number(num)
            }
        }
        serde_yaml::Value::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Null => "null".to_owned(),
                    _ => {
                        return Err((
                            path.to_owned(),
                            "mapping keys must be plain scalars".to_owned(),
                        ));
                    }
                };
                let child = to_json(v, &join(path, &key), depth + 1)?;
                out.insert(key, child);
            }
            Value::Object(out)
        }
        // Tags carry no meaning in these configs; keep the value.
        serde_yaml::Value::Tagged(t) => to_json(t.value, path, depth)?,
    })
}

/// A wrong apiVersion/kind means the user handed us the other component's
/// file (or a future schema); say which value we expected.
fn check_type_meta<T: ConfigDoc>(
    merged: &Map<String, Value>,
    file: &Path,
) -> Result<(), ConfigError> {
    for (field, expected) in [("apiVersion", T::API_VERSION), ("kind", T::KIND)] {
        match merged.get(field) {
            None => {}
            Some(Value::String(s)) if s == expected => {}
            Some(other) => {
                return Err(ConfigError::WrongTypeMeta {
                    file: file.to_owned(),
                    field,
                    expected,
                    found: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Applies `overlay` onto `base` the way Go's json.Unmarshal fills a
/// pre-populated struct: objects merge key by key (struct fields and maps
/// alike keep entries the file does not mention), anything else replaces.
///
/// A key that is absent from `base` but matches one of its keys ignoring
/// ASCII case is renamed to that key, because encoding/json matches field
/// names case-insensitively and upstream accepts such files.
pub(crate) fn merge(base: &mut Value, overlay: Map<String, Value>) {
    let Value::Object(base_map) = base else {
        *base = Value::Object(overlay);
        return;
    };
    for (key, value) in overlay {
        let key = if base_map.contains_key(&key) {
            key
        } else {
            let mut folded = base_map.keys().filter(|k| k.eq_ignore_ascii_case(&key));
            match (folded.next(), folded.next()) {
                (Some(only), None) => only.clone(),
                _ => key,
            }
        };
        match (base_map.get_mut(&key), value) {
            (Some(slot @ Value::Object(_)), Value::Object(child)) => merge(slot, child),
            (_, value) => {
                base_map.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn merge_keeps_unmentioned_keys_and_replaces_scalars_and_arrays() {
        let mut base = json!({"a": {"x": 1, "y": [1, 2]}, "b": true});
        merge(&mut base, obj(json!({"a": {"y": [3]}, "c": null})));
        assert_eq!(base, json!({"a": {"x": 1, "y": [3]}, "b": true, "c": null}));
    }

    #[test]
    fn merge_folds_case_like_encoding_json() {
        let mut base = json!({"tlsCAFile": "a"});
        merge(&mut base, obj(json!({"tlscafile": "b"})));
        assert_eq!(base, json!({"tlsCAFile": "b"}));
    }

    #[test]
    fn yaml_keys_become_strings_and_depth_is_bounded() {
        let m = parse_yaml("1: a\ntrue: b\n", Path::new("f")).ok();
        assert_eq!(m.map(Value::Object), Some(json!({"1": "a", "true": "b"})));

        let deep = format!("a: {}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_yaml(&deep, Path::new("f")).is_err());
    }
}
