//! Endpoints and EndpointSlices from Services: the pods a Service's selector picks, with their
//! IPs (ready ones as addresses, others as not-ready) and the Service's ports resolved against
//! the containers (`targetPort` by number or by port name). The edge's servicebus and any
//! kube-proxy-like consumer read these.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::common::{controller_ref, is_ready, selector_query};
use crate::{Error, RESYNC};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

struct Ctx {
    client: Client,
}

/// One Endpoints subset: the addresses that share a set of resolved ports.
#[derive(Default)]
struct Subset {
    ready: Vec<Value>,
    not_ready: Vec<Value>,
    ports: Vec<Value>,
}

pub async fn run(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    controller
        // A pod change matters to the Services of its namespace whose selector picks it.
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|s| s.namespace() == ns)
                .filter(|s| {
                    s.spec
                        .as_ref()
                        .and_then(|sp| sp.selector.as_ref())
                        .is_some_and(|sel| {
                            !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                        })
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The container port a Service port forwards to on `pod`.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = svc.spec.clone().unwrap_or_default();
    // Services without a selector have their Endpoints managed by someone else.
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let label_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        match_expressions: None,
    };
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector_query(Some(&label_selector))))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .is_some_and(|ip| !ip.is_empty())
                && !matches!(crate::common::phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let ports = spec.ports.clone().unwrap_or_default();

    // Endpoints: one subset per distinct port set, as the Endpoints controller groups them.
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    for p in &pods {
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|sp| {
                target_port(sp, p).map(|tp| {
                    let mut v = json!({"port": tp, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())});
                    if let Some(n) = &sp.name {
                        v["name"] = json!(n);
                    }
                    v
                })
            })
            .collect();
        let key = serde_json::to_string(&resolved).unwrap_or_default();
        let address = json!({
            "ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
            "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name_any(), "uid": p.uid()},
        });
        let entry = subsets.entry(key).or_insert_with(|| Subset {
            ports: resolved,
            ..Subset::default()
        });
        if is_ready(p) {
            entry.ready.push(address);
        } else {
            entry.not_ready.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|sub| {
            let mut s = json!({"ports": sub.ports});
            if !sub.ready.is_empty() {
                s["addresses"] = json!(sub.ready);
            }
            if !sub.not_ready.is_empty() {
                s["notReadyAddresses"] = json!(sub.not_ready);
            }
            s
        })
        .collect();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        // Owned by the Service so the garbage collector removes them together (kube's
        // controller deletes them itself; the result is the same).
        "metadata": {"name": name, "namespace": ns, "labels": svc.labels(), "ownerReferences": [controller_ref(svc.as_ref())]},
        "subsets": subsets,
    });
    upsert::<Endpoints>(client, &ns, &name, endpoints, |current| {
        current.get("subsets")
    })
    .await?;

    let slice_ports: Vec<Value> = ports
        .iter()
        .map(|sp| {
            // A named target port can differ per pod; the first pod's resolution stands for all.
            let port = pods.first().and_then(|p| target_port(sp, p)).or(match &sp.target_port {
                Some(IntOrString::Int(n)) => Some(*n),
                None => Some(sp.port),
                _ => None,
            });
            json!({"name": sp.name.clone().unwrap_or_default(), "port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})
        })
        .collect();
    let slice_endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            let ready = is_ready(p);
            json!({
                "addresses": [p.status.as_ref().and_then(|s| s.pod_ip.clone())],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name_any(), "uid": p.uid()},
            })
        })
        .collect();
    let slice_name = format!("{name}-slice");
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(svc.as_ref())]},
        "addressType": "IPv4",
        "endpoints": slice_endpoints,
        "ports": slice_ports,
    });
    upsert::<EndpointSlice>(client, &ns, &slice_name, slice, |current| {
        current.get("endpoints")
    })
    .await?;
    Ok(Action::requeue(RESYNC))
}

/// Creates `desired` or replaces the existing object when the part `compared` picks differs.
async fn upsert<K>(
    client: &Client,
    ns: &str,
    name: &str,
    desired: Value,
    compared: impl Fn(&Value) -> Option<&Value>,
) -> Result<(), Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        None => {
            let obj: K =
                serde_json::from_value(desired).map_err(|e| Error::Invalid(e.to_string()))?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(current) => {
            let current = serde_json::to_value(&current).unwrap_or_default();
            let empty = json!([]);
            if compared(&current).unwrap_or(&empty) == compared(&desired).unwrap_or(&empty) {
                return Ok(());
            }
            // A merge patch replaces lists whole, which is what a recomputed set of
            // endpoints is.
            let mut patch = desired;
            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                m.shift_remove("name");
                m.shift_remove("namespace");
            }
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
    }
}
