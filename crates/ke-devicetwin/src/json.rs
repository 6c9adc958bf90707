//! Reading payloads as Go's `encoding/json` does — field names match case-insensitively and
//! the last duplicate wins (DMI's state message says `State`, mappers say `state`) — and
//! writing them as Go does.

use serde_json::Value;

/// The value of field `name` of `object`, if it is an object that has it.
pub fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
        .next_back()
}

pub fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    field(object, name)?.as_str()
}

/// A payload as Go's encoder writes it (HTML-safe escapes, no trailing newline).
pub fn encode(value: &Value) -> String {
    String::from_utf8(ke_message::codec::encode_value(value)).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_match_like_go() {
        let v = json!({"State": "online", "state": "offline", "STATE": "ok"});
        assert_eq!(str_field(&v, "state"), Some("ok"));
        assert_eq!(field(&json!([1]), "state"), None);
        assert_eq!(
            encode(&json!({"a": "<&>"})),
            r#"{"a":"\u003c\u0026\u003e"}"#
        );
    }
}
