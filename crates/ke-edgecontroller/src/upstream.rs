//! Edge → cloud: what edges report and ask for, applied to the API server and answered in
//! upstream's formats (see golden frames 04–19):
//!
//! | resource / operation                 | API call                                   | reply |
//! |--------------------------------------|--------------------------------------------|-------|
//! | `null/node/<n>` insert               | create Node (edge label, `cloudcore` annotation) | `ObjectResp` |
//! | `null/node/<n>` query                | get Node                                   | the Node (TypeMeta set) + resourceversion |
//! | `null/node/<n>` update               | merge labels/annotations into the Node     | `"OK"` + resourceversion |
//! | `null/nodestatus/<n>` update         | replace Node status (`NodeStatusRequest`)  | `"OK"` |
//! | `null/nodepatch/<n>` patch           | strategic-merge patch of Node status       | `ObjectResp` + resourceversion |
//! | `<ns>/lease/<n>` insert/update/query | create / update / get Lease                | `ObjectResp` |
//! | `<ns>/podstatus/<p>` update          | replace pod status (`PodStatusRequest`)    | `"OK"` |
//! | `<ns>/podpatch/<p>` patch            | strategic-merge patch of pod status        | `ObjectResp` + resourceversion |
//! | `<ns>/pod/<p>` insert                | create (mirror) pod                        | `ObjectResp` + resourceversion |
//! | `<ns>/pod/<p>` delete                | delete pod with the edge's DeleteOptions   | `"OK"` |
//! | `<ns>/event/<e>` insert/update/patch | create / update / patch Event              | none |
//! | `<ns>/serviceaccounttoken/<sa>` query | create a TokenRequest                     | the TokenRequest |
//! | `<ns>/<type>/<n>` query              | get ConfigMap, Secret, PV, PVC, …          | the object (TypeMeta set) + resourceversion |
//!
//! Failed calls answer with the Go error as upstream marshals it (`{"ErrStatus": Status}`), in
//! `Err` of an `ObjectResp` or as the whole content. Where upstream sends nothing on failure
//! (node and pod status updates), so do we: the edge does not wait for those replies.
//!
//! A node may only touch its own Node and Lease and the pods bound to it, and may only read the
//! Secrets and ConfigMaps its pods reference: anything else is answered with 403 Forbidden
//! (upstream checks this only with its `requireAuthorization` feature gate).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{MESSAGE_SUCCESSFUL_CONTENT, operation, resource_type, source};
use ke_message::resource::{NodeResource, WireResource};
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::downstream::EDGE_ROLE_LABEL;
use ke_message::kinds::Kind;

use crate::kinds::KindApi as _;
use crate::locations::{Locations, Reference};
use crate::reply::{self, api_error, object_resp, response, status_error};

/// Annotation on a Node naming the cloudcore that holds its session (upstream's key).
pub const CLOUDCORE_ANNOTATION: &str = "cloudcore";

/// `metav1.DeleteOptions` as the edge's kubelet sends it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<u32>,
    preconditions: Option<DeletePreconditions>,
    propagation_policy: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletePreconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl DeleteOptions {
    fn into_params(self) -> DeleteParams {
        DeleteParams {
            grace_period_seconds: self.grace_period_seconds,
            preconditions: self.preconditions.map(|p| Preconditions {
                uid: p.uid,
                resource_version: p.resource_version,
            }),
            propagation_policy: match self.propagation_policy.as_deref() {
                Some("Orphan") => Some(PropagationPolicy::Orphan),
                Some("Foreground") => Some(PropagationPolicy::Foreground),
                Some("Background") => Some(PropagationPolicy::Background),
                _ => None,
            },
            ..Default::default()
        }
    }
}

/// Field manager of every write.
const MANAGER: &str = "cloudcore";

pub(crate) struct Upstream {
    client: Client,
    bus: Bus,
    locations: Arc<Locations>,
    cloudcore_id: String,
}

/// What goes back to the edge.
struct Reply {
    content: Value,
    /// Header `resourceversion` (upstream sets it on patch replies and query results).
    resource_version: Option<String>,
}

impl Reply {
    fn plain(content: Value) -> Option<Reply> {
        Some(Reply {
            content,
            resource_version: None,
        })
    }

