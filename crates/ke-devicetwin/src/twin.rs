//! A device's twins and upstream's update algorithm (`dtmanager/twin.go`, `dttype`), as pure
//! functions of the current twins, the request and the time — so every rule is checked against
//! upstream's own payloads (golden `mqtt/edge-*`, messages 27/29) without a broker or a clock.
//!
//! Rules that are upstream's: a twin reported for the first time gets type `string` unless the
//! report names one, `optional: true` unless it says otherwise, and version `{cloud:0, edge:1}`
//! on each side it carries; every later report of a side bumps that side's edge version and
//! timestamp, even for an unchanged value; a live twin never changes type; `null` deletes an
//! optional twin (its row stays, typed `deleted`); the delta covers every twin whose expected
//! value differs from its actual one. Where upstream panics (a side without a value) or skips
//! silently (deleting an unknown twin aborts the rest), we answer 400 or skip only that twin.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::json::{field, str_field};

/// One side of a twin: `expected` (desired) or `actual` (reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub value: String,
    /// Milliseconds since the epoch when this side was last reported.
    pub timestamp: i64,
}

/// `TwinVersion`: how many times the cloud and the edge have set a side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version {
    pub cloud: i64,
    pub edge: i64,
}

impl Version {
    pub fn to_json(self) -> Value {
        json!({ "cloud": self.cloud, "edge": self.edge })
    }

    pub fn from_json(value: &Value) -> Option<Version> {
        Some(Version {
            cloud: field(value, "cloud")?.as_i64()?,
            edge: field(value, "edge")?.as_i64()?,
        })
    }
}

pub const DELETED: &str = "deleted";

/// A twin as stored in a `device_twin` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub expected: Option<Side>,
    pub actual: Option<Side>,
    pub optional: bool,
    /// `metadata.type`: `string`, `integer`, `float`, `boolean`…, or `deleted`.
    pub attr_type: String,
    /// The `metadata` column: the report's metadata without `type` (`{}`), or empty.
    pub metadata: String,
    pub expected_version: Option<Version>,
    pub actual_version: Option<Version>,
}

impl Twin {
    pub fn is_deleted(&self) -> bool {
        self.attr_type == DELETED
    }

    /// `MsgTwin` JSON in upstream's field order; `versions` only for the cloud's copy.
    pub fn to_json(&self, versions: bool) -> Value {
        self.sides_to_json(true, true, versions)
    }

    fn sides_to_json(&self, expected: bool, actual: bool, versions: bool) -> Value {
        let mut out = Map::new();
        let side = |s: &Side| json!({ "value": s.value, "metadata": { "timestamp": s.timestamp } });
        if let Some(s) = self.expected.as_ref().filter(|_| expected) {
            out.insert("expected".into(), side(s));
        }
        if let Some(s) = self.actual.as_ref().filter(|_| actual) {
            out.insert("actual".into(), side(s));
        }
        out.insert("optional".into(), json!(self.optional));
        out.insert("metadata".into(), json!({ "type": self.attr_type }));
        if versions {
            if let Some(v) = self.expected_version.filter(|_| expected) {
                out.insert("expected_version".into(), v.to_json());
            }
            if let Some(v) = self.actual_version.filter(|_| actual) {
                out.insert("actual_version".into(), v.to_json());
            }
        }
        Value::Object(out)
    }
}

/// A request the twin module answers with an error result (`dttype.Result`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct TwinError {
    pub code: u16,
    pub reason: String,
}

impl TwinError {
    pub fn bad_request(reason: impl Into<String>) -> TwinError {
        TwinError {
            code: 400,
            reason: reason.into(),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> TwinError {
        TwinError {
            code: 404,
            reason: reason.into(),
        }
    }

    /// `{"event_id","timestamp","code","reason"}`.
    pub fn result(&self, event_id: &str, now: i64) -> Value {
        json!({ "event_id": event_id, "timestamp": now, "code": self.code, "reason": self.reason })
    }
}

const BAD_BODY: &str = "Unmarshal update request body failed, please check the request";
const NO_TWIN: &str = "Update twin error, key:twin does not exist";
const BAD_KEY: &str = "The key of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of key should be less than 128 bytes";
const BAD_VALUE: &str = "The value of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of value should be less than 512 bytes";

fn allowed(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@#".contains(&b))
}

/// One twin of a `DeviceTwinUpdate`: `None` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinReport {
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub optional: Option<bool>,
    /// `metadata` was present; with its `type`, if any.
    pub metadata: Option<Option<String>>,
}

/// A parsed `…/twin/update` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    pub event_id: String,
    pub twins: BTreeMap<String, Option<TwinReport>>,
}

