//! API errors, rendered as `metav1.Status` because clients (kubectl, client-go) decide what to do
//! from `reason` and `code`, not from the message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::storage::StorageError;

/// A failed request: `reason` and `code` as kube-apiserver would send them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(res)),
        )
        .with_details(details(res, name))
    }

    /// A URL that names nothing we serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(res)),
        )
        .with_details(details(res, name))
    }

    /// The optimistic-concurrency failure; kubectl matches on this exact wording's reason.
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(res)
            ),
        )
        .with_details(details(res, name))
    }

    /// A field failed validation (422), with one cause per field like kube-apiserver.
    pub fn invalid(res: &ResourceInfo, name: &str, field: &str, detail: &str) -> Self {
        let mut d = details(res, name);
        d["causes"] = json!([{ "reason": "FieldValueInvalid", "message": detail, "field": field }]);
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {detail}", res.kind),
        )
        .with_details(d)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Maps a storage failure on object `name` of `res`.
    pub fn from_storage(res: &ResourceInfo, name: &str, e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists { .. } => Self::already_exists(res, name),
            StorageError::NotFound { .. } => Self::not_found(res, name),
            StorageError::Conflict { .. } => Self::conflict(res, name),
            StorageError::Compacted { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StorageError::Backend(m) => Self::internal(format!("storage: {m}")),
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// `configmaps` or `deployments.apps`, as kube-apiserver names resources in messages.
fn qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.plural.to_owned()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn details(res: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": res.plural });
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::json_response(code, &self.to_status())
    }
}

/// The `Status` a successful delete answers with when the object is gone at once.
pub fn success_status(res: &ResourceInfo, name: &str, uid: Option<&str>) -> Value {
    let mut d = details(res, name);
    if let Some(uid) = uid {
        d["uid"] = json!(uid);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Catalog, Resource};

    fn lookup(group: &str, version: &str, plural: &str) -> Option<Resource> {
        Catalog::builtin().lookup(group, version, plural)
    }

    #[test]
    fn status_shape() {
        let dep = lookup("apps", "v1", "deployments").unwrap();
        let s = ApiError::not_found(&dep, "web").to_status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["group"], "apps");
        let cm = lookup("", "v1", "configmaps").unwrap();
        let s = ApiError::invalid(&cm, "A", "metadata.name", "bad").to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    }
}
