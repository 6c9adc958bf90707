//! Finding what a kubelet streaming request names — a pod's container or sandbox — in the
//! runtime, by the labels edged puts on them (kubelet's `io.kubernetes.*`).

use std::collections::HashMap;
use std::time::Duration;

use ke_cri::{CriClient, api};
use ke_stream::request::KubeletRequest;

const POD_UID: &str = "io.kubernetes.pod.uid";
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// kubelet's CRI request timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request cannot be served, worded for the user; `status` is the HTTP status kubelet
/// would answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 404,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            message: message.into(),
        }
    }

    pub fn runtime(err: impl std::fmt::Display) -> Refusal {
        Refusal {
            status: 500,
            message: format!("container runtime: {err}"),
        }
    }
}

pub(crate) async fn call<T>(
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Refusal> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Refusal::runtime(status.message())),
        Err(_) => Err(Refusal::runtime("no answer within 2 minutes")),
    }
}

fn pod_labels(request: &KubeletRequest) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (POD_NAMESPACE.to_owned(), request.namespace.clone()),
        (POD_NAME.to_owned(), request.pod.clone()),
    ]);
    if let Some(uid) = &request.uid {
        labels.insert(POD_UID.to_owned(), uid.clone());
    }
    labels
}

/// The request's container: the current one, or with `previous` the one before it in the same
/// pod (kubelet's `--previous`). The current one is the newest of the newest pod of that name.
pub async fn container(
    cri: &CriClient,
    request: &KubeletRequest,
    previous: bool,
) -> Result<api::Container, Refusal> {
    let mut labels = pod_labels(request);
    labels.insert(CONTAINER_NAME.to_owned(), request.container.clone());
    let mut found = call(cri.runtime().list_containers(api::ListContainersRequest {
        filter: Some(api::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        }),
    }))
    .await?
    .containers;
    found.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let mut found = found.into_iter();
    let pod = format!("{}/{}", request.namespace, request.pod);
    let current = found.next().ok_or_else(|| {
        Refusal::not_found(format!(
            "container \"{}\" in pod \"{pod}\" is not available on this node",
            request.container
        ))
    })?;
    if !previous {
        return Ok(current);
    }
    let uid = current.labels.get(POD_UID).cloned();
    found
        .find(|c| c.labels.get(POD_UID) == uid.as_ref())
        .ok_or_else(|| {
            Refusal::bad_request(format!(
                "previous terminated container \"{}\" in pod \"{pod}\" not found",
                request.container
            ))
        })
}

/// The running container an exec or attach goes to.
pub async fn running_container(
    cri: &CriClient,
    request: &KubeletRequest,
) -> Result<api::Container, Refusal> {
    let current = container(cri, request, false).await?;
    if current.state != api::ContainerState::ContainerRunning as i32 {
        return Err(Refusal::bad_request(format!(
            "container \"{}\" in pod \"{}/{}\" is not running",
            request.container, request.namespace, request.pod
        )));
    }
    Ok(current)
}

/// The ready sandbox of the request's pod (port-forward).
pub async fn ready_sandbox(
    cri: &CriClient,
    request: &KubeletRequest,
) -> Result<api::PodSandbox, Refusal> {
    let mut found = call(cri.runtime().list_pod_sandbox(api::ListPodSandboxRequest {
        filter: Some(api::PodSandboxFilter {
            label_selector: pod_labels(request),
            state: Some(api::PodSandboxStateValue {
                state: api::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }),
    }))
    .await?
    .items;
    found.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    found.into_iter().next().ok_or_else(|| {
        Refusal::not_found(format!(
            "pod \"{}/{}\" has no running sandbox on this node",
            request.namespace, request.pod
        ))
    })
}

/// Whether the container is still running (a followed log ends when it is not).
pub async fn is_running(cri: &CriClient, id: &str) -> bool {
    status(cri, id)
        .await
        .is_ok_and(|s| s.state == api::ContainerState::ContainerRunning as i32)
}

pub async fn status(cri: &CriClient, id: &str) -> Result<api::ContainerStatus, Refusal> {
    call(cri.runtime().container_status(api::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    }))
    .await?
    .status
    .ok_or_else(|| Refusal::runtime(format!("no status for container {id}")))
}