    /// `ObjectResp` for the outcome of an API call on `name` of `kind`.
    fn object(
        result: Result<Value, kube::Error>,
        fallback: Value,
        name: &str,
        kind: Kind,
    ) -> Option<Reply> {
        Reply::plain(match result {
            Ok(object) => object_resp(object, None),
            Err(err) => object_resp(fallback, Some(api_error(&err, name, kind.plural))),
        })
    }

    fn with_version_of_object(mut self) -> Reply {
        let version = self
            .content
            .pointer("/Object/metadata/resourceVersion")
            .or_else(|| self.content.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.resource_version = version;
        self
    }
}

/// Informer objects and typed-client results carry no TypeMeta upstream; keep replies alike.
fn without_type_meta(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    object
}

fn to_json(object: DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

fn forbidden(node: &str, what: &str, name: &str, kind: &str) -> Value {
    status_error(
        403,
        "Forbidden",
        &format!("node {node:?} may not access {what} {name:?}"),
        name,
        kind,
    )
}

impl Upstream {
    pub(crate) fn new(
        client: Client,
        bus: Bus,
        locations: Arc<Locations>,
        cloudcore_id: String,
    ) -> Upstream {
        Upstream {
            client,
            bus,
            locations,
            cloudcore_id,
        }
    }

    pub(crate) async fn handle(&self, message: Message) {
        let op = message.router.operation.as_str();
        if op == operation::CONNECTED || op == operation::DISCONNECTED {
            if op == operation::CONNECTED
                && let Some(node) = message.router.resource.strip_prefix("node/")
            {
                self.annotate_session(node).await;
            }
            return;
        }
        if op == operation::RESPONSE || op == operation::KEEPALIVE {
            // An edge's answer to something it was sent without a waiter (e.g. the ACK of a
            // reply that went through the ACK queue); nothing to do.
            return;
        }
        let parsed = match NodeResource::parse(&message.router.resource) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::warn!(msg_id = %message.header.id, error = %err, "upstream message with a malformed resource");
                return;
            }
        };
        let node = parsed.node_id.as_str();
        let resource = &parsed.resource;
        let reply = self.dispatch(node, resource, &message).await;
        if let Some(reply) = reply {
            let mut out = response(&message, reply.content);
            if let Some(version) = reply.resource_version {
                out.header.resource_version = version;
            }
            if let Err(err) = self.bus.send(source::CLOUD_HUB, out).await {
                tracing::debug!(%node, error = %err, "reply not handed to cloudhub");
            }
        }
    }

    async fn dispatch(
        &self,
        node: &str,
        resource: &WireResource,
        message: &Message,
    ) -> Option<Reply> {
        let name = resource.name.as_deref().unwrap_or_default();
        let namespace = resource.namespace.as_deref();
        let op = message.router.operation.as_str();
        match (resource.resource_type.as_str(), op) {
            (resource_type::NODE, operation::INSERT) => {
                self.register_node(node, name, message).await
            }
            (resource_type::NODE, operation::QUERY | operation::GET) => {
                self.own_node(node, name)?;
                self.query(node, Kind::NODE, None, name).await
            }
            (resource_type::NODE, operation::UPDATE) => self.update_node(node, name, message).await,
            (resource_type::NODE_STATUS, operation::UPDATE) => {
                self.update_node_status(node, name, message).await
            }
            (resource_type::NODE_PATCH, operation::PATCH) => {
                self.patch_node(node, name, message).await
            }
            (resource_type::LEASE, operation::INSERT | operation::UPDATE) => {
                self.write_lease(node, namespace, name, op, message).await
            }
            (resource_type::LEASE, operation::QUERY | operation::GET) => {
                let lease = Kind::LEASE;
                if name != node {
                    return Reply::plain(object_resp(
                        Value::Null,
                        Some(forbidden(node, "lease", name, lease.plural)),
                    ));
                }
                let result = lease.api(&self.client, namespace).get(name).await;
                Reply::object(
                    result.map(to_json).map(without_type_meta),
                    Value::Null,
                    name,
                    lease,
                )
            }
            (resource_type::POD_STATUS, operation::UPDATE) => {
                self.update_pod_status(node, namespace, name, message).await
            }
            (resource_type::POD_PATCH, operation::PATCH) => {
                self.patch_pod(node, namespace, name, message).await
            }
            (resource_type::POD, operation::DELETE) => {
                self.delete_pod(node, namespace, name, message).await
            }
            (resource_type::POD, operation::INSERT) => {
                self.create_pod(node, namespace, name, message).await
            }
            (resource_type::SERVICE_ACCOUNT_TOKEN, operation::QUERY | operation::GET) => {
                self.service_account_token(node, namespace, name, message)
                    .await
            }
            (resource_type::EVENT, operation::INSERT | operation::UPDATE | operation::PATCH) => {
                self.write_event(name, op, message).await;
                None
            }
            (token, operation::QUERY | operation::GET)
                if let Some(kind) = Kind::by_token(token) =>
            {
                self.query(node, kind, namespace, name).await
            }
            (token, op) => {
                tracing::warn!(%node, token, op, "upstream message of a kind edgecontroller does not handle");
                Reply::plain(json!(format!(
                    "edgecontroller does not handle {op} of {token}"
                )))
                .filter(|_| op == operation::QUERY)
            }
        }
    }

