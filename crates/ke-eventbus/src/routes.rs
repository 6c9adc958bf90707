//! Where MQTT traffic goes in the bus and what bus messages become on MQTT — upstream's rules
//! (`edge/pkg/eventbus/mqtt/{client,handler}.go`, `eventbus.go`), as pure functions.

use ke_message::Message;
use ke_message::constants::{group, operation, resource_type};
use serde_json::Value;

/// What edgecore always subscribes to (upstream's `SubTopics`). Topics added by `subscribe`
/// messages come on top and are kept in the `sub_topics` table.
pub const DEFAULT_TOPICS: [&str; 6] = [
    "$hw/events/upload/#",
    "$hw/events/device/+/+/state/update",
    "$hw/events/device/+/+/twin/+",
    "$hw/events/node/+/membership/get",
    "SYS/dis/upload_records",
    "+/user/#",
];

/// The bus group a message from MQTT is sent to, and the message.
///
/// Device and node topics go to devicetwin with the topic base64url-encoded as the resource
/// (the topic contains slashes, which resource parsing would split); everything else is
/// uploaded to the cloud unchanged.
pub fn ingress(topic: &str, payload: &[u8]) -> (&'static str, Message) {
    let body = String::from_utf8_lossy(payload).into_owned();
    if topic.starts_with("$hw/events/device") || topic.starts_with("$hw/events/node") {
        let resource = ke_message::resource::mqtt_topic_resource(topic);
        let message = Message::new()
            .with_route(group::BUS, group::USER, resource, operation::RESPONSE)
            .with_content(body);
        (group::TWIN, message)
    } else {
        let message = Message::new()
            .with_route(group::BUS, group::USER, topic, operation::UPLOAD)
            .with_content(body);
        (group::HUB, message)
    }
}

/// What a message sent to the eventbus module asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Egress {
    Publish { topic: String, payload: Vec<u8> },
    Subscribe(String),
    Unsubscribe(String),
}

/// Why a message to the eventbus was not acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("operation {0:?} is not one the eventbus performs")]
    UnknownOperation(String),
    #[error("{0:?} is not a valid MQTT topic")]
    BadTopic(String),
    #[error("a `message` without content.message.topic")]
    NoTopic,
    #[error("get_result for {0:?}: only auth_info results are published")]
    NotAuthInfo(String),
}

