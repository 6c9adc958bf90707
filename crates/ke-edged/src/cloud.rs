//! Requests edged makes of the cloud — through metamanager, which knows whether the cloud is
//! there — and how their answers read.

use crate::METAMANAGER;
use std::time::Duration;

use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{group, operation, source};
use serde_json::Value;

/// Longer than metamanager's own wait for the cloud, so its answer always arrives.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

/// What the cloud answered: `ObjectResp {Object, Err}` or an error message.
#[derive(Debug)]
pub(crate) enum Answer {
    Object(Value),
    /// The API server's reason (`AlreadyExists`, `NotFound`…) or the local failure.
    Failed {
        reason: String,
        message: String,
    },
}

impl Answer {
    pub fn of(reply: &Message) -> Answer {
        if reply.router.operation == operation::ERROR {
            return Answer::Failed {
                reason: "Unavailable".into(),
                message: reply.content.as_str().unwrap_or("failed").to_owned(),
            };
        }
        let content = match &reply.content {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let err = &content["Err"]["ErrStatus"];
        if err.is_object() {
            return Answer::Failed {
                reason: err["reason"].as_str().unwrap_or("Unknown").to_owned(),
                message: err["message"].as_str().unwrap_or_default().to_owned(),
            };
        }
        Answer::Object(content["Object"].clone())
    }
}

/// `op` on `resource` in the cloud, answered.
pub async fn request(bus: &Bus, resource: &str, op: &str, content: Value) -> Answer {
    let message = Message::new()
        .with_route(source::EDGED, group::META, resource, op)
        .with_content(content);
    match bus.send_sync(METAMANAGER, message, REQUEST_TIMEOUT).await {
        Ok(reply) => Answer::of(&reply),
        Err(err) => Answer::Failed {
            reason: "Unavailable".into(),
            message: err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_upstream_sends_them() {
        let golden = |name: &str| {
            ke_message::decode(
                &std::fs::read(format!(
                    "{}/tests/golden/{name}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap()
        };
        match Answer::of(&golden("05-node-register-response.json")) {
            Answer::Object(node) => assert_eq!(node["metadata"]["name"], "edge-node-1"),
            other => panic!("{other:?}"),
        }
        match Answer::of(&golden("06-node-register-response-error.json")) {
            Answer::Failed { reason, .. } => assert_eq!(reason, "AlreadyExists"),
            other => panic!("{other:?}"),
        }
    }
}