    /// `Some(())` when `node` acts on its own Node; logs otherwise.
    fn own_node(&self, node: &str, name: &str) -> Option<()> {
        if node == name {
            Some(())
        } else {
            tracing::warn!(%node, target = name, "node tried to act on another Node; refused");
            None
        }
    }

    async fn register_node(&self, node: &str, name: &str, message: &Message) -> Option<Reply> {
        let nodes = Kind::NODE;
        let mut object = message.content.clone();
        if name != node {
            return Reply::plain(object_resp(
                object,
                Some(forbidden(node, "node", name, nodes.plural)),
            ));
        }
        // The edge label makes downstream treat the node as an edge node; upstream's createNode
        // adds it too.
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("name".into(), json!(name));
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.entry(EDGE_ROLE_LABEL).or_insert_with(|| json!(""));
            }
            if !self.cloudcore_id.is_empty() {
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                if let Some(annotations) = annotations.as_object_mut() {
                    annotations.insert(CLOUDCORE_ANNOTATION.into(), json!(self.cloudcore_id));
                }
            }
        }
        let result = match serde_json::from_value::<DynamicObject>(object.clone()) {
            Ok(mut dynamic) => {
                dynamic.types = None;
                nodes
                    .api(&self.client, None)
                    .create(&post_params(), &dynamic)
                    .await
                    .map(to_json)
                    .map(without_type_meta)
            }
            Err(err) => Err(kube::Error::SerdeError(err)),
        };
        if let Err(err) = &result {
            tracing::info!(%node, error = %err, "node registration failed");
        }
        Reply::object(result, object, name, nodes)
    }

    /// Upstream merges the labels and annotations the edge sends into the Node (never removes
    /// any) and answers `"OK"`; nothing on failure.
    async fn update_node(&self, node: &str, name: &str, message: &Message) -> Option<Reply> {
        self.own_node(node, name)?;
        let metadata = message.content.get("metadata");
        let pick = |field: &str| {
            metadata
                .and_then(|m| m.get(field))
                .cloned()
                .unwrap_or(json!({}))
        };
        let patch =
            json!({ "metadata": { "labels": pick("labels"), "annotations": pick("annotations") } });
        match Kind::NODE
            .api(&self.client, None)
            .patch(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => Some(Reply {
                content: json!(MESSAGE_SUCCESSFUL_CONTENT),
                resource_version: updated.metadata.resource_version,
            }),
            Err(err) => {
                tracing::warn!(%node, error = %err, "node update not applied");
                None
            }
        }
    }

    /// `NodeStatusRequest {UID, Status, ExtendResources}`: the status replaces the Node's.
    async fn update_node_status(&self, node: &str, name: &str, message: &Message) -> Option<Reply> {
        self.own_node(node, name)?;
        let status = message
            .content
            .get("Status")
            .cloned()
            .unwrap_or(Value::Null);
        let patch = json!({ "status": status });
        match Kind::NODE
            .api(&self.client, None)
            .patch_status(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => Some(Reply {
                content: json!(MESSAGE_SUCCESSFUL_CONTENT),
                resource_version: updated.metadata.resource_version,
            }),
            Err(err) => {
                tracing::warn!(%node, error = %err, "node status not applied");
                None
            }
        }
    }

    async fn patch_node(&self, node: &str, name: &str, message: &Message) -> Option<Reply> {
        let nodes = Kind::NODE;
        if name != node {
            return Reply::plain(object_resp(
                Value::Null,
                Some(forbidden(node, "node", name, nodes.plural)),
            ));
        }
        let result = match message.decode_content::<Value>() {
            Ok(patch) => nodes
                .api(&self.client, None)
                .patch_status(name, &patch_params(), &Patch::Strategic(&patch))
                .await
                .map(to_json)
                .map(without_type_meta),
            Err(err) => Err(kube::Error::SerdeError(serde_json::Error::io(
                std::io::Error::other(err.to_string()),
            ))),
        };
        Reply::object(result, Value::Null, name, nodes).map(Reply::with_version_of_object)
    }

    async fn write_lease(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        op: &str,
        message: &Message,
    ) -> Option<Reply> {
        let leases = Kind::LEASE;
        let object = message.content.clone();
        if name != node {
            return Reply::plain(object_resp(
                object,
                Some(forbidden(node, "lease", name, leases.plural)),
            ));
        }
        let api = leases.api(&self.client, namespace);
        let params = post_params();
        let result = match serde_json::from_value::<DynamicObject>(object.clone()) {
            Ok(mut lease) => {
                lease.types = None;
                if op == operation::INSERT {
                    api.create(&params, &lease).await
                } else {
                    api.replace(name, &params, &lease).await
                }
                .map(to_json)
                .map(without_type_meta)
            }
            Err(err) => Err(kube::Error::SerdeError(err)),
        };
        Reply::object(result, object, name, leases)
    }

    /// Whether `uid` names a pod bound to `node`: from the downstream cache, else from the API.
    async fn pod_on_node(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, kube::Error> {
        if let Some(uid) = uid
            && let Some(bound) = self.locations.node_of_pod(uid)
        {
            return Ok(bound == node);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace.unwrap_or("default"));
        let pod = pods.get(name).await?;
        Ok(pod.spec.and_then(|s| s.node_name).as_deref() == Some(node))
    }

    /// `PodStatusRequest {UID, Name, Status}` (upstream's deprecated path).
    async fn update_pod_status(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        message: &Message,
    ) -> Option<Reply> {
        let uid = message.content.get("UID").and_then(Value::as_str);
        let status = message
            .content
            .get("Status")
            .cloned()
            .unwrap_or(Value::Null);
        match self.pod_on_node(node, namespace, name, uid).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%node, pod = name, "status report for a pod not bound to the node; ignored");
                return Reply::plain(json!(MESSAGE_SUCCESSFUL_CONTENT));
            }
            Err(err) => {
                tracing::warn!(%node, pod = name, error = %err, "pod status not applied");
                return None;
            }
        }
        let mut patch = json!({ "status": status });
        if let Some(uid) = uid {
            patch["metadata"] = json!({ "uid": uid });
        }
        let pods = Kind::POD.api(&self.client, namespace);
        match pods
            .patch_status(name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Reply::plain(json!(MESSAGE_SUCCESSFUL_CONTENT)),
            Err(err) => {
                tracing::warn!(%node, pod = name, error = %err, "pod status not applied");
                None
            }
        }
    }

    async fn patch_pod(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        message: &Message,
    ) -> Option<Reply> {
        let pods = Kind::POD;
        let patch = match message.decode_content::<Value>() {
            Ok(patch) => patch,
            Err(err) => {
                let err = status_error(
                    400,
                    "BadRequest",
                    &format!("podpatch content: {err}"),
                    name,
                    pods.plural,
                );
                return Reply::plain(object_resp(Value::Null, Some(err)));
            }
        };
        let uid = patch.pointer("/metadata/uid").and_then(Value::as_str);
        match self.pod_on_node(node, namespace, name, uid).await {
            Ok(true) => {}
            Ok(false) => {
                return Reply::plain(object_resp(
                    Value::Null,
                    Some(forbidden(node, "pod", name, pods.plural)),
                ));
            }
            Err(err) => {
                return Reply::plain(object_resp(
                    Value::Null,
                    Some(api_error(&err, name, pods.plural)),
                ));
            }
        }
        let result = pods
            .api(&self.client, namespace)
            .patch_status(name, &patch_params(), &Patch::Strategic(&patch))
            .await
            .map(to_json)
            .map(without_type_meta);
        Reply::object(result, Value::Null, name, pods).map(Reply::with_version_of_object)
    }

    /// The edge finished terminating a pod that has a deletionTimestamp: remove it for good,
    /// with the edge's `DeleteOptions` (a bare string is the legacy form: the pod's uid).
    async fn delete_pod(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        message: &Message,
    ) -> Option<Reply> {
        let pods = Kind::POD;
        let params: DeleteParams = match &message.content {
            Value::String(uid) if !uid.starts_with('{') => DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            },
            _ => match message.decode_content::<DeleteOptions>() {
                Ok(options) => options.into_params(),
                Err(err) => {
                    let err = status_error(
                        400,
                        "BadRequest",
                        &format!("delete options: {err}"),
                        name,
                        pods.plural,
                    );
                    return Reply::plain(err);
                }
            },
        };
        let uid = params.preconditions.as_ref().and_then(|p| p.uid.clone());
        match self
            .pod_on_node(node, namespace, name, uid.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => return Reply::plain(forbidden(node, "pod", name, pods.plural)),
            Err(err) if reply::is_not_found(&err) => {
                return Reply::plain(json!(MESSAGE_SUCCESSFUL_CONTENT));
            }
            Err(err) => return Reply::plain(api_error(&err, name, pods.plural)),
        }
        match pods
            .api(&self.client, namespace)
            .delete(name, &params)
            .await
        {
            Ok(_) => Reply::plain(json!(MESSAGE_SUCCESSFUL_CONTENT)),
            // Gone already, or a newer pod of that name (uid precondition failed): done.
            Err(err)
                if reply::is_not_found(&err)
                    || matches!(&err, kube::Error::Api(s) if s.code == 409) =>
            {
                Reply::plain(json!(MESSAGE_SUCCESSFUL_CONTENT))
            }
            Err(err) => {
                tracing::warn!(%node, pod = name, error = %err, "pod not deleted");
                Reply::plain(api_error(&err, name, pods.plural))
            }
        }
    }

    /// A static pod's mirror pod, created by the edge's kubelet.
    async fn create_pod(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        message: &Message,
    ) -> Option<Reply> {
        let pods = Kind::POD;
        let object = message.content.clone();
        let bound = object.pointer("/spec/nodeName").and_then(Value::as_str);
        if bound != Some(node) {
            return Reply::plain(object_resp(
                object,
                Some(forbidden(node, "pod", name, pods.plural)),
            ));
        }
        let result = match serde_json::from_value::<DynamicObject>(object.clone()) {
            Ok(mut pod) => {
                pod.types = None;
                pods.api(&self.client, namespace)
                    .create(&post_params(), &pod)
                    .await
                    .map(to_json)
                    .map(without_type_meta)
            }
            Err(err) => Err(kube::Error::SerdeError(err)),
        };
        Reply::object(result, object, name, pods).map(Reply::with_version_of_object)
    }

    /// `authentication.k8s.io/v1` TokenRequest for a service account of a pod on the node.
    async fn service_account_token(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: &str,
        message: &Message,
    ) -> Option<Reply> {
        let request = match message.decode_content::<Value>() {
            Ok(request) => request,
            Err(err) => {
                return Reply::plain(status_error(
                    400,
                    "BadRequest",
                    &format!("token request: {err}"),
                    name,
                    "serviceaccounts",
                ));
            }
        };
        let pod_uid = request
            .pointer("/spec/boundObjectRef/uid")
            .and_then(Value::as_str);
        let pod_name = request
            .pointer("/spec/boundObjectRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.pod_on_node(node, namespace, pod_name, pod_uid).await {
            Ok(true) => {}
            Ok(false) => {
                return Reply::plain(forbidden(
                    node,
                    "serviceaccount token",
                    name,
                    "serviceaccounts",
                ));
            }
            Err(err) => return Reply::plain(api_error(&err, name, "serviceaccounts")),
        }
        let ns = namespace.unwrap_or("default");
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token");
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let http = match http::Request::post(path)
            .header("content-type", "application/json")
            .body(body)
        {
            Ok(http) => http,
            Err(err) => {
                return Reply::plain(status_error(
                    500,
                    "InternalError",
                    &err.to_string(),
                    name,
                    "serviceaccounts",
                ));
            }
        };
        match self.client.request::<Value>(http).await {
            Ok(mut token) => {
                token["apiVersion"] = json!("authentication.k8s.io/v1");
                token["kind"] = json!("TokenRequest");
                Reply::plain(token).map(Reply::with_version_of_object)
            }
            Err(err) => Reply::plain(api_error(&err, name, "serviceaccounts")),
        }
    }

    /// Events go to the namespace of the event object (as upstream), not of the resource.
    /// A patch carries `{"event": Event, "patchData": "<strategic merge patch>"}`.
    async fn write_event(&self, name: &str, op: &str, message: &Message) {
        let Ok(content) = message.decode_content::<Value>() else {
            tracing::debug!(event = name, "event content is not JSON; dropped");
            return;
        };
        let event = if op == operation::PATCH {
            content.get("event").cloned().unwrap_or(Value::Null)
        } else {
            content.clone()
        };
        let namespace = event
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let event_name = event
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_owned();
        let events = Kind::EVENT.api(&self.client, Some(&namespace));
        let result = match op {
            operation::PATCH => {
                let patch = content
                    .get("patchData")
                    .and_then(Value::as_str)
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .unwrap_or(json!({}));
                events
                    .patch(&event_name, &patch_params(), &Patch::Strategic(&patch))
                    .await
                    .map(|_| ())
            }
            _ => match serde_json::from_value::<DynamicObject>(event) {
                Ok(mut event) => {
                    event.types = None;
                    if op == operation::INSERT {
                        events.create(&post_params(), &event).await.map(|_| ())
                    } else {
                        events
                            .replace(&event_name, &post_params(), &event)
                            .await
                            .map(|_| ())
                    }
                }
                Err(err) => Err(kube::Error::SerdeError(err)),
            },
        };
        if let Err(err) = result {
            tracing::debug!(event = %event_name, error = %err, "event not recorded");
        }
    }

    /// A remote query: the object with TypeMeta and its resourceVersion in the header (an ACK
    /// message: the edge stores it), or upstream's NotFound error.
    async fn query(
        &self,
        node: &str,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Reply> {
        if matches!(kind.token, resource_type::SECRET | resource_type::CONFIGMAP) {
            let r = Reference {
                token: kind.token,
                namespace: namespace.unwrap_or_default().to_owned(),
                name: name.to_owned(),
            };
            if !self.locations.node_needs(node, &r) {
                tracing::warn!(%node, kind = kind.token, %name, "query for an object none of the node's pods references; refused");
                return Reply::plain(forbidden(node, kind.token, name, kind.token));
            }
        }
        match kind.api(&self.client, namespace).get(name).await {
            Ok(object) => {
                let mut object = to_json(object);
                if let Some(map) = object.as_object_mut() {
                    map.insert("apiVersion".into(), json!(kind.api_version()));
                    map.insert("kind".into(), json!(kind.kind));
                }
                Reply::plain(object).map(Reply::with_version_of_object)
            }
            Err(err) if reply::is_not_found(&err) => {
                Reply::plain(reply::not_found(kind.token, name))
            }
            Err(err) => Reply::plain(api_error(&err, name, kind.token)),
        }
    }

    /// Upstream writes the `cloudcore` annotation on the Node when its session connects, so
    /// several cloudcores can tell whose node is whose.
    async fn annotate_session(&self, node: &str) {
        if self.cloudcore_id.is_empty() {
            return;
        }
        let patch =
            json!({ "metadata": { "annotations": { CLOUDCORE_ANNOTATION: self.cloudcore_id } } });
        match Kind::NODE
            .api(&self.client, None)
            .patch(node, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Not registered yet: registration writes the annotation.
            Err(err) if reply::is_not_found(&err) => {}
            Err(err) => {
                tracing::warn!(%node, error = %err, "cannot annotate the node with its cloudcore")
            }
        }
    }
}
