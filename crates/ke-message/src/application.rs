//! Upstream's `Application`: how an edge's metaserver asks the cloud's dynamiccontroller to do
//! something against the API server (`pkg/metaserver/application.go`). It travels as the
//! content of a message from source `metaserver`, group `dynamiccontroller`; the answer comes
//! back as operation `applicationResponse` with the same struct, its status and result filled.
//!
//! Go marshals it without json tags, so the keys are the field names, and `[]byte` fields are
//! base64 strings (`null` when nil).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Verb` values.
pub mod verb {
    pub const GET: &str = "get";
    pub const LIST: &str = "list";
    pub const WATCH: &str = "watch";
    pub const CREATE: &str = "create";
    pub const DELETE: &str = "delete";
    pub const UPDATE: &str = "update";
    pub const UPDATE_STATUS: &str = "updatestatus";
    pub const PATCH: &str = "patch";
}

/// `Status` values.
pub mod status {
    pub const IN_APPLYING: &str = "InApplying";
    pub const APPROVED: &str = "Approved";
    pub const REJECTED: &str = "Rejected";
    pub const FAILED: &str = "Failed";
}

/// Route values of application messages.
pub const APPLICATION_RESOURCE: &str = "Application";
pub const IGNORE: &str = "ignore";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    #[serde(rename = "ID", default)]
    pub id: String,
    /// A metaserver key ([`crate::kinds::metaserver_key`]).
    #[serde(rename = "Key", default)]
    pub key: String,
    #[serde(rename = "Verb", default)]
    pub verb: String,
    #[serde(rename = "Nodename", default)]
    pub node_name: String,
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Reason", default)]
    pub reason: String,
    /// The verb's options as JSON (`CreateOptions`, `DeleteOptions`, a [`PatchInfo`]…).
    #[serde(rename = "Option", default, with = "go_bytes")]
    pub option: Vec<u8>,
    #[serde(rename = "ReqBody", default, with = "go_bytes")]
    pub req_body: Vec<u8>,
    #[serde(rename = "RespBody", default, with = "go_bytes")]
    pub resp_body: Vec<u8>,
    #[serde(rename = "Subresource", default)]
    pub subresource: String,
    /// A Go `apierrors.StatusError`: `{"ErrStatus": metav1.Status}`.
    #[serde(rename = "Error", default = "no_error")]
    pub error: Value,
    #[serde(rename = "Timestamp", default = "zero_time")]
    pub timestamp: String,
}

fn no_error() -> Value {
    serde_json::json!({ "ErrStatus": { "metadata": {} } })
}

fn zero_time() -> String {
    "0001-01-01T00:00:00Z".to_owned()
}

impl Application {
    pub fn new(key: String, verb: &str, node_name: &str) -> Application {
        Application {
            key,
            verb: verb.to_owned(),
            node_name: node_name.to_owned(),
            status: status::IN_APPLYING.to_owned(),
            error: no_error(),
            timestamp: zero_time(),
            ..Application::default()
        }
    }

    /// The `metav1.Status` of a rejection, if it carries one.
    pub fn error_status(&self) -> Option<&Value> {
        self.error
            .get("ErrStatus")
            .filter(|status| status.get("code").is_some())
    }
}

/// `PatchInfo`, the `Option` of a patch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatchInfo {
    #[serde(rename = "Name", default)]
    pub name: String,
    /// A patch content type (`application/merge-patch+json`…).
    #[serde(rename = "PatchType", default)]
    pub patch_type: String,
    #[serde(rename = "Data", default, with = "go_bytes")]
    pub data: Vec<u8>,
    #[serde(rename = "Options", default)]
    pub options: Value,
    #[serde(rename = "Subresources", default)]
    pub subresources: Option<Vec<String>>,
}

/// Go's `[]byte` in JSON: a standard base64 string, `null` for nil.
mod go_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if bytes.is_empty() {
            serializer.serialize_none()
        } else {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        match text {
            None => Ok(Vec::new()),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshals_as_go_does() {
        let mut app = Application::new("/core/v1/pods/default/web".into(), verb::DELETE, "edge-1");
        app.option = br#"{"gracePeriodSeconds":0}"#.to_vec();
        let json = serde_json::to_value(&app).unwrap();
        assert_eq!(json["Option"], "eyJncmFjZVBlcmlvZFNlY29uZHMiOjB9");
        assert_eq!(json["ReqBody"], Value::Null);
        assert_eq!(json["Verb"], "delete");
        let back: Application = serde_json::from_value(json).unwrap();
        assert_eq!(back, app);
        assert!(back.error_status().is_none());
        let rejected: Application = serde_json::from_str(
            r#"{"Key":"k","Status":"Rejected","Error":{"ErrStatus":{"code":403,"reason":"Forbidden"}}}"#,
        )
        .unwrap();
        assert_eq!(rejected.error_status().unwrap()["code"], 403);
        assert!(serde_json::from_str::<Application>(r#"{"Option":"%%%"}"#).is_err());
    }
}
