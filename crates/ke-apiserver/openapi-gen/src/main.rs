//! Writes the OpenAPI v3 component schemas of every built-in kind ke-apiserver serves, and of
//! everything they reference, as one JSON object keyed by definition name
//! (`io.k8s.api.core.v1.Pod`), with `$ref`s of the form `#/components/schemas/<name>`.
//!
//! The schemas are k8s-openapi's (generated from Kubernetes' own OpenAPI spec for the version
//! in Cargo.toml). The server adds what they lack — `x-kubernetes-group-version-kind` and the
//! strategic-merge-patch extensions — at load time, from its own tables.
//!
//! With `proto-tags <k8s-pb src dir>` it writes instead, for the same definitions, each JSON
//! field's protobuf field number (`{"io.k8s.api.core.v1.PodSpec": {"volumes": 1, ...}}`), read
//! from the prost code the `k8s-pb` crate generates from Kubernetes' `generated.proto` files:
//! kubectl's typed clients send protobuf bodies, and the server decodes them with this table.
//!
//!     cd crates/ke-apiserver/openapi-gen
//!     cargo run --release > ../src/openapi/builtin.json
//!     cargo run --release -- proto-tags ~/.cargo/registry/src/*/k8s-pb-0.8.0/src > ../src/proto/tags.json

use k8s_openapi::api::{apps, batch, coordination, core, discovery};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let definitions = definitions();
    let out = match args.as_slice() {
        [] => Value::Object(definitions),
        [cmd, dir] if cmd == "proto-tags" => proto_tags(&definitions, std::path::Path::new(dir)),
        _ => {
            eprintln!("usage: ke-apiserver-openapi-gen [proto-tags <k8s-pb src dir>]");
            std::process::exit(2);
        }
    };
    println!("{}", serde_json::to_string(&out).expect("serialize"));
}