/// Parses and validates a `DeviceTwinUpdate` (keys and values as upstream allows them).
pub fn parse_update(payload: &[u8]) -> Result<UpdateRequest, TwinError> {
    let body: Value =
        serde_json::from_slice(payload).map_err(|_| TwinError::bad_request(BAD_BODY))?;
    if !body.is_object() {
        return Err(TwinError::bad_request(BAD_BODY));
    }
    let event_id = str_field(&body, "event_id").unwrap_or_default().to_owned();
    let twins = match field(&body, "twin") {
        Some(Value::Object(twins)) => twins,
        Some(Value::Null) | None => return Err(TwinError::bad_request(NO_TWIN)),
        Some(_) => return Err(TwinError::bad_request(BAD_BODY)),
    };
    let mut parsed = BTreeMap::new();
    for (key, twin) in twins {
        if !allowed(key, 128) {
            return Err(TwinError::bad_request(BAD_KEY));
        }
        let report = match twin {
            Value::Null => None,
            Value::Object(_) => Some(parse_report(twin)?),
            _ => return Err(TwinError::bad_request(BAD_BODY)),
        };
        parsed.insert(key.clone(), report);
    }
    Ok(UpdateRequest {
        event_id,
        twins: parsed,
    })
}

fn parse_report(twin: &Value) -> Result<TwinReport, TwinError> {
    let side = |name: &str| -> Result<Option<String>, TwinError> {
        match field(twin, name) {
            None | Some(Value::Null) => Ok(None),
            Some(side) => match field(side, "value") {
                Some(Value::String(value)) => {
                    if !value.is_empty() && !allowed(value, 512) {
                        return Err(TwinError::bad_request(BAD_VALUE));
                    }
                    Ok(Some(value.clone()))
                }
                _ => Err(TwinError::bad_request(format!(
                    "twin {name} has no string value"
                ))),
            },
        }
    };
    let optional = match field(twin, "optional") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(TwinError::bad_request(BAD_BODY)),
    };
    let metadata = match field(twin, "metadata") {
        None | Some(Value::Null) => None,
        Some(meta) => Some(str_field(meta, "type").map(str::to_owned)),
    };
    Ok(TwinReport {
        expected: side("expected")?,
        actual: side("actual")?,
        optional,
        metadata,
    })
}

/// `ValidateValue`: does `value` fit the twin's type?
fn check_type(attr_type: &str, value: &str) -> Result<(), TwinError> {
    let ok = match attr_type {
        "" | "string" | "bytes" | DELETED => true,
        "int" | "integer" => value.parse::<i64>().is_ok(),
        "float" | "double" => value.parse::<f64>().is_ok(),
        "boolean" | "bool" => value == "true" || value == "false",
        _ => return Err(TwinError::bad_request("the value type is not allowed")),
    };
    if ok || value.is_empty() {
        return Ok(());
    }
    Err(TwinError::bad_request(match attr_type {
        "int" | "integer" => "the value is not int or integer",
        "float" | "double" => "the value is not float",
        _ => "the bool value must be true or false",
    }))
}

/// What an update did, for the twin module to store and publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The device's twins after the update.
    pub twins: BTreeMap<String, Twin>,
    /// Twins written or soft-deleted (their new rows).
    pub changed: Vec<String>,
    /// `…/twin/update/result` payload.
    pub result: Value,
    /// `…/twin/update/document` payload, when something changed.
    pub document: Option<Value>,
    /// The `twin` map of the cloud's `edge_updated` (with versions), when something changed.
    pub sync: Option<Map<String, Value>>,
}

