//! Devices of this node: who they are (membership), their state, and the payloads about them
//! (`dtmanager/{membership,device}.go`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::json::{field, str_field};
use crate::twin::Twin;

/// A device as the twin module keeps it (`device` row plus its `device_twin` rows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    /// `<namespace>/<name>`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub state: String,
    /// RFC 3339, the last time the device reported itself online.
    pub last_online: String,
    pub twins: BTreeMap<String, Twin>,
}

impl Device {
    /// The membership list entry (`dttype.Device`, empty fields omitted, no twins).
    fn to_member_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("id".into(), json!(self.id));
        for (key, value) in [
            ("name", &self.name),
            ("description", &self.description),
            ("state", &self.state),
            ("last_online", &self.last_online),
        ] {
            if !value.is_empty() {
                out.insert(key.into(), json!(value));
            }
        }
        Value::Object(out)
    }
}

/// A device named by the cloud: a membership entry (`{id, name, description}`) or a Device
/// object (`metadata.name`, the `description` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub description: String,
}

impl Member {
    pub fn from_membership(entry: &Value) -> Option<Member> {
        let id = str_field(entry, "id").filter(|id| !id.is_empty())?;
        Some(Member {
            id: id.to_owned(),
            name: str_field(entry, "name").unwrap_or(id).to_owned(),
            description: str_field(entry, "description")
                .unwrap_or_default()
                .to_owned(),
        })
    }

    pub fn from_device_object(device: &Value) -> Option<Member> {
        let metadata = device.get("metadata")?;
        let name = metadata.get("name")?.as_str()?;
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Some(Member {
            id: format!("{namespace}/{name}"),
            name: name.to_owned(),
            description: metadata
                .pointer("/labels/description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// A `MembershipUpdate` from the cloud (golden message 24): the raw entries, echoed unchanged
/// in `…/membership/updated`.
pub struct MembershipUpdate {
    pub added: Vec<Value>,
    pub removed: Vec<Value>,
}

pub fn parse_membership_update(content: &Value) -> Option<MembershipUpdate> {
    let list = |name: &str| match field(content, name) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    content.is_object().then(|| MembershipUpdate {
        added: list("added_devices"),
        removed: list("removed_devices"),
    })
}

/// `$hw/events/node/<node>/membership/updated` for one added or removed device.
pub fn membership_updated(entry: &Value, added: bool, event_id: &str, now: i64) -> Value {
    let (added_devices, removed_devices) = if added {
        (json!([entry]), Value::Null)
    } else {
        (Value::Null, json!([entry]))
    };
    json!({
        "event_id": event_id,
        "timestamp": now,
        "added_devices": added_devices,
        "removed_devices": removed_devices,
    })
}

/// `…/membership/get/result`: this node's devices, by id.
pub fn membership_get_result<'a>(
    devices: impl Iterator<Item = &'a Device>,
    event_id: &str,
    now: i64,
) -> Value {
    let devices: Vec<Value> = devices.map(Device::to_member_json).collect();
    json!({ "event_id": event_id, "timestamp": now, "devices": devices })
}

/// States a mapper may report (mapper-framework's, upstream's check is case-insensitive).
const STATES: [&str; 6] = [
    "online",
    "offline",
    "ok",
    "unknown",
    "disconnected",
    "unhealthy",
];

/// A device's reported state, from a `DeviceUpdate` payload (`state`, or `State` from DMI).
pub fn parse_state(payload: &[u8]) -> Result<String, String> {
    let body: Value = serde_json::from_slice(payload).map_err(|e| format!("state update: {e}"))?;
    let state = str_field(&body, "state").ok_or("state update without a state")?;
    if STATES.iter().any(|s| s.eq_ignore_ascii_case(state)) {
        Ok(state.to_owned())
    } else {
        Err(format!("state {state:?} is not one of {STATES:?}"))
    }
}

/// Whether `state` means the device was online just now (and `last_online` moves).
pub fn is_online(state: &str) -> bool {
    state.eq_ignore_ascii_case("online") || state.eq_ignore_ascii_case("ok")
}

/// `…/state/update/result`, and (as a JSON string) the cloud's `…/state/update` content.
pub fn state_result(device: &Device, event_id: &str, now: i64) -> Value {
    json!({
        "event_id": event_id,
        "timestamp": now,
        "device": {
            "name": device.name,
            "state": device.state,
            "lastOnlineTime": device.last_online,
        },
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second (`2026-01-01T00:00:35Z`).
pub fn rfc3339(millis: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_times() {
        assert_eq!(parse_state(br#"{"State":"online"}"#).unwrap(), "online");
        assert_eq!(parse_state(br#"{"state":"OFFLINE"}"#).unwrap(), "OFFLINE");
        assert!(parse_state(br#"{"state":"on fire"}"#).is_err());
        assert!(parse_state(b"{").is_err());
        assert!(parse_state(br#"{"event_id":""}"#).is_err());
        assert_eq!(rfc3339(1_767_225_635_000), "2026-01-01T00:00:35Z");
    }

    #[test]
    fn members_from_the_cloud() {
        let entry = json!({"id": "default/t", "name": "t", "description": "d"});
        assert_eq!(
            Member::from_membership(&entry).unwrap(),
            Member {
                id: "default/t".into(),
                name: "t".into(),
                description: "d".into()
            }
        );
        assert!(Member::from_membership(&json!({"name": "t"})).is_none());
        let object =
            json!({"metadata": {"name": "t", "namespace": "ns", "labels": {"description": "x"}}});
        assert_eq!(Member::from_device_object(&object).unwrap().id, "ns/t");
        assert!(Member::from_device_object(&json!("text")).is_none());
    }
}
