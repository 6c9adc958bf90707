//! Upstream's reply shapes: `ObjectResp {Object, Err}`, the Go `error` value of a failed API
//! call (`{"ErrStatus": metav1.Status}`), and the response message that carries them.

use ke_message::Message;
use ke_message::constants::{group, operation, source};
use serde_json::{Value, json};

/// The response to an edge request, addressed back to the node it came from (the request's
/// resource still carries cloudhub's `node/<id>/` prefix).
pub(crate) fn response(request: &Message, content: Value) -> Message {
    Message::new()
        .with_parent_id(request.header.id.clone())
        .with_route(
            source::EDGE_CONTROLLER,
            group::RESOURCE,
            request.router.resource.clone(),
            operation::RESPONSE,
        )
        .with_content(content)
}

/// `types.ObjectResp`: no json tags upstream, so the keys are `Object` and `Err`.
pub(crate) fn object_resp(object: Value, err: Option<Value>) -> Value {
    json!({ "Object": object, "Err": err.unwrap_or(Value::Null) })
}

/// A failure as a Go `*errors.StatusError` marshals: `{"ErrStatus": metav1.Status}`.
/// `kind` is what upstream puts in `details.kind`: the plural resource for API-server errors,
/// the resource-type token for lookups edgecontroller answers itself.
pub(crate) fn status_error(
    code: u16,
    reason: &str,
    message: &str,
    name: &str,
    kind: &str,
) -> Value {
    json!({
        "ErrStatus": {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": { "name": name, "kind": kind },
            "code": code,
        }
    })
}

/// `details.kind` is the API's plural resource name (`nodes`), as the API server reports it.
pub(crate) fn api_error(err: &kube::Error, name: &str, plural: &str) -> Value {
    match err {
        kube::Error::Api(status) => {
            status_error(status.code, &status.reason, &status.message, name, plural)
        }
        other => status_error(500, "InternalError", &other.to_string(), name, plural),
    }
}

/// What upstream's lister answers for a missing object: `<type> "<name>" not found`.
pub(crate) fn not_found(token: &str, name: &str) -> Value {
    status_error(
        404,
        "NotFound",
        &format!("{token} {name:?} not found"),
        name,
        token,
    )
}

pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Message {
        let path = format!(
            "{}/../ke-message/tests/golden/messages/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ke_message::decode(&bytes).expect("golden decodes")
    }

    #[test]
    fn not_found_matches_upstream_frame_19() {
        let frame = golden("19-configmap-query-notfound-response.json");
        assert_eq!(not_found("configmap", "missing-config"), frame.content);
    }

    #[test]
    fn already_exists_matches_upstream_frame_06() {
        let frame = golden("06-node-register-response-error.json");
        let err = status_error(
            409,
            "AlreadyExists",
            "nodes \"edge-node-1\" already exists",
            "edge-node-1",
            "nodes",
        );
        assert_eq!(frame.content["Err"], err);
    }

    #[test]
    fn a_response_goes_back_to_the_requesting_node() {
        let mut request = golden("15-configmap-query.json");
        request.router.resource = format!("node/edge-node-1/{}", request.router.resource);
        let reply = response(&request, Value::Null);
        assert_eq!(reply.header.parent_id, request.header.id);
        assert_eq!(reply.router.source, "edgecontroller");
        assert_eq!(reply.router.group, "resource");
        assert_eq!(reply.router.operation, "response");
        assert_eq!(
            reply.router.resource,
            "node/edge-node-1/default/configmap/nginx-config"
        );
    }
}