/// Applies an edge-side (`rest`) update to `current` at `now`.
pub fn apply_update(
    current: &BTreeMap<String, Twin>,
    request: &UpdateRequest,
    now: i64,
) -> Result<Outcome, TwinError> {
    let mut twins = current.clone();
    let mut result = Map::new();
    let mut document = Map::new();
    let mut sync = Map::new();
    let mut changed = Vec::new();
    for (key, report) in &request.twins {
        let before = twins.get(key).cloned();
        match (before, report) {
            (Some(old), None) => {
                if !old.optional || old.is_deleted() {
                    continue;
                }
                let mut gone = old.clone();
                gone.expected = None;
                gone.actual = None;
                gone.attr_type = DELETED.into();
                let bump = |v: Option<Version>| {
                    v.map(|v| Version {
                        edge: v.edge + 1,
                        ..v
                    })
                };
                gone.expected_version = bump(old.expected_version);
                gone.actual_version = bump(old.actual_version);
                result.insert(key.clone(), Value::Null);
                sync.insert(key.clone(), gone.to_json(true));
                document.insert(
                    key.clone(),
                    json!({ "last": old.to_json(false), "current": Value::Null }),
                );
                twins.insert(key.clone(), gone);
                changed.push(key.clone());
            }
            (None, None) => {}
            (None, Some(report)) => {
                let attr_type = report
                    .metadata
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| "string".into());
                let first = Some(Version { cloud: 0, edge: 1 });
                let side = |value: &Option<String>| -> Result<Option<Side>, TwinError> {
                    match value {
                        Some(value) => {
                            check_type(&attr_type, value)?;
                            Ok(Some(Side {
                                value: value.clone(),
                                timestamp: now,
                            }))
                        }
                        None => Ok(None),
                    }
                };
                let twin = Twin {
                    expected: side(&report.expected)?,
                    actual: side(&report.actual)?,
                    optional: report.optional.unwrap_or(true),
                    metadata: if report.metadata.is_some() {
                        "{}".into()
                    } else {
                        String::new()
                    },
                    expected_version: report.expected.as_ref().and(first),
                    actual_version: report.actual.as_ref().and(first),
                    attr_type,
                };
                result.insert(key.clone(), twin.to_json(false));
                sync.insert(key.clone(), twin.to_json(true));
                document.insert(
                    key.clone(),
                    json!({ "last": Value::Null, "current": twin.to_json(false) }),
                );
                twins.insert(key.clone(), twin);
                changed.push(key.clone());
            }
            (Some(old), Some(report)) => {
                let mut twin = old.clone();
                if twin.is_deleted() {
                    twin.attr_type = report
                        .metadata
                        .clone()
                        .flatten()
                        .unwrap_or_else(|| "string".into());
                }
                let bump = |v: Option<Version>| {
                    let v = v.unwrap_or_default();
                    Some(Version {
                        edge: v.edge + 1,
                        ..v
                    })
                };
                if let Some(value) = &report.expected {
                    check_type(&twin.attr_type, value)?;
                    twin.expected = Some(Side {
                        value: value.clone(),
                        timestamp: now,
                    });
                    twin.expected_version = bump(twin.expected_version);
                }
                if let Some(value) = &report.actual {
                    check_type(&twin.attr_type, value)?;
                    twin.actual = Some(Side {
                        value: value.clone(),
                        timestamp: now,
                    });
                    twin.actual_version = bump(twin.actual_version);
                }
                if report.optional == Some(false) {
                    twin.optional = false;
                }
                if report.metadata.is_some() {
                    twin.metadata = "{}".into();
                }
                if twin == old {
                    continue;
                }
                let (sent_expected, sent_actual) =
                    (report.expected.is_some(), report.actual.is_some());
                result.insert(
                    key.clone(),
                    twin.sides_to_json(sent_expected, sent_actual, false),
                );
                sync.insert(
                    key.clone(),
                    twin.sides_to_json(sent_expected, sent_actual, true),
                );
                let last = if old.is_deleted() {
                    Value::Null
                } else {
                    old.to_json(false)
                };
                document.insert(
                    key.clone(),
                    json!({ "last": last, "current": twin.to_json(false) }),
                );
                twins.insert(key.clone(), twin);
                changed.push(key.clone());
            }
        }
    }
    let result = json!({ "event_id": request.event_id, "timestamp": now, "twin": result });
    let document = (!document.is_empty())
        .then(|| json!({ "event_id": request.event_id, "timestamp": now, "twin": document }));
    Ok(Outcome {
        twins,
        changed,
        result,
        document,
        sync: (!sync.is_empty()).then_some(sync),
    })
}

