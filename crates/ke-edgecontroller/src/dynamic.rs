//! DynamicController (upstream module `dynamiccontroller`), the write half: an edge's metaserver
//! sends an [`Application`] (create, update, patch, delete…) and gets it back Approved with the
//! API server's answer, or Rejected with its error.
//!
//! Unlike upstream (which executes whatever a node asks unless RBAC is switched on), a node may
//! only write what is its own: its Node and Lease, pods bound to it, and events. Reads are not
//! served here: the metaserver answers them from the node's cache, and reading through the cloud
//! would let a node see Secrets its pods do not use.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use ke_bus::{Bus, Module, ModuleContext, RestartPolicy};
use ke_message::Message;
use ke_message::application::{APPLICATION_RESOURCE, Application, IGNORE, PatchInfo, status, verb};
use ke_message::constants::{group, operation};
use ke_message::kinds::{KeyParts, Kind, parse_metaserver_key};
use ke_message::resource::node_id_of;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::kinds::KindApi as _;
use crate::reply::status_error;

pub const DYNAMIC_MODULE_NAME: &str = "dynamiccontroller";
pub const DYNAMIC_GROUP_NAME: &str = "dynamiccontroller";

/// Applications processed at once.
const WORKERS: usize = 16;

pub struct DynamicController {
    client: kube::Client,
}

impl DynamicController {
    pub fn new(client: kube::Client) -> DynamicController {
        DynamicController { client }
    }
}

impl Module for DynamicController {
    fn name(&self) -> &str {
        DYNAMIC_MODULE_NAME
    }

    fn group(&self) -> &str {
        DYNAMIC_GROUP_NAME
    }

    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::on_failure()
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let workers = Arc::new(Semaphore::new(WORKERS));
            while let Some(message) = ctx.recv().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else {
                    break;
                };
                let (client, bus) = (self.client.clone(), ctx.bus().clone());
                tokio::spawn(async move {
                    answer(&client, &bus, message).await;
                    drop(permit);
                });
            }
            Ok(())
        })
    }
}

/// Why an application is rejected: an API-style error (`{"ErrStatus": …}`).
type Rejection = Value;

async fn answer(client: &kube::Client, bus: &Bus, request: Message) {
    // cloudhub prefixes the edge's resource (`null`) with `node/<id>/`.
    let Some(node) = node_id_of(&request.router.resource).map(str::to_owned) else {
        tracing::debug!(resource = %request.router.resource, "application without a node; dropped");
        return;
    };
    let mut app = match request.decode_content::<Application>() {
        Ok(app) => app,
        Err(err) => {
            tracing::info!(%node, error = %err, "unreadable application; dropped");
            return;
        }
    };
    app.node_name = node.clone();
    match process(client, &node, &app).await {
        Ok(body) => {
            app.status = status::APPROVED.to_owned();
            app.resp_body = body;
        }
        Err(rejection) => {
            tracing::info!(%node, key = %app.key, verb = %app.verb, "application rejected");
            app.status = status::REJECTED.to_owned();
            app.error = rejection;
        }
    }
    let resource = format!("node/{node}/{IGNORE}/{APPLICATION_RESOURCE}/{IGNORE}");
    let response = Message::new()
        .with_parent_id(request.header.id.clone())
        .with_route(
            DYNAMIC_MODULE_NAME,
            group::RESOURCE,
            resource,
            operation::APPLICATION_RESPONSE,
        )
        .with_serialized_content(&app);
    match response {
        Ok(response) => {
            if let Err(err) = bus
                .send(ke_message::constants::source::CLOUD_HUB, response)
                .await
            {
                tracing::debug!(error = %err, "application response not sent");
            }
        }
        Err(err) => tracing::warn!(error = %err, "application response not encodable"),
    }
}

