//! Which cloud→edge messages need an acknowledgement: upstream's `noAckRequired`
//! (cloud/pkg/cloudhub/dispatcher/message_dispatcher.go), rule for rule.

use ke_message::Message;
use ke_message::constants::{MESSAGE_SUCCESSFUL_CONTENT, group, operation, resource_type, source};
use ke_message::resource::split_node_prefix;
use serde_json::Value;

/// How a cloud→edge message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Kept until the edge answers with a `response` whose `parent_msg_id` is the message id;
    /// retransmitted meanwhile. Used for objects the edge persists (pods, configmaps, devices…).
    Ack,
    /// Written once and forgotten: replies to edge requests (the edge retries the request if the
    /// reply is lost) and streams whose next message supersedes the previous one.
    NoAck,
}

/// Module name of upstream's node upgrade job controller (`modules.NodeUpgradeJobControllerModuleName`);
/// ke-message has no constant for it because no kubeedge-rs module uses that name yet.
const NODE_UPGRADE_JOB_CONTROLLER: &str = "nodeupgradejobcontroller";

/// Upstream matches these as substrings of the whole resource, not as resource types, so e.g.
/// `node/n1/membership/detail` and `device/d1/twin/cloud_updated` both qualify.
const NO_ACK_RESOURCE_FRAGMENTS: [&str; 5] = [
    resource_type::POD_LIST,
    resource_type::MEMBERSHIP,
    "twin/cloud_updated",
    resource_type::SERVICE_ACCOUNT_TOKEN,
    resource_type::KUBE_CA_CERT,
];

const VOLUME_OPERATIONS: [&str; 4] = [
    operation::CREATE_VOLUME,
    operation::DELETE_VOLUME,
    operation::CONTROLLER_PUBLISH_VOLUME,
    operation::CONTROLLER_UNPUBLISH_VOLUME,
];

/// Classifies a cloud→edge message exactly as upstream's dispatcher does.
///
/// Works on both resource forms: the cloud-internal `node/<id>/<ns>/<type>/<name>` that
/// controllers hand to cloudhub (what upstream classifies) and the trimmed wire form
/// `<ns>/<type>/<name>` (what the golden frames show). The resource type is the token after the
/// namespace in either form, which is the token upstream reads at index 3 of the prefixed form.
///
/// Rules, in upstream's order (the first that matches decides NO-ACK):
/// 1. the resource contains `podlist`, `membership`, `twin/cloud_updated`, `serviceaccounttoken`
///    or `k8s/ca.crt`;
/// 2. the operation is a CSI volume operation or `applicationResponse`;
/// 3. the group is `user` (router / servicebus traffic);
/// 4. the source is `taskmanager` or `nodeupgradejobcontroller`;
/// 5. the operation is `response` and the content is `"OK"` or an error value;
/// 6. the source is `edgecontroller` and the resource type is `node` (except `update`, which
///    since KubeEdge v1.23, PR #6489, is ACKed because the edge serves node GETs from its
///    database), `lease`, `nodepatch`, `podpatch`, `podstatus`, `certificatesigningrequest`, or
///    `pod` with operation `response`.
///
/// Everything else needs an ACK.
pub fn classify(msg: &Message) -> Delivery {
    if no_ack_required(msg) {
        Delivery::NoAck
    } else {
        Delivery::Ack
    }
}

fn no_ack_required(msg: &Message) -> bool {
    let route = &msg.router;
    let resource = route.resource.as_str();
    let op = route.operation.as_str();

    if NO_ACK_RESOURCE_FRAGMENTS
        .iter()
        .any(|fragment| resource.contains(fragment))
    {
        return true;
    }
    if VOLUME_OPERATIONS.contains(&op) || op == operation::APPLICATION_RESPONSE {
        return true;
    }
    if route.group == group::USER {
        return true;
    }
    if route.source == source::TASK_MANAGER || route.source == NODE_UPGRADE_JOB_CONTROLLER {
        return true;
    }
    if op == operation::RESPONSE
        && (is_success_content(&msg.content) || is_error_content(&msg.content))
    {
        return true;
    }
    // Upstream reaches this check both from its `default` branch and by `fallthrough` from the
    // response branch, so it applies to every message the rules above did not decide.
    route.source == source::EDGE_CONTROLLER
        && edge_controller_no_ack(resource_type_of(resource), op)
}

fn edge_controller_no_ack(resource_type: &str, op: &str) -> bool {
    match resource_type {
        resource_type::NODE => op != operation::UPDATE,
        resource_type::LEASE
        | resource_type::NODE_PATCH
        | resource_type::POD_PATCH
        | resource_type::POD_STATUS
        | resource_type::CERTIFICATE_SIGNING_REQUEST => true,
        resource_type::POD => op == operation::RESPONSE,
        _ => false,
    }
}

fn is_success_content(content: &Value) -> bool {
    content.as_str() == Some(MESSAGE_SUCCESSFUL_CONTENT)
}

/// Upstream tests the in-process Go value (`msg.Content.(error)`); we only have its JSON. A
/// `*StatusError` encodes as `{"ErrStatus": {...}}` (golden frame 19) and an error without
/// exported fields (`errors.New`, `fmt.Errorf`) as `{}`. Neither shape can be a Kubernetes
/// object, which always carries `metadata`, so recognising them cannot misclassify an object.
pub(crate) fn is_error_content(content: &Value) -> bool {
    match content {
        Value::Object(map) => {
            map.is_empty() || (map.len() == 1 && map.get("ErrStatus").is_some_and(Value::is_object))
        }
        _ => false,
    }
}

