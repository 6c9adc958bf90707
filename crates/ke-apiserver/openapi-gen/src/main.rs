//! Writes the OpenAPI v3 component schemas of every built-in kind ke-apiserver serves, and of
//! everything they reference, as one JSON object keyed by definition name
//! (`io.k8s.api.core.v1.Pod`), with `$ref`s of the form `#/components/schemas/<name>`.
//!
//! The schemas are k8s-openapi's (generated from Kubernetes' own OpenAPI spec for the version
//! in Cargo.toml). The server adds what they lack — `x-kubernetes-group-version-kind` and the
//! strategic-merge-patch extensions — at load time, from its own tables.
//!
//!     cd crates/ke-apiserver/openapi-gen && cargo run --release > ../src/openapi/builtin.json

use k8s_openapi::api::{apps, batch, coordination, core, discovery};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

fn main() {
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
    let out: Map<String, Value> = sorted.into_iter().collect();
    println!("{}", serde_json::to_string(&Value::Object(out)).expect("serialize"));
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