/// Upstream's `pubCloudMsgToEdge` switch: `publish` (resource = topic, content = payload),
/// `subscribe`/`unsubscribe` (resource = topic filter), `message` (content.message published
/// as JSON on its own `topic`), `get_result` of `auth_info`.
pub fn egress(message: &Message, node: &str) -> Result<Egress, EgressError> {
    let resource = message.router.resource.as_str();
    let checked_topic = |topic: &str| {
        if ke_mqtt::topic::valid_name(topic) {
            Ok(topic.to_owned())
        } else {
            Err(EgressError::BadTopic(topic.to_owned()))
        }
    };
    match message.router.operation.as_str() {
        operation::PUBLISH => Ok(Egress::Publish {
            topic: checked_topic(resource)?,
            payload: message.content_bytes(),
        }),
        operation::SUBSCRIBE | operation::UNSUBSCRIBE => {
            if !ke_mqtt::topic::valid_filter(resource) {
                return Err(EgressError::BadTopic(resource.to_owned()));
            }
            Ok(if message.router.operation == operation::SUBSCRIBE {
                Egress::Subscribe(resource.to_owned())
            } else {
                Egress::Unsubscribe(resource.to_owned())
            })
        }
        operation::MESSAGE => {
            let inner = message
                .content
                .get("message")
                .filter(|m| m.is_object())
                .ok_or(EgressError::NoTopic)?;
            let topic = inner
                .get("topic")
                .and_then(Value::as_str)
                .ok_or(EgressError::NoTopic)?;
            Ok(Egress::Publish {
                topic: checked_topic(topic)?,
                payload: ke_message::codec::encode_value(inner),
            })
        }
        operation::GET_RESULT => {
            if resource != resource_type::AUTH_INFO {
                return Err(EgressError::NotAuthInfo(resource.to_owned()));
            }
            Ok(Egress::Publish {
                topic: format!("$hw/events/node/{node}/authInfo/get/result"),
                payload: ke_message::codec::encode_value(&message.content),
            })
        }
        other => Err(EgressError::UnknownOperation(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ke_message::constants::source;
    use ke_message::resource::topic_of_resource as decode_topic;
    use serde_json::json;

    fn publish_request(topic: &str, payload: String) -> Message {
        Message::new()
            .with_route(source::TWIN, group::BUS, topic, operation::PUBLISH)
            .with_content(payload)
    }

    #[test]
    fn device_and_node_topics_go_to_the_twin_with_the_topic_encoded() {
        let topic = "$hw/events/device/default/thermometer-01/twin/update";
        let (to, message) = ingress(topic, br#"{"event_id":""}"#);
        assert_eq!(to, "twin");
        assert_eq!(message.router.source, "bus");
        assert_eq!(message.router.group, "user");
        assert_eq!(message.router.operation, "response");
        assert_eq!(message.content, json!(r#"{"event_id":""}"#));
        assert_eq!(
            decode_topic(&message.router.resource).as_deref(),
            Some(topic)
        );
        // Go's base64.URLEncoding: '-' and '_' instead of '+' and '/', padded.
        let (_, node) = ingress("$hw/events/node/n1/membership/get", b"{}");
        assert_eq!(
            node.router.resource,
            "JGh3L2V2ZW50cy9ub2RlL24xL21lbWJlcnNoaXAvZ2V0"
        );
        assert_eq!(
            decode_topic(
                &ingress("$hw/events/device/a/b?/twin/get", b"")
                    .1
                    .router
                    .resource
            )
            .as_deref(),
            Some("$hw/events/device/a/b?/twin/get")
        );
    }

    #[test]
    fn other_topics_are_uploaded_to_the_cloud() {
        let (to, message) = ingress("SYS/dis/upload_records", b"records");
        assert_eq!(to, "hub");
        assert_eq!(message.router.resource, "SYS/dis/upload_records");
        assert_eq!(message.router.operation, "upload");
        assert_eq!(message.content, json!("records"));
        // Payloads that are not UTF-8 do not stop the message.
        let (_, message) = ingress("default/user/x", &[0xff, b'a']);
        assert_eq!(message.content, json!("\u{fffd}a"));
    }

    #[test]
    fn operations_map_to_mqtt_actions() {
        let publish = publish_request("$hw/events/device/d/n/twin/update/result", "{}".into());
        assert_eq!(
            egress(&publish, "n1"),
            Ok(Egress::Publish {
                topic: "$hw/events/device/d/n/twin/update/result".into(),
                payload: b"{}".to_vec()
            })
        );
        let sub = Message::new().with_route("router", "bus", "a/+/c", "subscribe");
        assert_eq!(egress(&sub, "n1"), Ok(Egress::Subscribe("a/+/c".into())));
        let unsub = Message::new().with_route("router", "bus", "a/+/c", "unsubscribe");
        assert_eq!(
            egress(&unsub, "n1"),
            Ok(Egress::Unsubscribe("a/+/c".into()))
        );
        let message = Message::new()
            .with_route("router", "bus", "r", "message")
            .with_content(json!({"message": {"topic": "t/1", "data": "x"}}));
        assert_eq!(
            egress(&message, "n1"),
            Ok(Egress::Publish {
                topic: "t/1".into(),
                payload: br#"{"topic":"t/1","data":"x"}"#.to_vec()
            })
        );
        let auth = Message::new()
            .with_route("cloud", "bus", "auth_info", "get_result")
            .with_content(json!({"a": 1}));
        assert_eq!(
            egress(&auth, "n1"),
            Ok(Egress::Publish {
                topic: "$hw/events/node/n1/authInfo/get/result".into(),
                payload: br#"{"a":1}"#.to_vec()
            })
        );
    }

    #[test]
    fn bad_requests_are_errors() {
        let wildcard = publish_request("a/#", String::new());
        assert_eq!(
            egress(&wildcard, "n"),
            Err(EgressError::BadTopic("a/#".into()))
        );
        let bad_filter = Message::new().with_route("r", "bus", "a/#/b", "subscribe");
        assert!(egress(&bad_filter, "n").is_err());
        let no_topic = Message::new()
            .with_route("r", "bus", "x", "message")
            .with_content("text");
        assert_eq!(egress(&no_topic, "n"), Err(EgressError::NoTopic));
        let other = Message::new().with_route("r", "bus", "x", "get_result");
        assert!(matches!(
            egress(&other, "n"),
            Err(EgressError::NotAuthInfo(_))
        ));
        let unknown = Message::new().with_route("r", "bus", "x", "delete");
        assert!(matches!(
            egress(&unknown, "n"),
            Err(EgressError::UnknownOperation(_))
        ));
    }
}