/// Executes an application; the API server's answer as JSON bytes.
async fn process(
    client: &kube::Client,
    node: &str,
    app: &Application,
) -> Result<Vec<u8>, Rejection> {
    let Some(KeyParts {
        kind,
        namespace,
        name,
    }) = parse_metaserver_key(&app.key)
    else {
        return Err(status_error(
            404,
            "NotFound",
            &format!("no resource for key {:?}", app.key),
            "",
            "",
        ));
    };
    let api = kind.api(client, namespace.as_deref());
    let name = name.unwrap_or_default();
    let subresource = app.subresource.as_str();
    let body = || -> Result<DynamicObject, Rejection> {
        serde_json::from_slice(&app.req_body)
            .map_err(|e| bad_request(&format!("request body: {e}")))
    };
    let options = || -> Value { serde_json::from_slice(&app.option).unwrap_or(Value::Null) };
    let post = || PostParams {
        dry_run: options()["dryRun"].is_array(),
        field_manager: options()["fieldManager"].as_str().map(str::to_owned),
    };
    let api_error = |err: kube::Error| crate::reply::api_error(&err, &name, kind.plural);
    let result = match app.verb.as_str() {
        verb::CREATE => {
            let object = body()?;
            authorize(
                client,
                node,
                kind,
                namespace.as_deref(),
                object_name(&object),
                Some(&object),
            )
            .await?;
            api.create(&post(), &object).await.map_err(api_error)?
        }
        verb::UPDATE | verb::UPDATE_STATUS => {
            let object = body()?;
            authorize(
                client,
                node,
                kind,
                namespace.as_deref(),
                &name,
                Some(&object),
            )
            .await?;
            if app.verb == verb::UPDATE_STATUS || subresource == "status" {
                let bytes = serde_json::to_vec(&object).unwrap_or_default();
                api.replace_status(&name, &post(), bytes)
                    .await
                    .map_err(api_error)?
            } else {
                api.replace(&name, &post(), &object)
                    .await
                    .map_err(api_error)?
            }
        }
        verb::PATCH => {
            let info: PatchInfo = serde_json::from_slice(&app.option)
                .map_err(|e| bad_request(&format!("patch options: {e}")))?;
            authorize(client, node, kind, namespace.as_deref(), &info.name, None).await?;
            let data: Value = serde_json::from_slice(&info.data)
                .map_err(|e| bad_request(&format!("patch data: {e}")))?;
            let mut params = PatchParams {
                field_manager: info.options["fieldManager"].as_str().map(str::to_owned),
                force: info.options["force"].as_bool().unwrap_or(false),
                ..Default::default()
            };
            let patch = match info.patch_type.as_str() {
                "application/merge-patch+json" => Patch::Merge(data),
                "application/strategic-merge-patch+json" => Patch::Strategic(data),
                "application/apply-patch+yaml" => {
                    params.field_manager.get_or_insert_with(|| node.to_owned());
                    Patch::Apply(data)
                }
                other => {
                    return Err(status_error(
                        415,
                        "UnsupportedMediaType",
                        &format!("patch type {other:?} is not supported through the edge"),
                        &info.name,
                        kind.plural,
                    ));
                }
            };
            let status_patch = info
                .subresources
                .as_deref()
                .is_some_and(|s| s.iter().any(|s| s == "status"));
            if status_patch {
                api.patch_status(&info.name, &params, &patch).await
            } else {
                api.patch(&info.name, &params, &patch).await
            }
            .map_err(api_error)?
        }
        verb::DELETE => {
            authorize(client, node, kind, namespace.as_deref(), &name, None).await?;
            let options = options();
            let params = DeleteParams {
                grace_period_seconds: options["gracePeriodSeconds"].as_u64().map(|s| s as u32),
                ..Default::default()
            };
            return Ok(match api.delete(&name, &params).await.map_err(api_error)? {
                // Still terminating (graceful deletion): the object as it is now.
                either::Either::Left(object) => typed(&object, kind),
                either::Either::Right(gone) => {
                    let mut status = serde_json::to_value(&gone).unwrap_or(Value::Null);
                    status["kind"] = Value::from("Status");
                    status["apiVersion"] = Value::from("v1");
                    serde_json::to_vec(&status).unwrap_or_default()
                }
            });
        }
        verb::GET | verb::LIST | verb::WATCH => {
            return Err(status_error(
                405,
                "MethodNotAllowed",
                "reads are served by the edge's metaserver from the node's cache",
                &name,
                kind.plural,
            ));
        }
        other => return Err(bad_request(&format!("unknown verb {other:?}"))),
    };
    Ok(typed(&result, kind))
}

/// The API server's answer as the edge's client expects it: with `apiVersion` and `kind`
/// (kube-rs leaves them out of dynamic objects it decoded).
fn typed(object: &DynamicObject, kind: Kind) -> Vec<u8> {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    value["apiVersion"] = Value::from(kind.api_version());
    value["kind"] = Value::from(kind.kind);
    serde_json::to_vec(&value).unwrap_or_default()
}

fn object_name(object: &DynamicObject) -> &str {
    object.metadata.name.as_deref().unwrap_or_default()
}

fn bad_request(message: &str) -> Rejection {
    status_error(400, "BadRequest", message, "", "")
}

/// Only what is the node's own: its Node and Lease, pods bound to it, and events.
async fn authorize(
    client: &kube::Client,
    node: &str,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    object: Option<&DynamicObject>,
) -> Result<(), Rejection> {
    let allowed = match kind {
        Kind::NODE => name == node,
        Kind::LEASE => name == node && namespace == Some("kube-node-lease"),
        Kind::EVENT => true,
        Kind::POD => match object.and_then(|o| o.data["spec"]["nodeName"].as_str()) {
            // A created or replaced pod must name this node, and so must the stored one.
            Some(bound) if bound != node => false,
            _ => {
                let pods: Api<Pod> =
                    Api::namespaced(client.clone(), namespace.unwrap_or("default"));
                match pods.get_opt(name).await {
                    Ok(Some(pod)) => pod.spec.and_then(|s| s.node_name).as_deref() == Some(node),
                    // Creating a mirror pod for this node.
                    Ok(None) => object.is_some(),
                    Err(err) => return Err(crate::reply::api_error(&err, name, kind.plural)),
                }
            }
        },
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(status_error(
            403,
            "Forbidden",
            &format!("node {node:?} may not write {} {name:?}", kind.plural),
            name,
            kind.plural,
        ))
    }
}
