//! Decoding with Go's `encoding/json` rules rather than serde's derived defaults.
//!
//! A derived impl would accept a JSON *array* for a struct (serde's positional form) and reject
//! `null` for a string, both unlike the Go peer. These impls follow Go: objects only; `null` or a
//! missing field leaves the zero value; keys match case-insensitively; a repeated key keeps the
//! last value; unknown keys are ignored; a value of the wrong type is an error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::{Message, MessageHeader, MessageRoute};

/// Reads a field value where Go would take `null` as "leave the zero value".
fn next_or_zero<'de, A, T>(map: &mut A) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// Implements `Deserialize` for a struct from a JSON object, mapping lowercase keys to fields.
macro_rules! deserialize_go_object {
    ($ty:ty, $expecting:literal, { $($key:literal => $field:ident),+ $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
                        Ok(<$ty>::default())
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let mut value = <$ty>::default();
                        while let Some(key) = map.next_key::<String>()? {
                            match key.to_ascii_lowercase().as_str() {
                                $($key => value.$field = next_or_zero(&mut map)?,)+
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(value)
                    }
                }

                // `deserialize_any` so `null` reaches `visit_unit` and arrays are type errors.
                deserializer.deserialize_any(ObjectVisitor)
            }
        }
    };
}

deserialize_go_object!(Message, "a message object", {
    "header" => header,
    "route" => router,
    "content" => content,
});

deserialize_go_object!(MessageHeader, "a message header object", {
    "msg_id" => id,
    "parent_msg_id" => parent_id,
    "timestamp" => timestamp,
    "resourceversion" => resource_version,
    "sync" => sync,
    "type" => message_type,
});

deserialize_go_object!(MessageRoute, "a message route object", {
    "source" => source,
    "destination" => destination,
    "group" => group,
    "operation" => operation,
    "resource" => resource,
});

#[cfg(test)]
mod tests {
    use crate::{Message, decode};

    #[test]
    fn keys_match_case_insensitively_and_the_last_duplicate_wins() {
        let msg =
            decode(br#"{"Header":{"MSG_ID":"a","msg_id":"b"},"Route":{"Source":"x"}}"#).unwrap();
        assert_eq!(msg.header.id, "b");
        assert_eq!(msg.router.source, "x");
    }

    #[test]
    fn arrays_are_not_structs() {
        assert!(decode(b"[]").is_err());
        assert!(decode(br#"{"header":[]}"#).is_err());
        assert!(decode(br#"{"route":["a"]}"#).is_err());
        assert_eq!(decode(b"null").unwrap(), Message::default());
    }
}
