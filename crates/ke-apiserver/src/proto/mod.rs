//! Reading Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON.
//!
//! kubectl's typed clients (`kubectl create deployment|job|namespace|configmap|…`, `kubectl
//! run`) send protobuf and, in v1.32, do not retry with JSON on 415. We store JSON, so a body is
//! decoded field by field: the kind's OpenAPI schema ([`crate::openapi`]) says what each field
//! is, and `tags.json` (generated, see `openapi-gen/`) gives each JSON field's protobuf field
//! number. Responses are always JSON, which those clients accept.
//!
//! Go's protobuf encoder writes every non-pointer field, zero or not, while its JSON encoder
//! leaves `omitempty` zeros out. So empty strings, zero `Time`s, `0` and `false` on the wire are
//! dropped — except for the pointer fields where an explicit zero means something
//! ([`ZERO_MEANS_SOMETHING`]: `replicas: 0`, `runAsUser: 0`, `automountServiceAccountToken:
//! false`, …).

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::openapi;
use crate::registry::{Catalog, Schema};
use crate::schema::Node;

/// `k8s\0`, the prefix of every Kubernetes protobuf payload.
const MAGIC: &[u8] = b"k8s\x00";

/// Nesting deeper than any Kubernetes type is an attack, not an object.
const MAX_DEPTH: usize = 64;

const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
/// Messages whose field 1 holds raw JSON bytes.
const RAW_JSON: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
];

/// Optional (pointer) fields of the served kinds whose explicit `0` or `false` differs from
/// leaving them out.
const ZERO_MEANS_SOMETHING: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "blockOwnerDeletion",
    "completions",
    "controller",
    "defaultMode",
    "enableServiceLinks",
    "expirationSeconds",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "immutable",
    "manualSelector",
    "maxFailedIndexes",
    "minDomains",
    "mode",
    "optional",
    "parallelism",
    "partition",
    "priority",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "suspend",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
    "unschedulable",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies are not supported for {0}; send application/json")]
    Unsupported(String),
}

/// Where a protobuf field number of a message goes in JSON.
#[derive(Debug)]
enum Slot {
    Field(String),
    /// A Go-embedded struct: a nested message whose fields are flat in JSON.
    Inline(Fields),
}

type Fields = HashMap<u64, Slot>;

static TAGS: LazyLock<HashMap<String, Fields>> = LazyLock::new(load_tags);

fn load_tags() -> HashMap<String, Fields> {
    // Generated and checked in; the tests load it, so a broken file fails CI, not a server.
    let raw: Map<String, Value> =
        serde_json::from_str(include_str!("tags.json")).expect("tags.json is valid JSON");
    let mut out = HashMap::new();
    for (def, fields) in raw {
        let mut table = Fields::new();
        for (json_name, path) in fields.as_object().into_iter().flatten() {
            let path: Vec<u64> = match path {
                Value::Array(p) => p.iter().filter_map(Value::as_u64).collect(),
                other => other.as_u64().into_iter().collect(),
            };
            insert(&mut table, &path, json_name);
        }
        out.insert(def, table);
    }
    out
}

fn insert(table: &mut Fields, path: &[u64], name: &str) {
    match path {
        [] => {}
        [tag] => {
            table.insert(*tag, Slot::Field(name.to_owned()));
        }
        [tag, rest @ ..] => {
            let slot = table
                .entry(*tag)
                .or_insert_with(|| Slot::Inline(Fields::new()));
            if let Slot::Inline(inner) = slot {
                insert(inner, rest, name);
            }
        }
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
    let definition = Catalog::builtin()
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
        .and_then(|r| match r.schema {
            Schema::Builtin(def) => Some(def),
            Schema::Custom(_) => None,
        })
        .ok_or_else(|| ProtoError::Unsupported(format!("{api_version} {kind}")))?;
    let mut obj = message(definition, raw, 0)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

fn utf8(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not utf-8"))
}

/// One message of definition `def`.
fn message(def: &str, buf: &[u8], depth: usize) -> Result<Map<String, Value>, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::Malformed("message nested too deeply"));
    }
    let defs = openapi::definitions();
    let (Some(schema), Some(fields)) = (defs.get(def), TAGS.get(def)) else {
        return Err(ProtoError::Unsupported(def.to_owned()));
    };
    let mut out = Map::new();
    fill(&mut out, Node::new(defs, schema), fields, buf, depth)?;
    Ok(out)
}

