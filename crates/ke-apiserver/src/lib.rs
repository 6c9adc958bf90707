//! An embedded, Kubernetes-compatible API server on SQLite: one machine with no Kubernetes
//! cluster is a complete install, and `kubectl` works against it. cloudcore is an ordinary client
//! of it, exactly as of a real kube-apiserver, so nothing in cloudcore may depend on it.
//!
//! Layout: [`registry`] lists the served kinds; [`request`] turns a URL into a route;
//! [`discovery`] answers `/api`, `/apis`, `/version`; [`handlers`] implements the verbs over the
//! [`storage::Storage`] trait (objects are schemaless JSON); [`watch`] streams changes;
//! [`status`] renders every failure as a `metav1.Status`; [`serve`] runs the router over mutual
//! TLS, and [`kubeconfig`] writes the admin credentials for it.

mod apply;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod fields;
pub mod handlers;
pub mod jsonpath;
pub mod kubeconfig;
pub mod managed;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod pods;
pub mod proto;
pub mod registry;
pub mod request;
mod scale;
pub mod schema;
pub mod serve;
mod services;
mod skim;
pub mod standalone;
pub mod status;
pub mod storage;
pub mod strategy;
pub mod table;
pub mod watch;

mod server;

pub use pods::PodStreams;
pub use server::{ApiServer, ServerConfig};
pub use status::ApiError;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A JSON response with the content type kubectl expects.
pub(crate) fn json_response(code: StatusCode, body: &serde_json::Value) -> Response {
    json_bytes_response(
        code,
        serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// Already-serialized JSON as a response.
pub(crate) fn json_bytes_response(
    code: StatusCode,
    bytes: impl Into<axum::body::Body>,
) -> Response {
    let mut resp = (code, bytes.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