/// The `<type>` token: index 1 of the wire form, i.e. index 3 of the `node/<id>/` form.
/// Empty when the resource has no such token, as upstream's `GetResourceType` returns `""`.
pub(crate) fn resource_type_of(resource: &str) -> &str {
    let wire = split_node_prefix(resource).map_or(resource, |(_, rest)| rest);
    wire.split('/').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(source: &str, group: &str, resource: &str, op: &str) -> Message {
        Message::default().with_route(source, group, resource, op)
    }

    fn object() -> Value {
        json!({"metadata": {"name": "x", "uid": "u-1", "resourceVersion": "7"}})
    }

    #[test]
    fn resource_fragments_are_no_ack_whatever_the_rest_of_the_route() {
        for resource in [
            "node/n1/default/podlist",
            "node/n1/membership",
            "node/n1/membership/detail",
            "node/n1/device/d1/twin/cloud_updated",
            "node/n1/default/serviceaccounttoken/sa",
            "node/n1/k8s/ca.crt",
            "default/podlist",
        ] {
            let m = msg("devicecontroller", "resource", resource, "update").with_content(object());
            assert_eq!(classify(&m), Delivery::NoAck, "{resource}");
        }
    }

    #[test]
    fn csi_volume_and_application_response_operations_are_no_ack() {
        for op in [
            "createvolume",
            "deletevolume",
            "controllerpublishvolume",
            "controllerunpublishvolume",
            "applicationResponse",
        ] {
            let m = msg("synccontroller", "resource", "node/n1/default/pod/p", op);
            assert_eq!(classify(&m), Delivery::NoAck, "{op}");
        }
    }

    #[test]
    fn user_group_and_task_sources_are_no_ack() {
        let m = msg("router_rest", "user", "node/n1/6666:/target", "POST");
        assert_eq!(classify(&m), Delivery::NoAck);
        for source in ["taskmanager", "nodeupgradejobcontroller"] {
            let m = msg(source, "resource", "node/n1/default/pod/p", "upgrade");
            assert_eq!(classify(&m), Delivery::NoAck, "{source}");
        }
    }

    #[test]
    fn responses_with_ok_or_error_content_are_no_ack_other_responses_need_ack() {
        let ok = msg("devicecontroller", "twin", "twin", "response").with_content("OK");
        assert_eq!(classify(&ok), Delivery::NoAck);
        let status_error = msg(
            "edgecontroller",
            "resource",
            "node/n1/default/configmap/c",
            "response",
        )
        .with_content(json!({"ErrStatus": {"code": 404}}));
        assert_eq!(classify(&status_error), Delivery::NoAck);
        let plain_error = msg(
            "edgecontroller",
            "resource",
            "node/n1/default/secret/s",
            "response",
        )
        .with_content(json!({}));
        assert_eq!(classify(&plain_error), Delivery::NoAck);

        let object_response = msg(
            "edgecontroller",
            "resource",
            "node/n1/default/configmap/c",
            "response",
        )
        .with_content(object());
        assert_eq!(classify(&object_response), Delivery::Ack);
        // "OK" only counts on a response.
        let ok_update = msg(
            "devicecontroller",
            "resource",
            "node/n1/default/device/d",
            "update",
        )
        .with_content("OK");
        assert_eq!(classify(&ok_update), Delivery::Ack);
        // An object that merely has an ErrStatus field besides metadata is still an object.
        let not_error = msg(
            "edgecontroller",
            "resource",
            "node/n1/default/configmap/c",
            "response",
        )
        .with_content(json!({"ErrStatus": {}, "metadata": {}}));
        assert_eq!(classify(&not_error), Delivery::Ack);
    }

    #[test]
    fn edge_controller_resource_types() {
        let cases = [
            ("null/node/n1", "insert", Delivery::NoAck),
            ("null/node/n1", "response", Delivery::NoAck),
            ("null/node/n1", "delete", Delivery::NoAck),
            ("null/node/n1", "update", Delivery::Ack),
            ("kube-node-lease/lease/n1", "update", Delivery::NoAck),
            ("null/nodepatch/n1", "response", Delivery::NoAck),
            ("default/podpatch/p", "response", Delivery::NoAck),
            ("default/podstatus/p", "response", Delivery::NoAck),
            (
                "null/certificatesigningrequest/c",
                "response",
                Delivery::NoAck,
            ),
            ("default/pod/p", "response", Delivery::NoAck),
            ("default/pod/p", "insert", Delivery::Ack),
            ("default/pod/p", "update", Delivery::Ack),
            ("default/pod/p", "delete", Delivery::Ack),
            ("default/configmap/c", "update", Delivery::Ack),
            ("default/secret/s", "insert", Delivery::Ack),
        ];
        for (wire, op, want) in cases {
            for resource in [wire.to_owned(), format!("node/n1/{wire}")] {
                let m = msg("edgecontroller", "resource", &resource, op).with_content(object());
                assert_eq!(classify(&m), want, "{resource} {op}");
            }
        }
    }

    #[test]
    fn edge_controller_types_from_other_sources_need_ack() {
        // The type table only applies to edgecontroller; synccontroller re-sends pods and nodes
        // through the ACK queue.
        for (resource, op) in [("null/node/n1", "insert"), ("default/pod/p", "response")] {
            let m = msg("synccontroller", "resource", resource, op).with_content(object());
            assert_eq!(classify(&m), Delivery::Ack, "{resource} {op}");
        }
    }

    #[test]
    fn resource_type_reads_the_token_after_the_namespace_in_both_forms() {
        assert_eq!(resource_type_of("node/n1/default/pod/p"), "pod");
        assert_eq!(resource_type_of("default/pod/p"), "pod");
        assert_eq!(resource_type_of("null/node/n1"), "node");
        assert_eq!(resource_type_of("node/n1/membership"), "");
        assert_eq!(resource_type_of("membership"), "");
        assert_eq!(resource_type_of(""), "");
    }
}
