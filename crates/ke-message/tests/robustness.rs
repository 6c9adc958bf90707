//! Encode→decode round trips for arbitrary messages, and malformed input that must produce an
//! error — never a panic, a hang or a silently different message.

use ke_message::{Message, MessageHeader, MessageRoute, decode, encode, encode_frame};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Go writes integral floats without a fraction ("3", as encoding/json does), so they
        // come back as integers; only floats that keep their float form can round-trip exactly.
        any::<f64>()
            .prop_filter("keeps float form", |f| f.fract() != 0.0 || f.abs() >= 2e19)
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
        "[<>&\u{2028}\u{2029}\"\\\\\n\t a-z]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn message() -> impl Strategy<Value = Message> {
    let header = (
        any::<String>(),
        any::<String>(),
        any::<i64>(),
        any::<String>(),
        any::<bool>(),
        any::<String>(),
    )
        .prop_map(
            |(id, parent_id, timestamp, resource_version, sync, message_type)| MessageHeader {
                id,
                parent_id,
                timestamp,
                resource_version,
                sync,
                message_type,
            },
        );
    let route = (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        any::<String>(),
        any::<String>(),
    )
        .prop_map(
            |(source, destination, group, operation, resource)| MessageRoute {
                source,
                destination,
                group,
                operation,
                resource,
            },
        );
    (header, route, json_value()).prop_map(|(header, router, content)| Message {
        header,
        router,
        content,
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(msg in message()) {
        prop_assert_eq!(decode(&encode_frame(&msg)).unwrap(), msg.clone());
        prop_assert_eq!(decode(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn encoding_is_html_safe(msg in message()) {
        let text = String::from_utf8(encode(&msg)).unwrap();
        let unsafe_chars = ['<', '>', '&', '\u{2028}', '\u{2029}'];
        prop_assert!(!text.contains(unsafe_chars), "unescaped in {}", text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_an_error(msg in message()) {
        let frame = encode(&msg);
        for cut in 0..frame.len() {
            prop_assert!(decode(&frame[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        }
    }
}

#[test]
fn wrong_field_types_are_errors() {
    for bad in [
        r#"{"header":{"msg_id":"1","timestamp":"soon"},"route":{},"content":null}"#,
        r#"{"header":{"msg_id":1,"timestamp":0},"route":{},"content":null}"#,
        r#"{"header":{"msg_id":"1","timestamp":1.5},"route":{},"content":null}"#,
        r#"{"header":{"msg_id":"1","timestamp":0,"sync":"yes"},"route":{},"content":null}"#,
        r#"{"header":[],"route":{},"content":null}"#,
        r#"{"header":{},"route":"x","content":null}"#,
        r#"{"header":{},"route":{"operation":7}}"#,
        r#"[]"#,
        r#""just a string""#,
        r#"{"header":{}} trailing"#,
        "",
        "\u{feff}{}",
    ] {
        assert!(decode(bad.as_bytes()).is_err(), "accepted: {bad}");
    }
    assert!(
        decode(b"{\"header\":{\"msg_id\":\"\xff\"}}").is_err(),
        "invalid utf-8"
    );
}

#[test]
fn missing_and_null_fields_take_go_zero_values() {
    let msg = decode(br#"{"header":{"msg_id":null,"timestamp":null},"route":null}"#).unwrap();
    assert_eq!(msg, Message::default());
    let msg = decode(b"{}").unwrap();
    assert_eq!(msg, Message::default());
    // Unknown fields are ignored, as Go does.
    let msg = decode(br#"{"header":{"msg_id":"a","extra":1},"future":true}"#).unwrap();
    assert_eq!(msg.header.id, "a");
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    let depth = 100_000;
    let mut deep = String::from(r#"{"header":{},"content":"#);
    deep.push_str(&"[".repeat(depth));
    deep.push_str(&"]".repeat(depth));
    deep.push('}');
    assert!(decode(deep.as_bytes()).is_err());

    let mut objects = String::from(r#"{"content":"#);
    objects.push_str(&r#"{"a":"#.repeat(depth));
    objects.push_str("null");
    objects.push_str(&"}".repeat(depth));
    objects.push('}');
    assert!(decode(objects.as_bytes()).is_err());
}

#[test]
fn huge_strings_decode_intact() {
    let big = "x".repeat(64 << 20);
    let frame = format!(r#"{{"header":{{"msg_id":"{big}"}},"content":"{big}"}}"#);
    let msg = decode(frame.as_bytes()).unwrap();
    assert_eq!(msg.header.id.len(), 64 << 20);
    assert_eq!(msg.content.as_str().map(str::len), Some(64 << 20));
    // A 64 MiB string that is cut off is an error, not a partial message.
    assert!(decode(&frame.as_bytes()[..frame.len() - 10]).is_err());
}