/// `…/twin/update/delta` (`BuildDeviceTwinDelta`): every live twin with an expected value, and
/// under `delta` the expected values the device has not reached. `None` when it has reached
/// them all.
pub fn delta(twins: &BTreeMap<String, Twin>, event_id: &str, now: i64) -> Option<Value> {
    let mut all = Map::new();
    let mut delta = Map::new();
    for (key, twin) in twins {
        let Some(expected) = twin.expected.as_ref().filter(|e| !e.value.is_empty()) else {
            continue;
        };
        if twin.is_deleted() {
            continue;
        }
        all.insert(key.clone(), twin.to_json(false));
        let actual = twin.actual.as_ref().map_or("", |a| a.value.as_str());
        if expected.value != actual {
            delta.insert(key.clone(), json!(expected.value));
        }
    }
    (!delta.is_empty())
        .then(|| json!({ "event_id": event_id, "timestamp": now, "twin": all, "delta": delta }))
}

/// `…/twin/get/result`: every live twin, without versions.
pub fn get_result(twins: &BTreeMap<String, Twin>, event_id: &str, now: i64) -> Value {
    let live: Map<String, Value> = twins
        .iter()
        .filter(|(_, twin)| !twin.is_deleted())
        .map(|(key, twin)| (key.clone(), twin.to_json(false)))
        .collect();
    json!({ "event_id": event_id, "timestamp": now, "twin": live })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(expected: Option<&str>, actual: Option<&str>) -> Option<TwinReport> {
        Some(TwinReport {
            expected: expected.map(str::to_owned),
            actual: actual.map(str::to_owned),
            optional: None,
            metadata: Some(Some("integer".into())),
        })
    }

    fn request(twins: Vec<(&str, Option<TwinReport>)>) -> UpdateRequest {
        UpdateRequest {
            event_id: "e".into(),
            twins: twins.into_iter().map(|(k, r)| (k.to_owned(), r)).collect(),
        }
    }

    #[test]
    fn validation_follows_upstream() {
        assert_eq!(parse_update(b"{").unwrap_err().reason, BAD_BODY);
        assert_eq!(parse_update(b"[1]").unwrap_err().reason, BAD_BODY);
        assert_eq!(
            parse_update(br#"{"event_id":"x"}"#).unwrap_err().reason,
            NO_TWIN
        );
        assert_eq!(
            parse_update(br#"{"twin":{"a b":{}}}"#).unwrap_err().reason,
            BAD_KEY
        );
        let long = format!(r#"{{"twin":{{"{}":{{}}}}}}"#, "k".repeat(129));
        assert_eq!(parse_update(long.as_bytes()).unwrap_err().reason, BAD_KEY);
        assert_eq!(
            parse_update(br#"{"twin":{"t":{"actual":{"value":"a\"b"}}}}"#)
                .unwrap_err()
                .reason,
            BAD_VALUE
        );
        // Upstream panics on a side without a value; we answer.
        assert_eq!(
            parse_update(br#"{"twin":{"t":{"expected":{}}}}"#)
                .unwrap_err()
                .code,
            400
        );
        // Go matches field names case-insensitively.
        let parsed =
            parse_update(br#"{"EVENT_ID":"x","Twin":{"t":{"Actual":{"Value":"1"}}}}"#).unwrap();
        assert_eq!(parsed.event_id, "x");
        assert_eq!(
            parsed.twins["t"].as_ref().unwrap().actual.as_deref(),
            Some("1")
        );
    }

    #[test]
    fn values_must_fit_the_twin_type_and_a_refused_update_changes_nothing() {
        let first = apply_update(
            &BTreeMap::new(),
            &request(vec![("t", report(None, Some("1")))]),
            1,
        )
        .unwrap();
        let bad = apply_update(
            &first.twins,
            &request(vec![
                ("a", report(None, Some("2"))),
                ("t", report(None, Some("x"))),
            ]),
            2,
        )
        .unwrap_err();
        assert_eq!(bad.reason, "the value is not int or integer");
        assert!(check_type("float", "1.5").is_ok());
        assert!(check_type("boolean", "yes").is_err());
        assert!(check_type("uuid", "x").is_err());
    }

    #[test]
    fn null_deletes_optional_twins_softly_and_a_report_revives_them() {
        let first = apply_update(
            &BTreeMap::new(),
            &request(vec![("t", report(Some("1"), Some("2")))]),
            1,
        )
        .unwrap();
        let deleted = apply_update(&first.twins, &request(vec![("t", None)]), 2).unwrap();
        let twin = &deleted.twins["t"];
        assert!(twin.is_deleted() && twin.expected.is_none() && twin.actual.is_none());
        assert_eq!(twin.actual_version, Some(Version { cloud: 0, edge: 2 }));
        assert_eq!(deleted.result["twin"]["t"], Value::Null);
        assert_eq!(
            deleted.document.unwrap()["twin"]["t"]["current"],
            Value::Null
        );
        assert!(
            get_result(&deleted.twins, "", 3)["twin"]
                .as_object()
                .unwrap()
                .is_empty()
        );
        // Deleting again, or an unknown twin, does nothing.
        let again =
            apply_update(&deleted.twins, &request(vec![("t", None), ("u", None)]), 3).unwrap();
        assert!(again.changed.is_empty() && again.sync.is_none());

        let revived = apply_update(
            &deleted.twins,
            &request(vec![("t", report(None, Some("5")))]),
            4,
        )
        .unwrap();
        assert_eq!(revived.twins["t"].attr_type, "integer");
        assert_eq!(revived.document.unwrap()["twin"]["t"]["last"], Value::Null);
    }

    #[test]
    fn a_live_twin_keeps_its_type_and_optional_only_becomes_false() {
        let first = apply_update(
            &BTreeMap::new(),
            &request(vec![("t", report(None, Some("1")))]),
            1,
        )
        .unwrap();
        let mut retyped = report(None, Some("2"));
        if let Some(r) = retyped.as_mut() {
            r.metadata = Some(Some("string".into()));
            r.optional = Some(false);
        }
        let second = apply_update(&first.twins, &request(vec![("t", retyped)]), 2).unwrap();
        assert_eq!(second.twins["t"].attr_type, "integer");
        assert!(!second.twins["t"].optional);
        // An actual-only report answers with the actual side only.
        assert!(second.result["twin"]["t"].get("expected").is_none());
        let mut again = report(None, Some("3"));
        if let Some(r) = again.as_mut() {
            r.optional = Some(true);
        }
        let third = apply_update(&second.twins, &request(vec![("t", again)]), 3).unwrap();
        assert!(!third.twins["t"].optional);
        // Not optional: null does not delete it.
        let kept = apply_update(&third.twins, &request(vec![("t", None)]), 4).unwrap();
        assert!(!kept.twins["t"].is_deleted());
    }

    #[test]
    fn the_delta_lists_unreached_expectations_only() {
        let both = apply_update(
            &BTreeMap::new(),
            &request(vec![
                ("a", report(Some("1"), Some("1"))),
                ("b", report(Some("2"), Some("3"))),
                ("c", report(None, Some("4"))),
            ]),
            1,
        )
        .unwrap();
        let delta = delta(&both.twins, "d", 1).unwrap();
        assert_eq!(delta["delta"], json!({ "b": "2" }));
        assert_eq!(
            delta["twin"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let reached = apply_update(
            &both.twins,
            &request(vec![("b", report(None, Some("2")))]),
            2,
        )
        .unwrap();
        assert!(super::delta(&reached.twins, "d", 2).is_none());
    }
}
