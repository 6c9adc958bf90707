//! The pod subresources that are not plain storage: `binding` (how a scheduler places a pod)
//! and the streams (`log`, `exec`, `attach`, `portforward`), which the node's agent answers.
//! On a real cluster kube-apiserver proxies those to the kubelet; here a [`PodStreams`]
//! implementation supplied by the embedder (cloudcore's cloudstream) does.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;

use crate::handlers::{self, Part, Write};
use crate::registry::ResourceInfo;
use crate::server::ApiServer;
use crate::status::ApiError;
use crate::storage::Storage;
use crate::{json_response, meta};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Serves `pods/<name>/{log,exec,attach,portforward}` for pods that are bound to a node.
pub trait PodStreams: Send + Sync + 'static {
    /// `pod` is the pod as stored (with `spec.nodeName` set); `subresource` is one of
    /// [`STREAM_SUBRESOURCES`]. The request is whole, so an upgrade (exec, attach,
    /// portforward) can be taken over.
    fn serve(&self, pod: Value, subresource: &str, request: Request) -> BoxFuture<Response>;
}

pub const STREAM_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward"];

/// `POST pods/<name>/binding`, or `POST bindings` with the pod's name in the body: sets
/// `spec.nodeName` and the `PodScheduled` condition, once. Answers a `Success` Status (201).
pub(crate) async fn bind<S: Storage>(
    server: &ApiServer<S>,
    ns: &str,
    pod_name: Option<&str>,
    binding: Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let pods = server.catalog().builtin_resource("", "pods");
    let bindings = server.catalog().builtin_resource("", "bindings");
    let named = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = match pod_name {
        Some(url) if !named.is_empty() && named != url => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({named}) does not match the name on the URL ({url})"
            )));
        }
        Some(url) => url,
        None if named.is_empty() => {
            return Err(ApiError::invalid(
                &bindings,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        None => named,
    };
    let target_kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(target_kind, "" | "Node") {
        return Err(ApiError::invalid(
            &bindings,
            name,
            "target.kind",
            &format!("Invalid value: \"{target_kind}\": must be empty or 'Node'"),
        ));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::invalid(
            &bindings,
            name,
            "target.name",
            "Required value",
        ));
    }
    let annotations = binding.pointer("/metadata/annotations").cloned();
    let pod_res: &ResourceInfo = &pods;
    handlers::update_object(
        server,
        pod_res,
        Some(ns),
        name,
        Part::Whole,
        Write {
            dry_run,
            manager: None,
        },
        |current| assign(pod_res, current, &node, annotations.as_ref()),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }),
    ))
}

/// What kube-apiserver's `assignPod` does to the stored pod.
fn assign(
    pods: &ResourceInfo,
    current: &Value,
    node: &str,
    annotations: Option<&Value>,
) -> Result<Value, ApiError> {
    let name = current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"
            ),
        ));
    }
    if let Some(bound) = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\""
            ),
        ));
    }
    let mut pod = current.clone();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(ApiError::invalid(pods, name, "spec", "Required value"));
    };
    spec.insert("nodeName".into(), json!(node));
    if let Some(Value::Object(extra)) = annotations
        && let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let target = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Value::Object(a) = target {
            for (k, v) in extra {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    let status = pod
        .as_object_mut()
        .expect("a stored pod is an object")
        .entry("status")
        .or_insert_with(|| json!({}));
    if let Value::Object(st) = status {
        let conditions = st.entry("conditions").or_insert_with(|| json!([]));
        if let Value::Array(list) = conditions {
            list.retain(|c| c["type"] != "PodScheduled");
            list.push(json!({
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": null,
                "lastTransitionTime": meta::now(),
            }));
        }
    }
    Ok(pod)
}

/// A pod stream request: handed to the configured [`PodStreams`] once the pod exists and is
/// bound to a node.
pub(crate) async fn stream<S: Storage>(
    server: &ApiServer<S>,
    ns: &str,
    name: &str,
    subresource: &str,
    request: Request,
) -> Response {
    let pods = server.catalog().builtin_resource("", "pods");
    let pod = match handlers::get_object(server, &pods, Some(ns), name).await {
        Ok(pod) => pod,
        Err(e) => return e.into_response(),
    };
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return ApiError::bad_request(format!("pod {name} does not have a host assigned"))
            .into_response();
    }
    match &server.pod_streams {
        Some(streams) => streams.serve(pod, subresource, request).await,
        None => ApiError::new(
            503,
            "ServiceUnavailable",
            format!("pods/{subresource} is not available: no node stream provider is configured"),
        )
        .into_response(),
    }
}
