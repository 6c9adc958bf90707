use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::codec;
use crate::constants::{MESSAGE_SUCCESSFUL_CONTENT, operation};

/// One beehive message: the unit exchanged between modules and over the cloud–edge link.
///
/// Field names follow the Go struct, but on the wire the route is called `route`, and fields that
/// Go omits when empty are omitted here too (see [`MessageHeader`], [`MessageRoute`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Message {
    pub header: MessageHeader,
    /// Go's `omitempty` has no effect on a struct, so `route` is always written, even when empty.
    #[serde(rename = "route")]
    pub router: MessageRoute,
    /// Schemaless, as Go's `interface{}`: absent or `null` content is [`Value::Null`].
    pub content: Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MessageHeader {
    /// A UUIDv4 for messages we create; peers may use any string.
    #[serde(rename = "msg_id")]
    pub id: String,
    /// Set on responses: the id of the message being answered. Replies are matched only by this.
    #[serde(rename = "parent_msg_id", skip_serializing_if = "String::is_empty")]
    pub parent_id: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// `metadata.resourceVersion` of the carried object; the cloud's reliable queue orders by it.
    #[serde(rename = "resourceversion", skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Marks an in-process request awaiting a reply. Upstream clears it before writing to the
    /// network, so it is effectively never on the wire.
    #[serde(skip_serializing_if = "is_false")]
    pub sync: bool,
    /// Beehive's context type; empty means the in-process channel context.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub message_type: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MessageRoute {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination: String,
    /// Semantic group (e.g. `resource`, `twin`, `user`) that receivers dispatch on; it is not an
    /// address — the sender picks the destination module explicitly.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub operation: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Milliseconds since the epoch, as message headers carry them.
pub fn now_millis() -> i64 {
    // A clock before 1970 is a broken machine, not a reason to fail building a message.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Message {
    /// A new message with a fresh UUIDv4 id, the current time and no route or content.
    pub fn new() -> Message {
        Message {
            header: MessageHeader {
                id: uuid::Uuid::new_v4().to_string(),
                timestamp: now_millis(),
                ..MessageHeader::default()
            },
            ..Message::default()
        }
    }

    /// Sets the whole route at once. The argument order is upstream's `BuildRouter`.
    pub fn with_route(
        mut self,
        source: impl Into<String>,
        group: impl Into<String>,
        resource: impl Into<String>,
        operation: impl Into<String>,
    ) -> Message {
        self.router.source = source.into();
        self.router.group = group.into();
        self.router.resource = resource.into();
        self.router.operation = operation.into();
        self
    }

    pub fn with_destination(mut self, destination: impl Into<String>) -> Message {
        self.router.destination = destination.into();
        self
    }

    pub fn with_parent_id(mut self, parent_id: impl Into<String>) -> Message {
        self.header.parent_id = parent_id.into();
        self
    }

    pub fn with_resource_version(mut self, resource_version: impl Into<String>) -> Message {
        self.header.resource_version = resource_version.into();
        self
    }

    pub fn with_content(mut self, content: impl Into<Value>) -> Message {
        self.content = content.into();
        self
    }

    /// Content from any serializable value, e.g. a typed Kubernetes object.
    pub fn with_serialized_content<T: Serialize>(
        mut self,
        content: &T,
    ) -> Result<Message, serde_json::Error> {
        self.content = serde_json::to_value(content)?;
        Ok(self)
    }

    /// Content that a Go peer would have sent as `[]byte`: Go's encoder writes it as standard,
    /// padded base64 in a JSON string, and Go receivers expect exactly that.
    pub fn with_bytes_content(mut self, bytes: &[u8]) -> Message {
        self.content = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        self
    }

    /// The reply to `request`: new id, `parent_msg_id` = the request's id, and the request's
    /// source, group, resource and type echoed back (receivers dispatch on the echoed group).
    pub fn response_to(request: &Message, content: impl Into<Value>) -> Message {
        let mut response = Message::new()
            .with_parent_id(request.header.id.clone())
            .with_route(
                request.router.source.clone(),
                request.router.group.clone(),
                request.router.resource.clone(),
                operation::RESPONSE,
            )
            .with_content(content);
        response.header.message_type = request.header.message_type.clone();
        response
    }

    /// The acknowledgement the edge sends once it has persisted `request`: a response whose
    /// content is `"OK"`. The cloud clears its pending entry by `parent_msg_id`.
    pub fn ack_for(request: &Message) -> Message {
        Message::response_to(request, MESSAGE_SUCCESSFUL_CONTENT)
    }

    /// An `error` reply to `request` carrying a human-readable reason.
    ///
    /// Unlike upstream's `NewErrorMessage`, which copies the request's *parent* id, the parent here
    /// is the request itself — what upstream's metamanager actually puts on the wire (golden frame
    /// 23) and the only choice that lets the sender correlate the failure.
    pub fn error_for(request: &Message, reason: impl Into<String>) -> Message {
        let mut error = Message::response_to(request, Value::String(reason.into()));
        error.router.operation = operation::ERROR.to_owned();
        error
    }

    pub fn is_response(&self) -> bool {
        self.router.operation == operation::RESPONSE
    }

    /// The content as bytes, as upstream's `GetContentData`: a string's own bytes (JSON-in-a-string
    /// patches, base64 left as is), anything else re-encoded as Go-compatible JSON.
    pub fn content_bytes(&self) -> Vec<u8> {
        match &self.content {
            Value::String(s) => s.as_bytes().to_vec(),
            other => codec::encode_value(other),
        }
    }

    /// Decodes content that a Go peer sent as `[]byte` (a base64 string).
    pub fn content_base64(&self) -> Result<Vec<u8>, ContentError> {
        let Value::String(encoded) = &self.content else {
            return Err(ContentError::NotAString(json_type_name(&self.content)));
        };
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(ContentError::Base64)
    }

    /// Deserializes the content into `T`, accepting both an embedded JSON value and a JSON
    /// document carried inside a string (upstream sends node and pod patches that way).
    pub fn decode_content<T: DeserializeOwned>(&self) -> Result<T, ContentError> {
        match &self.content {
            Value::String(s) => serde_json::from_str(s),
            other => T::deserialize(other),
        }
        .map_err(ContentError::Json)
    }
}

/// Why the content could not be read in the requested shape.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content is {0}, expected a base64 string")]
    NotAString(&'static str),
    #[error("content is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("content does not match the expected type: {0}")]
    Json(#[source] serde_json::Error),
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn request() -> Message {
        Message::new()
            .with_route("edgecontroller", "resource", "default/pod/web", "insert")
            .with_resource_version("42")
            .with_content(json!({"metadata": {"name": "web"}}))
    }

    #[test]
    fn new_messages_get_unique_ids_and_a_current_timestamp() {
        let (a, b) = (Message::new(), Message::new());
        assert_ne!(a.header.id, b.header.id);
        assert_eq!(a.header.id.len(), 36, "a hyphenated uuid");
        assert!(
            a.header.timestamp > 1_700_000_000_000,
            "milliseconds, not seconds"
        );
    }

    #[test]
    fn ack_echoes_the_route_and_points_at_the_request() {
        let req = request();
        let ack = Message::ack_for(&req);
        assert_eq!(ack.header.parent_id, req.header.id);
        assert_ne!(ack.header.id, req.header.id);
        assert_eq!(ack.router.source, "edgecontroller");
        assert_eq!(ack.router.group, "resource");
        assert_eq!(ack.router.resource, "default/pod/web");
        assert_eq!(ack.router.operation, "response");
        assert_eq!(ack.content, json!("OK"));
        assert!(ack.header.resource_version.is_empty());
        assert!(ack.is_response());
    }

    #[test]
    fn error_reply_carries_the_reason_and_the_request_id() {
        let req = request();
        let err = Message::error_for(&req, "database is locked");
        assert_eq!(err.router.operation, "error");
        assert_eq!(err.header.parent_id, req.header.id);
        assert_eq!(err.content, json!("database is locked"));
    }

    #[test]
    fn bytes_content_is_go_base64_and_decodes_back() {
        let msg = Message::new().with_bytes_content(b"{\"a\":1}");
        assert_eq!(msg.content, json!("eyJhIjoxfQ=="));
        assert_eq!(msg.content_base64().unwrap(), b"{\"a\":1}");
        assert!(matches!(
            Message::new().with_content(json!({})).content_base64(),
            Err(ContentError::NotAString("an object"))
        ));
        assert!(matches!(
            Message::new().with_content("not base64!").content_base64(),
            Err(ContentError::Base64(_))
        ));
    }

    #[test]
    fn content_bytes_matches_upstream_get_content_data() {
        let patch = Message::new().with_content("{\"status\":{}}");
        assert_eq!(patch.content_bytes(), b"{\"status\":{}}");
        let object = Message::new().with_content(json!({"a": "<b>"}));
        assert_eq!(object.content_bytes(), br#"{"a":"\u003cb\u003e"}"#);
    }

    #[test]
    fn decode_content_reads_json_inside_strings_and_plain_objects() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct Status {
            phase: String,
        }
        let in_string = Message::new().with_content(r#"{"phase":"Running"}"#);
        let in_object = Message::new().with_content(json!({"phase": "Running"}));
        let want = Status {
            phase: "Running".into(),
        };
        assert_eq!(in_string.decode_content::<Status>().unwrap(), want);
        assert_eq!(in_object.decode_content::<Status>().unwrap(), want);
        assert!(
            Message::new()
                .with_content(42)
                .decode_content::<Status>()
                .is_err()
        );
    }
}