fn definitions() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    macro_rules! roots {
        ($($t:ty),* $(,)?) => { $( generator.subschema_for::<$t>(); )* };
    }
    roots!(
        core::v1::Namespace,
        core::v1::Node,
        core::v1::Pod,
        core::v1::Binding,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::Event,
        core::v1::ServiceAccount,
        coordination::v1::Lease,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::DaemonSet,
        apps::v1::StatefulSet,
        batch::v1::Job,
        discovery::v1::EndpointSlice,
        apiextensions::CustomResourceDefinition,
        meta::Status,
        meta::DeleteOptions,
    );
    let definitions: Map<String, Value> = generator.take_definitions(true);
    let mut sorted: Vec<(String, Value)> = definitions
        .into_iter()
        .map(|(name, mut schema)| {
            unrequire_metadata(&mut schema);
            if name == ANY_JSON {
                any_json(&mut schema);
            }
            (name, schema)
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// `{definition: {json field: proto field number}}` for every definition with a message in
/// k8s-pb's source. A field Go embeds inline (`LocalObjectReference` in `ConfigMapKeySelector`,
/// `ProbeHandler` in `Probe`) is a nested message on the wire but flat in JSON; its fields get
/// the path of numbers instead (`"exec": [1, 1]`).
fn proto_tags(definitions: &Map<String, Value>, src: &std::path::Path) -> Value {
    let mut messages: Messages = Default::default();
    read_messages(src, src, &mut messages);
    let mut out = Map::new();
    for (name, schema) in definitions {
        let key = message_key(name);
        let (Some(_), Some(Value::Object(props))) = (messages.get(&key), schema.get("properties"))
        else {
            continue;
        };
        let mut tags = Map::new();
        let json_names: Vec<String> = props.keys().map(|k| normalize(k)).collect();
        for json_name in props.keys() {
            if let Some(path) = find_field(&messages, &key, &normalize(json_name), &json_names) {
                let value = match path.as_slice() {
                    [tag] => Value::from(*tag),
                    _ => Value::from(path),
                };
                tags.insert(json_name.clone(), value);
            }
        }
        out.insert(name.clone(), Value::Object(tags));
    }
    Value::Object(out)
}

/// [`message_key`] → the message's fields as `(normalized rust name, tag, message type)`.
type Messages = std::collections::BTreeMap<String, Vec<(String, u64, Option<String>)>>;

/// The tag path of JSON field `want` in `message`, looking into embedded messages (message
/// fields no JSON name of the definition claims) when the message has no such field itself.
fn find_field(messages: &Messages, message: &str, want: &str, json_names: &[String]) -> Option<Vec<u64>> {
    let fields = messages.get(message)?;
    if let Some((_, tag, _)) = fields.iter().find(|(n, _, _)| n == want) {
        return Some(vec![*tag]);
    }
    let package = &message[..message.rfind('.')?];
    for (name, tag, ty) in fields {
        let Some(ty) = ty else { continue };
        if json_names.contains(name) {
            continue;
        }
        let embedded = format!("{package}.{}", normalize(ty));
        if let Some(mut rest) = find_field(messages, &embedded, want, &[]) {
            rest.insert(0, *tag);
            return Some(rest);
        }
    }
    None
}

/// `<normalized package>.<normalized message>`: how definitions and prost messages meet.
fn message_key(definition: &str) -> String {
    let (package, name) = definition.rsplit_once('.').unwrap_or(("", definition));
    format!("{}.{}", normalize(package), normalize(name))
}

/// Names compared without case and punctuation: prost's `pod_ip` is JSON's `podIP`, its
/// `r#type` is `type`, and its `PodIp` message is the `PodIP` definition.
fn normalize(name: &str) -> String {
    let name = name.strip_prefix("r#").unwrap_or(name);
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Collects `(rust field, tag)` of every `pub struct` in the `mod.rs` files under `dir`, keyed by
/// the [`message_key`] of the OpenAPI definition name (`api/core/v1/mod.rs` + `PodSpec` =
/// `io.k8s.api.core.v1.PodSpec`).
fn read_messages(root: &std::path::Path, dir: &std::path::Path, out: &mut Messages) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("cannot read {}", dir.display());
        std::process::exit(1);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_messages(root, &path, out);
            continue;
        }
        if path.file_name().and_then(|n| n.to_str()) != Some("mod.rs") {
            continue;
        }
        let package: Vec<String> = path
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .map(|p| p.iter().map(|s| s.to_string_lossy().replace('_', "-")).collect())
            .unwrap_or_default();
        let prefix = format!("io.k8s.{}", package.join("."));
        let text = std::fs::read_to_string(&path).expect("read k8s-pb source");
        let mut message: Option<String> = None;
        let mut tag: Option<(u64, bool)> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("pub struct ").and_then(|l| l.strip_suffix(" {")) {
                message = Some(message_key(&format!("{prefix}.{name}")));
                continue;
            }
            if line == "}" {
                message = None;
                continue;
            }
            let line = line.trim();
            if let Some(attr) = line.strip_prefix("#[prost(") {
                let is_message = attr.starts_with("message,");
                tag = attr
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .and_then(|t| t.parse().ok())
                    .map(|t| (t, is_message));
                continue;
            }
            if let (Some(m), Some((t, is_message)), Some(field)) =
                (&message, tag, line.strip_prefix("pub "))
            {
                let (name, ty) = field.split_once(':').unwrap_or((field, ""));
                // `::core::option::Option<ProbeHandler>` → `ProbeHandler`.
                let ty = is_message.then(|| {
                    let inner = ty.rsplit('<').next().unwrap_or(ty);
                    let inner = inner.split('>').next().unwrap_or(inner);
                    inner.rsplit("::").next().unwrap_or(inner).trim().to_owned()
                });
                out.entry(m.clone()).or_default().push((normalize(name.trim()), t, ty));
                tag = None;
            }
        }
    }
}

/// k8s-openapi marks `metadata` of every kind required because the Rust field is not optional;
/// Kubernetes' own spec does not, and `kubectl explain` would print it as `-required-`.
fn unrequire_metadata(schema: &mut Value) {
    let is_kind = schema
        .pointer("/properties/kind")
        .and(schema.pointer("/properties/metadata"))
        .is_some();
    let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) else {
        return;
    };
    if is_kind {
        required.retain(|field| field != "metadata");
    }
    if required.is_empty() {
        schema.as_object_mut().expect("schema is an object").remove("required");
    }
}

/// apiextensions' `JSON` holds any JSON value (CRD defaults and examples); k8s-openapi types it
/// as an object, which would make a string default look malformed.
const ANY_JSON: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON";

fn any_json(schema: &mut Value) {
    let map = schema.as_object_mut().expect("schema is an object");
    map.remove("type");
    map.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
}