fn fill(
    out: &mut Map<String, Value>,
    node: Node<'_>,
    fields: &Fields,
    buf: &[u8],
    depth: usize,
) -> Result<(), ProtoError> {
    for item in Reader(buf) {
        let (num, wire) = item?;
        let name = match fields.get(&num) {
            None => continue,
            Some(Slot::Inline(inner)) => {
                let Wire::Len(b) = wire else {
                    return Err(ProtoError::Malformed("embedded field is not a message"));
                };
                fill(out, node, inner, b, depth + 1)?;
                continue;
            }
            Some(Slot::Field(name)) => name,
        };
        let (Some(prop), Some(field_raw)) = (node.property(name), node.property_raw(name)) else {
            continue;
        };
        match prop.type_name() {
            Some("array") => {
                let Some(items) = prop.items() else { continue };
                let items_raw = field_raw
                    .get("items")
                    .or_else(|| prop.raw().get("items"))
                    .unwrap_or(&Value::Null);
                let slot = out.entry(name.clone()).or_insert_with(|| json!([]));
                let Value::Array(list) = slot else { continue };
                match (&wire, items.type_name()) {
                    // Packed repeated numbers.
                    (Wire::Len(b), Some("integer" | "boolean")) => {
                        let mut r = Reader(b);
                        while !r.0.is_empty() {
                            let v = r.varint()?;
                            list.push(scalar(items.type_name(), v));
                        }
                    }
                    _ => {
                        if let Some(v) = value(items, items_raw, wire, depth)? {
                            list.push(v);
                        }
                    }
                }
            }
            Some("object")
                if prop.additional().is_some() && prop.raw().get("properties").is_none() =>
            {
                let Wire::Len(entry) = wire else {
                    return Err(ProtoError::Malformed("map entry is not a message"));
                };
                let values = prop.additional().expect("checked above");
                let values_raw = prop
                    .raw()
                    .get("additionalProperties")
                    .unwrap_or(&Value::Null);
                let (mut key, mut val) = (String::new(), None);
                for e in Reader(entry) {
                    match e? {
                        (1, Wire::Len(k)) => key = utf8(k)?,
                        (2, w) => val = value(values, values_raw, w, depth)?,
                        _ => {}
                    }
                }
                let default = || match values.type_name() {
                    Some("string") => json!(""),
                    _ => Value::Null,
                };
                if let Value::Object(m) = out.entry(name.clone()).or_insert_with(|| json!({})) {
                    m.insert(key, val.unwrap_or_else(default));
                }
            }
            _ => {
                let zero = |v: &Value| v == &json!(0) || v == &json!(false);
                if let Some(v) = value(prop, field_raw, wire, depth)?
                    && (!zero(&v) || ZERO_MEANS_SOMETHING.contains(&name.as_str()))
                {
                    out.insert(name.clone(), v);
                }
            }
        }
    }
    Ok(())
}

fn scalar(type_name: Option<&str>, v: u64) -> Value {
    match type_name {
        Some("boolean") => json!(v != 0),
        _ => json!(v as i64),
    }
}

/// One value of a field whose (resolved) schema is `node` and raw schema `raw`.
fn value(
    node: Node<'_>,
    raw: &Value,
    wire: Wire<'_>,
    depth: usize,
) -> Result<Option<Value>, ProtoError> {
    let defs = openapi::definitions();
    if let Some(def) = Node::definition_name(defs, raw) {
        let Wire::Len(b) = wire else {
            return Err(ProtoError::Malformed(
                "message field has a scalar wire type",
            ));
        };
        return special(&def, b, depth);
    }
    Ok(match (node.type_name(), wire) {
        (Some("string"), Wire::Len(b)) if node.extension("format") == Some(&json!("byte")) => {
            Some(json!(STANDARD.encode(b)))
        }
        (Some("string"), Wire::Len(b)) => Some(json!(utf8(b)?)).filter(|s| s != ""),
        (Some("integer" | "boolean"), Wire::Varint(v)) => Some(scalar(node.type_name(), v)),
        (Some("number"), Wire::Fixed64(b)) => Some(json!(f64::from_le_bytes(b))),
        (Some("object"), Wire::Len(_)) if node.is_open() => None,
        (_, Wire::Len(_) | Wire::Varint(_) | Wire::Fixed64(_) | Wire::Fixed32) => {
            return Err(ProtoError::Malformed("field has an unexpected wire type"));
        }
    })
}

/// A named definition: the few with their own wire shape, or a nested message.
fn special(def: &str, b: &[u8], depth: usize) -> Result<Option<Value>, ProtoError> {
    let fields = || -> Result<HashMap<u64, Wire<'_>>, ProtoError> { Reader(b).collect() };
    match def {
        TIME | MICRO_TIME => {
            let fields = fields()?;
            let secs = match fields.get(&1) {
                Some(Wire::Varint(v)) => *v as i64,
                _ => 0,
            };
            let nanos = match fields.get(&2) {
                Some(Wire::Varint(v)) => *v as i64,
                _ => 0,
            };
            if secs <= 0 {
                return Ok(None);
            }
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            let text = crate::meta::rfc3339(t);
            Ok(Some(json!(if def == MICRO_TIME {
                text.replace('Z', &format!(".{:06}Z", nanos / 1000))
            } else {
                text
            })))
        }
        QUANTITY => {
            let fields = fields()?;
            match fields.get(&1) {
                Some(Wire::Len(s)) => Ok(Some(json!(utf8(s)?))),
                _ => Ok(None),
            }
        }
        INT_OR_STRING => {
            let fields = fields()?;
            let is_string = matches!(fields.get(&1), Some(Wire::Varint(1)));
            Ok(Some(match (is_string, fields.get(&2), fields.get(&3)) {
                (true, _, Some(Wire::Len(s))) => json!(utf8(s)?),
                (false, Some(Wire::Varint(v)), _) => json!(*v as i64),
                (true, _, _) => json!(""),
                (false, _, _) => json!(0),
            }))
        }
        _ if RAW_JSON.contains(&def) => {
            let fields = fields()?;
            match fields.get(&1) {
                Some(Wire::Len(raw)) if !raw.is_empty() => serde_json::from_slice(raw)
                    .map(Some)
                    .map_err(|_| ProtoError::Malformed("embedded raw JSON is not valid")),
                _ => Ok(None),
            }
        }
        _ => message(def, b, depth + 1).map(|m| Some(Value::Object(m))),
    }
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed64([u8; 8]),
    Fixed32,
}

