//! Writes through the metaserver (create, update, patch, delete): forwarded to the cloud's
//! dynamiccontroller as upstream's `Application`, and answered with what the API server said.
//! Without the cloud they fail at once with 503; the cache is never written locally — the
//! change comes back down like any other once the cloud has made it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{HeaderMap, Method, Response, StatusCode, header};
use ke_bus::Bus;
use ke_message::Message;
use ke_message::application::{Application, PatchInfo, status, verb};
use ke_message::constants::{group, operation, source};
use ke_message::kinds::{Kind, metaserver_key};
use serde_json::{Value, json};

use crate::api::{Body, Failure, Target, raw_json_response};

/// Upstream's agent waits 10 s for the cloud's answer.
const CLOUD_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies beyond this are refused (the API server's own limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;

pub(crate) struct Write {
    kind: Kind,
    name: String,
    app: Application,
    /// For a patch: the body becomes `PatchInfo.Data`, not `ReqBody`.
    patch: Option<PatchInfo>,
    created: bool,
}

impl Write {
    pub fn of(
        method: &Method,
        target: &Target,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Write, Failure> {
        let not_allowed = || {
            Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            )
        };
        let options = json!({
            "fieldManager": query.get("fieldManager"),
            "dryRun": query.get("dryRun").map(|d| vec![d]),
        });
        let (kind, namespace, name, subresource) = match target {
            Target::Collection { kind, namespace } if method == Method::POST => {
                (*kind, namespace.clone(), None, None)
            }
            Target::Object {
                kind,
                namespace,
                name,
                subresource,
            } if method != Method::POST => (
                *kind,
                namespace.clone(),
                Some(name.clone()),
                subresource.clone(),
            ),
            _ => return Err(not_allowed()),
        };
        let key = metaserver_key(kind, namespace.as_deref(), name.as_deref());
        let status_subresource = subresource.as_deref() == Some("status");
        let (verb, patch) = match *method {
            Method::POST => (verb::CREATE, None),
            Method::PUT if status_subresource => (verb::UPDATE_STATUS, None),
            Method::PUT => (verb::UPDATE, None),
            Method::DELETE => (verb::DELETE, None),
            Method::PATCH => {
                let patch_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/merge-patch+json");
                let info = PatchInfo {
                    name: name.clone().unwrap_or_default(),
                    patch_type: patch_type.split(';').next().unwrap_or("").trim().to_owned(),
                    data: Vec::new(),
                    options: json!({
                        "fieldManager": query.get("fieldManager"),
                        "force": query.get("force").map(|f| f == "true"),
                    }),
                    subresources: status_subresource.then(|| vec!["status".to_owned()]),
                };
                (verb::PATCH, Some(info))
            }
            _ => return Err(not_allowed()),
        };
        if subresource.is_some() && !status_subresource {
            return Err(not_allowed());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.contains("protobuf") {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "the edge metaserver takes JSON request bodies",
            ));
        }
        let mut app = Application::new(key, verb, "");
        app.subresource = subresource.unwrap_or_default();
        app.option = serde_json::to_vec(&options).unwrap_or_default();
        Ok(Write {
            kind,
            name: name.unwrap_or_default(),
            app,
            patch,
            created: *method == Method::POST,
        })
    }

    pub async fn send(mut self, bus: &Bus, node: &str, body: Bytes) -> Response<Body> {
        self.app.node_name = node.to_owned();
        match self.patch.take() {
            Some(mut info) => {
                info.data = body.to_vec();
                self.app.option = serde_json::to_vec(&info).unwrap_or_default();
            }
            // A delete's body is its DeleteOptions.
            None if self.app.verb == verb::DELETE => {
                if !body.is_empty() {
                    self.app.option = body.to_vec();
                }
            }
            None => self.app.req_body = body.to_vec(),
        }
        let message = match Message::new()
            .with_route(
                source::META_SERVER,
                group::DYNAMIC_CONTROLLER,
                "null",
                "null",
            )
            .with_serialized_content(&self.app)
        {
            Ok(message) => message,
            Err(err) => {
                return Failure::new(StatusCode::BAD_REQUEST, "BadRequest", err.to_string())
                    .response();
            }
        };
        let reply = match bus
            .send_sync(source::EDGE_HUB, message, CLOUD_TIMEOUT)
            .await
        {
            Ok(reply) if reply.router.operation != operation::ERROR => reply,
            Ok(_) => {
                return Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the cloud is not connected: writes need it (reads are served from the \
                     node's cache)",
                )
                .response();
            }
            Err(err) => {
                return Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("the cloud did not answer the write: {err}"),
                )
                .response();
            }
        };
        let answered = match reply.decode_content::<Application>() {
            Ok(app) => app,
            Err(err) => {
                return Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "InternalError",
                    format!("unreadable answer from the cloud: {err}"),
                )
                .response();
            }
        };
        match answered.status.as_str() {
            status::APPROVED => {
                let code = if self.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                raw_json_response(
                    code,
                    String::from_utf8_lossy(&answered.resp_body).into_owned(),
                )
            }
            status::REJECTED if answered.error_status().is_some() => {
                let mut error = answered.error_status().cloned().unwrap_or(Value::Null);
                error["kind"] = json!("Status");
                error["apiVersion"] = json!("v1");
                let code = error["code"]
                    .as_u64()
                    .and_then(|c| StatusCode::from_u16(c as u16).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                raw_json_response(code, error.to_string())
            }
            other => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "the cloud answered {other:?} for {} {:?}: {}",
                    self.kind.plural, self.name, answered.reason
                ),
            )
            .response(),
        }
    }
}

pub(crate) async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, Failure> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body: {err}"),
        )),
    }
}
