//! Reading Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON.
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|serviceaccount|…`) send
//! protobuf and, in v1.32, do not retry with JSON on 415. We store JSON, so we decode the few
//! kinds those generators create, from a hand-written field table (field numbers from
//! `k8s.io/api/core/v1/generated.proto`). Other kinds get 415. Responses are always JSON, which
//! those clients accept.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// `k8s\0`, the prefix of every Kubernetes protobuf payload.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies are not supported for {0}; send application/json")]
    Unsupported(String),
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    f(13, "ownerReferences", Kind::RepeatedMsg(OWNER_REF)),
    f(14, "finalizers", Kind::RepeatedStr),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[f(1, "finalizers", Kind::RepeatedStr)]),
    ),
    f(3, "status", Kind::Msg(&[f(1, "phase", Kind::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStr),
    f(3, "binaryData", Kind::MapBytes),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapBytes),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::MapStr),
    f(5, "immutable", Kind::Bool),
];

const OBJECT_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "namespace", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "fieldPath", Kind::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "secrets", Kind::RepeatedMsg(OBJECT_REF)),
    f(
        3,
        "imagePullSecrets",
        Kind::RepeatedMsg(&[f(1, "name", Kind::Str)]),
    ),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        _ => None,
    }
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope into a JSON object.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or(ProtoError::Malformed("missing k8s protobuf prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for item in Reader(rest) {
        match item? {
            (1, Wire::Len(type_meta)) => {
                for tm in Reader(type_meta) {
                    match tm? {
                        (1, Wire::Len(b)) => api_version = utf8(b)?,
                        (2, Wire::Len(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(b)) => raw = b,
            _ => {}
        }
    }
    let fields = schema(&api_version, &kind)
        .ok_or_else(|| ProtoError::Unsupported(format!("{api_version} {kind}")))?;
    let mut obj = message(raw, fields)?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

fn utf8(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not utf-8"))
}

/// Empty strings, zero numbers and unset times are left out, like Go's `omitempty`.
fn message(buf: &[u8], fields: &[Field]) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    for item in Reader(buf) {
        let (num, wire) = item?;
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            continue;
        };
        let name = field.name.to_owned();
        match (field.kind, wire) {
            (Kind::Str, Wire::Len(b)) => {
                let s = utf8(b)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            (Kind::Int, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name, json!(v as i64));
                }
            }
            (Kind::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Time, Wire::Len(b)) => {
                let mut secs = 0i64;
                for t in Reader(b) {
                    if let (1, Wire::Varint(v)) = t? {
                        secs = v as i64;
                    }
                }
                if secs > 0 {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
                    out.insert(name, json!(crate::meta::rfc3339(t)));
                }
            }
            (Kind::Msg(sub), Wire::Len(b)) => {
                out.insert(name, message(b, sub)?);
            }
            (Kind::MapStr | Kind::MapBytes, Wire::Len(b)) => {
                let (mut k, mut v) = (String::new(), Value::String(String::new()));
                for e in Reader(b) {
                    match e? {
                        (1, Wire::Len(kb)) => k = utf8(kb)?,
                        (2, Wire::Len(vb)) if matches!(field.kind, Kind::MapStr) => {
                            v = json!(utf8(vb)?)
                        }
                        (2, Wire::Len(vb)) => v = json!(STANDARD.encode(vb)),
                        _ => {}
                    }
                }
                if let Value::Object(m) = out.entry(name).or_insert_with(|| json!({})) {
                    m.insert(k, v);
                }
            }
            (Kind::RepeatedStr, Wire::Len(b)) => {
                let s = utf8(b)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(json!(s));
                }
            }
            (Kind::RepeatedMsg(sub), Wire::Len(b)) => {
                let m = message(b, sub)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(m);
                }
            }
            _ => return Err(ProtoError::Malformed("field has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// Iterates over `(field number, value)` of one message.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(ProtoError::Malformed("truncated varint"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ProtoError> {
        if n > self.0.len() {
            return Err(ProtoError::Malformed("truncated field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = (|| {
            let tag = self.varint()?;
            let wire = match tag & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Wire::Fixed
                }
                2 => {
                    let n = usize::try_from(self.varint()?)
                        .map_err(|_| ProtoError::Malformed("length too large"))?;
                    let all: &'a [u8] = self.0;
                    if n > all.len() {
                        return Err(ProtoError::Malformed("truncated field"));
                    }
                    let (head, rest) = all.split_at(n);
                    self.0 = rest;
                    Wire::Len(head)
                }
                5 => {
                    self.take(4)?;
                    Wire::Fixed
                }
                _ => return Err(ProtoError::Malformed("unsupported wire type")),
            };
            Ok((tag >> 3, wire))
        })();
        if item.is_err() {
            // Stop after the first error so a caller looping over the items terminates.
            self.0 = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8];
        out.push(payload.len() as u8);
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [
            len_field(1, api_version.as_bytes()),
            len_field(2, kind.as_bytes()),
        ]
        .concat();
        [MAGIC.to_vec(), len_field(1, &tm), len_field(2, raw)].concat()
    }

    #[test]
    fn configmap() {
        let meta = [
            len_field(1, b"c1"),
            len_field(2, b""),
            len_field(11, &[len_field(1, b"app"), len_field(2, b"web")].concat()),
            len_field(8, &[]),
        ]
        .concat();
        let raw = [
            len_field(1, &meta),
            len_field(2, &[len_field(1, b"a"), len_field(2, b"b")].concat()),
            len_field(2, &[len_field(1, b"c"), len_field(2, b"d")].concat()),
            vec![(4 << 3), 1],
        ]
        .concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "b", "c": "d"}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn secret_bytes_are_base64() {
        let raw = [
            len_field(2, &[len_field(1, b"k"), len_field(2, b"\x00\xff")].concat()),
            len_field(3, b"Opaque"),
        ]
        .concat();
        let v = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(v["data"]["k"], "AP8=");
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn errors_never_panic() {
        assert!(matches!(
            decode(&envelope("apps/v1", "Deployment", &[])),
            Err(ProtoError::Unsupported(_))
        ));
        assert!(decode(b"nope").is_err());
        let good = envelope("v1", "ConfigMap", &len_field(1, &len_field(1, b"x")));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(
            decode(
                &[
                    MAGIC,
                    &[
                        0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                    ]
                ]
                .concat()
            )
            .is_err()
        );
    }
}