/// Iterates over `(field number, value)` of one message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
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

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.0.len() {
            return Err(ProtoError::Malformed("truncated field"));
        }
        let all: &'a [u8] = self.0;
        let (head, rest) = all.split_at(n);
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
                    let b = self.take(8)?;
                    Wire::Fixed64(b.try_into().expect("took 8 bytes"))
                }
                2 => {
                    let n = usize::try_from(self.varint()?)
                        .map_err(|_| ProtoError::Malformed("length too large"))?;
                    Wire::Len(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Fixed32
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

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(num: u64, payload: &[u8]) -> Vec<u8> {
        [
            varint((num << 3) | 2),
            varint(payload.len() as u64),
            payload.to_vec(),
        ]
        .concat()
    }

    fn int_field(num: u64, v: i64) -> Vec<u8> {
        [varint(num << 3), varint(v as u64)].concat()
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [len_field(1, k.as_bytes()), len_field(2, v)].concat()
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
    fn configmap_and_secret() {
        let meta = [
            len_field(1, b"c1"),
            len_field(2, b""),
            len_field(11, &entry("app", b"web")),
            len_field(8, &[]),
        ]
        .concat();
        let raw = [
            len_field(1, &meta),
            len_field(2, &entry("a", b"b")),
            len_field(2, &entry("c", b"d")),
            int_field(4, 1),
        ]
        .concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "b", "c": "d"}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
        );
        let raw = [
            len_field(2, &entry("k", b"\x00\xff")),
            len_field(3, b"Opaque"),
        ]
        .concat();
        let v = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(v["data"]["k"], "AP8=");
        assert_eq!(v["type"], "Opaque");
    }

    /// What `kubectl create deployment web --image=busybox --replicas=0 --port=80` sends, field
    /// for field (numbers from k8s.io/api apps/v1 and core/v1 generated.proto).
    #[test]
    fn deployment_with_template_and_embedded_fields() {
        let container = [
            len_field(1, b"busybox"),
            len_field(2, b"busybox"),
            len_field(6, &[int_field(3, 80), len_field(4, b"TCP")].concat()), // ports
            len_field(8, &[]),                                                // resources: {}
            // env: valueFrom.configMapKeyRef.name is LocalObjectReference embedded at field 1.
            len_field(
                7,
                &[
                    len_field(1, b"E"),
                    len_field(
                        3,
                        &len_field(
                            3,
                            &[len_field(1, &len_field(1, b"cm")), len_field(2, b"k")].concat(),
                        ),
                    ),
                ]
                .concat(),
            ),
            // livenessProbe: tcpSocket lives in the embedded ProbeHandler (field 1).
            len_field(
                10,
                &[
                    len_field(
                        1,
                        &len_field(
                            3,
                            &len_field(1, &[int_field(1, 1), len_field(3, b"http")].concat()),
                        ),
                    ),
                    int_field(2, 5),
                ]
                .concat(),
            ),
        ]
        .concat();
        let labels = len_field(11, &entry("app", b"web"));
        let template = [
            len_field(1, &labels),
            len_field(2, &len_field(2, &container)),
        ]
        .concat();
        let spec = [
            int_field(1, 0),
            len_field(2, &len_field(1, &entry("app", b"web"))),
            len_field(3, &template),
            len_field(4, &[]),
        ]
        .concat();
        let raw = [
            len_field(1, &[len_field(1, b"web"), labels.clone()].concat()),
            len_field(2, &spec),
            len_field(3, &[]),
        ]
        .concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "busybox");
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(c["resources"], json!({}));
        assert_eq!(
            c["env"][0]["valueFrom"]["configMapKeyRef"],
            json!({"name": "cm", "key": "k"})
        );
        assert_eq!(c["livenessProbe"]["tcpSocket"]["port"], "http");
        assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 5);
        assert_eq!(v["status"], json!({}));
    }

    #[test]
    fn errors_never_panic() {
        assert!(matches!(
            decode(&envelope("example.com/v1", "Widget", &[])),
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
        // A self-nesting message (JSONSchemaProps-like recursion via Pod affinity is bounded).
        let mut deep = len_field(1, b"x");
        for _ in 0..200 {
            deep = len_field(2, &len_field(3, &deep));
        }
        let _ = decode(&envelope("apps/v1", "Deployment", &deep));
    }
}
