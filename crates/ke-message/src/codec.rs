//! Go-compatible JSON encoding and defensive decoding of messages.
//!
//! Upstream writes each frame with gorilla's `WriteJSON`, i.e. Go's `json.Encoder`: compact JSON,
//! HTML-safe escaping, Go's float formatting and a trailing newline. Matching that byte-for-byte
//! (not just as a JSON value) means frames we relay or re-encode are indistinguishable from a Go
//! peer's, and the golden frames in `tests/golden` can be checked exactly.

use std::{fmt, io};

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;

use crate::Message;

/// Why bytes could not be read as a [`Message`]. Carries serde_json's line/column.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl DecodeError {
    /// True when the input ended early, e.g. a frame cut off by a dropped connection.
    pub fn is_truncated(&self) -> bool {
        self.0.is_eof()
    }
}

/// Decodes one message. Trailing whitespace (such as the frame's newline) is allowed; anything
/// else after the object, wrong field types, invalid UTF-8 and nesting deeper than 128 levels are
/// errors. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Encodes a message as Go's `json.Marshal` would: compact, HTML-safe, no trailing newline.
pub fn encode(message: &Message) -> Vec<u8> {
    to_go_json(message)
}

/// Encodes a message as one WebSocket frame payload, exactly as upstream's `WriteJSON` does:
/// [`encode`] plus the `\n` that Go's `json.Encoder` appends.
pub fn encode_frame(message: &Message) -> Vec<u8> {
    let mut out = to_go_json(message);
    out.push(b'\n');
    out
}

/// Go-compatible JSON of an arbitrary value, used for content re-marshalling.
pub fn encode_value(value: &Value) -> Vec<u8> {
    to_go_json(value)
}

fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value
        .serialize(&mut serializer)
        // Writing to a Vec cannot fail, and every map key in Message and Value is a string.
        .expect("a Message or JSON value always serializes");
    out
}

/// A compact formatter with the two places where Go's `encoding/json` differs from serde_json:
/// string escaping and float formatting.
struct GoFormatter;

impl Formatter for GoFormatter {
    /// serde_json already escapes `"`, `\` and control characters (with `\b`, `\f`, `\n`, `\r`,
    /// `\t` short forms, like Go since 1.22). Go additionally escapes `<`, `>`, `&` so JSON is
    /// safe to embed in HTML, and U+2028/U+2029 which break JavaScript string literals.
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // Go prints float32 with the shortest digits for 32 bits; f32's formatting does too.
        writer.write_all(go_float(value).as_bytes())
    }
}

/// Go's `encoding/json` float format: shortest round-trip digits, plain notation for
/// 1e-6 <= |v| < 1e21, otherwise exponent notation with a signed, at-least-two-digit positive
/// exponent (`1e+21`) and an unpadded negative one (`1e-7`). Integral floats print without `.0`.
fn go_float<F: Copy + Into<f64> + fmt::Display + fmt::LowerExp>(value: F) -> String {
    let abs = value.into().abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        go_exponent(&format!("{value:e}"))
    } else {
        format!("{value}")
    }
}

/// Rewrites Rust's `1.5e21` / `1e-7` exponent form into Go's `1.5e+21` / `1e-7`.
fn go_exponent(rust: &str) -> String {
    let Some((mantissa, exponent)) = rust.split_once('e') else {
        return rust.to_owned();
    };
    match exponent.strip_prefix('-') {
        Some(negative) => format!("{mantissa}e-{negative}"),
        None => format!("{mantissa}e+{exponent:0>2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn go(value: Value) -> String {
        String::from_utf8(encode_value(&value)).unwrap()
    }

    #[test]
    fn escapes_like_go_encoding_json() {
        assert_eq!(
            go(json!("a<b>&c\u{2028}\u{2029}")),
            r#""a\u003cb\u003e\u0026c\u2028\u2029""#
        );
        assert_eq!(
            go(json!("\"\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é")),
            "\"\\\"\\\\\\n\\r\\t\\b\\f\\u0001\u{7f}é\""
        );
        // Keys are strings too.
        assert_eq!(go(json!({"<k>": 1})), r#"{"\u003ck\u003e":1}"#);
    }

    #[test]
    fn formats_floats_like_go() {
        assert_eq!(go(json!(0.9)), "0.9");
        assert_eq!(go(json!(3.0)), "3");
        assert_eq!(go(json!(-2.5)), "-2.5");
        assert_eq!(go(json!(1e20)), "100000000000000000000");
        assert_eq!(go(json!(1e21)), "1e+21");
        assert_eq!(go(json!(1.5e300)), "1.5e+300");
        assert_eq!(go(json!(0.000001)), "0.000001");
        assert_eq!(go(json!(1e-7)), "1e-7");
        assert_eq!(go(json!(1.25e-10)), "1.25e-10");
        assert_eq!(go(json!(0.0)), "0");
        assert_eq!(go(json!(u64::MAX)), "18446744073709551615");
        assert_eq!(go(json!(i64::MIN)), "-9223372036854775808");
    }

    #[test]
    fn frame_is_marshal_output_plus_newline() {
        let msg = Message::new().with_route("a", "b", "c", "d");
        let mut expected = encode(&msg);
        expected.push(b'\n');
        assert_eq!(encode_frame(&msg), expected);
    }

    #[test]
    fn truncation_is_reported_as_such() {
        let frame = encode_frame(&Message::new());
        let err = decode(&frame[..frame.len() / 2]).unwrap_err();
        assert!(err.is_truncated(), "{err}");
        assert!(!decode(b"{\"header\":[]}").unwrap_err().is_truncated());
    }
}
