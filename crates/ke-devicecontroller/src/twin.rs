//! Twin reports from the edge (`device/<ns>/<name>/twin/edge_updated`, upstream's
//! `DeviceTwinUpdate`) folded into `DeviceStatus.status.twins`, as upstream's devicecontroller
//! does: only properties the Device declares, each entry replaced wholesale by
//! `{propertyName, reported, observedDesired}` built from the edge's `actual` and `expected`.

use serde_json::{Map, Value, json};

/// One side of an edge twin (`actual` or `expected`) as a DeviceStatus `TwinProperty`:
/// `{value, metadata: {timestamp, type}}`, or `None` when the edge sent no value.
fn twin_property(side: Option<&Value>, twin_type: Option<&str>) -> Option<Value> {
    let side = side?;
    let value = side.get("value")?.as_str()?;
    let mut metadata = Map::new();
    if let Some(timestamp) = side.pointer("/metadata/timestamp").and_then(Value::as_i64) {
        metadata.insert("timestamp".into(), json!(timestamp.to_string()));
    }
    if let Some(twin_type) = twin_type {
        metadata.insert("type".into(), json!(twin_type));
    }
    Some(json!({ "value": value, "metadata": metadata }))
}

/// `current` (the DeviceStatus twins) with the twins of `update` (the `twin` map of a
/// `DeviceTwinUpdate`) applied; twins not in `declared` (the Device's property names) are
/// ignored, as upstream ignores them.
pub fn apply_twin_update(current: &[Value], update: &Value, declared: &[String]) -> Vec<Value> {
    let mut twins: Vec<Value> = current.to_vec();
    let Some(reported) = update.as_object() else {
        return twins;
    };
    for (name, twin) in reported {
        if !declared.iter().any(|d| d == name) {
            continue;
        }
        let twin_type = twin.pointer("/metadata/type").and_then(Value::as_str);
        let mut entry = Map::new();
        entry.insert("propertyName".into(), json!(name));
        // Upstream writes the zero TwinProperty (empty value) for a missing side.
        let empty = || json!({ "value": "" });
        entry.insert(
            "reported".into(),
            twin_property(twin.get("actual"), twin_type).unwrap_or_else(empty),
        );
        entry.insert(
            "observedDesired".into(),
            twin_property(twin.get("expected"), twin_type).unwrap_or_else(empty),
        );
        let entry = Value::Object(entry);
        match twins
            .iter_mut()
            .find(|t| t["propertyName"] == name.as_str())
        {
            Some(existing) => *existing = entry,
            None => twins.push(entry),
        }
    }
    twins
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Value {
        let path = format!(
            "{}/../ke-message/tests/golden/messages/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ke_message::decode(&bytes).expect("golden decodes").content
    }

    #[test]
    fn upstream_twin_report_becomes_reported_and_observed_desired() {
        let update = golden("27-twin-edge-updated.json");
        let twins = apply_twin_update(&[], &update["twin"], &["temperature".to_owned()]);
        assert_eq!(
            twins,
            vec![json!({
                "propertyName": "temperature",
                "reported": {"value": "25", "metadata": {"timestamp": "1767225632000", "type": "integer"}},
                "observedDesired": {"value": "20", "metadata": {"timestamp": "1767225632000", "type": "integer"}},
            })]
        );
        // The second report replaces the entry, it does not append.
        let second = golden("29-twin-edge-updated-second.json");
        let twins = apply_twin_update(&twins, &second["twin"], &["temperature".to_owned()]);
        assert_eq!(twins.len(), 1);
        assert_eq!(twins[0]["reported"]["value"], "26");
    }

    #[test]
    fn undeclared_twins_and_garbage_are_ignored() {
        let keep = vec![json!({"propertyName": "humidity", "reported": {"value": "40"}})];
        let update = json!({"pressure": {"actual": {"value": "1"}}, "humidity": "not a twin"});
        let twins = apply_twin_update(&keep, &update, &["humidity".to_owned()]);
        assert_eq!(twins[0]["propertyName"], "humidity");
        assert_eq!(twins[0]["reported"], json!({"value": ""}));
        assert_eq!(twins.len(), 1);
        assert_eq!(apply_twin_update(&keep, &json!(null), &[]), keep);
    }
}
