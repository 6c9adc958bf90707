//! A pod's sandbox and containers in the container runtime, through CRI, labelled as kubelet
//! labels them (`io.kubernetes.pod.uid`…) so that what runs can be found again after a restart.

use std::collections::HashMap;

use ke_cri::{CriClient, CriError, api, image_spec};

use crate::model::{Container, Pod};
use crate::{resources, security};

pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// What runs for one pod.
#[derive(Debug, Default, Clone)]
pub struct Running {
    pub sandbox: Option<api::PodSandbox>,
    /// The newest container per container name.
    pub containers: HashMap<String, api::Container>,
    /// The one before it (its exit is the container's `lastState`).
    pub previous: HashMap<String, api::Container>,
    /// Older containers, kept by nobody.
    pub garbage: Vec<String>,
}

/// Why a container was not started, as kubelet names it in the container's waiting state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `ErrImageNeverPull`, `ErrImagePull`.
    #[error("{message}")]
    Image {
        reason: &'static str,
        message: String,
    },
    /// `CreateContainerConfigError`: the pod asks for something that cannot be given yet.
    #[error("{0}")]
    Config(String),
    /// Not an error yet: the image is being pulled (`ContainerCreating`).
    #[error("{0}")]
    Pulling(String),
    /// `CreateContainerError` / `RunContainerError`.
    #[error("{error}")]
    Runtime {
        reason: &'static str,
        error: CriError,
    },
}

impl StartError {
    pub fn reason(&self) -> &'static str {
        match self {
            StartError::Image { reason, .. } | StartError::Runtime { reason, .. } => reason,
            StartError::Config(_) => "CreateContainerConfigError",
            StartError::Pulling(_) => "ContainerCreating",
        }
    }
}

/// What a container is started with besides its spec.
pub struct Start<'a> {
    pub sandbox_id: &'a str,
    pub sandbox_attempt: u32,
    /// `command` and `args` with `$(VAR)` expanded.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<api::Mount>,
    pub attempt: u32,
}

/// What the node status says about the runtime (kubelet reports at most 50 images).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeInfo {
    /// `containerd://1.7.24`.
    pub version: String,
    /// `{names, sizeBytes}`, largest first.
    pub images: Vec<serde_json::Value>,
}

const MAX_REPORTED_IMAGES: usize = 50;
/// kubelet's `runtimeRequestTimeout` default. Image pulls are not bound by it (a large image
/// over a slow link takes what it takes).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Clone)]
pub struct Runtime {
    cri: CriClient,
    logs_dir: String,
}

impl Runtime {
    pub fn new(cri: CriClient, logs_dir: String) -> Runtime {
        Runtime { cri, logs_dir }
    }

    /// One CRI call, answered within kubelet's `runtimeRequestTimeout`: a hung runtime must
    /// not hang edged.
    async fn call<T>(
        &self,
        name: &'static str,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.cri.call_error(name, status)),
            Err(_) => Err(self.cri.call_error(
                name,
                tonic::Status::deadline_exceeded(format!("no answer within {REQUEST_TIMEOUT:?}")),
            )),
        }
    }

    pub async fn info(&self) -> Result<RuntimeInfo, CriError> {
        let version = self.cri.version().await?;
        let mut images = self
            .call(
                "ListImages",
                self.cri
                    .image()
                    .list_images(api::ListImagesRequest { filter: None }),
            )
            .await?
            .images;
        images.sort_by_key(|i| std::cmp::Reverse(i.size));
        let images = images
            .into_iter()
            .take(MAX_REPORTED_IMAGES)
            .map(|i| {
                let names: Vec<String> = i.repo_digests.into_iter().chain(i.repo_tags).collect();
                serde_json::json!({"names": names, "sizeBytes": i.size})
            })
            .collect();
        Ok(RuntimeInfo {
            version: format!("{}://{}", version.runtime_name, version.runtime_version),
            images,
        })
    }

    /// Everything that runs, by pod UID: sandboxes (ready ones preferred) and their containers.
    pub async fn running(&self) -> Result<HashMap<String, Running>, CriError> {
        let sandboxes = self
            .call(
                "ListPodSandbox",
                self.cri
                    .runtime()
                    .list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
            )
            .await?
            .items;
        let containers = self
            .call(
                "ListContainers",
                self.cri
                    .runtime()
                    .list_containers(api::ListContainersRequest { filter: None }),
            )
            .await?
            .containers;
        let mut pods: HashMap<String, Running> = HashMap::new();
        for sandbox in sandboxes {
            let Some(uid) = sandbox.labels.get(POD_UID).cloned() else {
                continue;
            };
            let entry = pods.entry(uid).or_default();
            let ready = sandbox.state == api::PodSandboxState::SandboxReady as i32;
            let keep_old = entry.sandbox.as_ref().is_some_and(|old| {
                old.state == api::PodSandboxState::SandboxReady as i32 && !ready
            });
            if !keep_old {
                entry.sandbox = Some(sandbox);
            }
        }
        let attempt = |c: &api::Container| c.metadata.as_ref().map_or(0, |m| m.attempt);
        let mut by_name: HashMap<(String, String), Vec<api::Container>> = HashMap::new();
        for container in containers {
            let Some(uid) = container.labels.get(POD_UID).cloned() else {
                continue;
            };
            let sandbox = pods.get(&uid).and_then(|p| p.sandbox.as_ref());
            if sandbox.is_none_or(|s| s.id != container.pod_sandbox_id) {
                // A container of an old sandbox: it goes with that sandbox.
                continue;
            }
            let name = container
                .labels
                .get(CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            by_name.entry((uid, name)).or_default().push(container);
        }
        for ((uid, name), mut all) in by_name {
            all.sort_by_key(|c| std::cmp::Reverse(attempt(c)));
            let pod = pods.entry(uid).or_default();
            let mut all = all.into_iter();
            if let Some(newest) = all.next() {
                pod.containers.insert(name.clone(), newest);
            }
            if let Some(previous) = all.next() {
                pod.previous.insert(name, previous);
            }
            pod.garbage.extend(all.map(|c| c.id));
        }
        Ok(pods)
    }

    fn log_directory(&self, pod: &Pod) -> String {
        let meta = &pod.metadata;
        format!(
            "{}/{}_{}_{}",
            self.logs_dir,
            pod.namespace(),
            meta.name,
            meta.uid
        )
    }

    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> api::PodSandboxConfig {
        let meta = &pod.metadata;
        let host_network = pod.spec.host_network;
        let hostname = if host_network {
            // runc cannot set a hostname in the node's UTS namespace; kubelet leaves it empty.
            String::new()
        } else if pod.spec.hostname.is_empty() {
            meta.name.clone()
        } else {
            pod.spec.hostname.clone()
        };
        let port_mappings = pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter(|p| p.host_port > 0)
            .map(|p| api::PortMapping {
                protocol: match p.protocol.as_str() {
                    "UDP" => api::Protocol::Udp,
                    "SCTP" => api::Protocol::Sctp,
                    _ => api::Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect();
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                namespace: pod.namespace().to_owned(),
                attempt,
            }),
            hostname,
            log_directory: self.log_directory(pod),
            port_mappings,
            labels: HashMap::from([
                (POD_UID.to_owned(), meta.uid.clone()),
                (POD_NAME.to_owned(), meta.name.clone()),
                (POD_NAMESPACE.to_owned(), pod.namespace().to_owned()),
            ]),
            linux: Some(api::LinuxPodSandboxConfig {
                security_context: Some(security::sandbox(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts a sandbox for `pod`; returns its id.
    pub async fn run_sandbox(&self, pod: &Pod, attempt: u32) -> Result<String, CriError> {
        let config = self.sandbox_config(pod, attempt);
        std::fs::create_dir_all(&config.log_directory).ok();
        Ok(self
            .call(
                "RunPodSandbox",
                self.cri
                    .runtime()
                    .run_pod_sandbox(api::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    }),
            )
            .await?
            .pod_sandbox_id)
    }

    /// The image `container` can start from without a pull (its pull policy allows the one
    /// present; `Always` accepts one only right after its pull), or `None` if it needs one.
    pub async fn usable_image(
        &self,
        container: &Container,
        just_pulled: bool,
    ) -> Result<Option<api::Image>, StartError> {
        let image = &container.image;
        let policy = container
            .image_pull_policy
            .as_deref()
            .unwrap_or("IfNotPresent");
        if policy == "Always" && !just_pulled {
            return Ok(None);
        }
        let present = self
            .cri
            .image_status(image)
            .await
            .map_err(|error| StartError::Runtime {
                reason: "ErrImagePull",
                error,
            })?;
        match present {
            None if policy == "Never" => Err(StartError::Image {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image {image:?} is not present with pull policy of Never"
                ),
            }),
            present => Ok(present),
        }
    }

    /// Pulls `image`; no deadline, a large image over a slow link takes what it takes.
    pub async fn pull(&self, image: &str) -> Result<(), String> {
        self.cri
            .image()
            .pull_image(api::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("failed to pull image {image:?}: {}", s.message()))
    }

    /// Creates and starts `container` of `pod`.
    pub async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        image: &api::Image,
        start: Start<'_>,
    ) -> Result<String, StartError> {
        // kubelet: an image that names no user runs as root.
        let image_user = match (&image.uid, image.username.as_str()) {
            (Some(uid), _) => (Some(uid.value), ""),
            (None, "") => (Some(0), ""),
            (None, name) => (None, name),
        };
        let security =
            security::container(pod, container, image_user).map_err(StartError::Config)?;
        let name = &container.name;
        let attempt = start.attempt;
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.clone(),
                attempt,
            }),
            image: Some(image_spec(&container.image)),
            command: start.command,
            args: start.args,
            working_dir: container.working_dir.clone(),
            envs: start
                .env
                .into_iter()
                .map(|(key, value)| api::KeyValue { key, value })
                .collect(),
            mounts: start.mounts,
            labels: HashMap::from([
                (POD_UID.to_owned(), pod.uid().to_owned()),
                (POD_NAME.to_owned(), pod.metadata.name.clone()),
                (POD_NAMESPACE.to_owned(), pod.namespace().to_owned()),
                (CONTAINER_NAME.to_owned(), name.clone()),
            ]),
            log_path: format!("{name}/{attempt}.log"),
            stdin: container.stdin,
            stdin_once: container.stdin_once,
            tty: container.tty,
            linux: Some(api::LinuxContainerConfig {
                resources: Some(resources::linux_resources(container)),
                security_context: Some(security),
            }),
            ..Default::default()
        };
        let sandbox_config = self.sandbox_config(pod, start.sandbox_attempt);
        std::fs::create_dir_all(format!("{}/{name}", sandbox_config.log_directory)).ok();
        let create = api::CreateContainerRequest {
            pod_sandbox_id: start.sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let id = self
            .call(
                "CreateContainer",
                self.cri.runtime().create_container(create),
            )
            .await
            .map_err(|error| StartError::Runtime {
                reason: "CreateContainerError",
                error,
            })?
            .container_id;
        let start = api::StartContainerRequest {
            container_id: id.clone(),
        };
        self.call("StartContainer", self.cri.runtime().start_container(start))
            .await
            .map_err(|error| StartError::Runtime {
                reason: "RunContainerError",
                error,
            })?;
        Ok(id)
    }

    pub async fn container_status(
        &self,
        id: &str,
    ) -> Result<Option<api::ContainerStatus>, CriError> {
        Ok(self
            .call(
                "ContainerStatus",
                self.cri
                    .runtime()
                    .container_status(api::ContainerStatusRequest {
                        container_id: id.to_owned(),
                        verbose: false,
                    }),
            )
            .await?
            .status)
    }

    pub async fn sandbox_ip(&self, id: &str) -> Result<String, CriError> {
        Ok(self
            .call(
                "PodSandboxStatus",
                self.cri
                    .runtime()
                    .pod_sandbox_status(api::PodSandboxStatusRequest {
                        pod_sandbox_id: id.to_owned(),
                        verbose: false,
                    }),
            )
            .await?
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    /// Runs `cmd` in container `id`; its exit code.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<i32, CriError> {
        Ok(self
            .call(
                "ExecSync",
                self.cri.runtime().exec_sync(api::ExecSyncRequest {
                    container_id: id.to_owned(),
                    cmd,
                    timeout: timeout_seconds,
                }),
            )
            .await?
            .exit_code)
    }

    /// Makes the runtime write `id`'s log to a new file (after the old one was renamed).
    pub async fn reopen_log(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "ReopenContainerLog",
            self.cri
                .runtime()
                .reopen_container_log(api::ReopenContainerLogRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await?;
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, grace_seconds: i64) -> Result<(), CriError> {
        self.call(
            "StopContainer",
            self.cri
                .runtime()
                .stop_container(api::StopContainerRequest {
                    container_id: id.to_owned(),
                    timeout: grace_seconds,
                }),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "RemoveContainer",
            self.cri
                .runtime()
                .remove_container(api::RemoveContainerRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await?;
        Ok(())
    }

    /// Stops every container of `running` at once (each gets `grace_seconds`), then removes
    /// the sandbox with them.
    pub async fn kill(&self, running: &Running, grace_seconds: i64) -> Result<(), CriError> {
        let stops = running
            .containers
            .values()
            .map(|c| self.stop_container(&c.id, grace_seconds));
        for stopped in futures_util::future::join_all(stops).await {
            stopped?;
        }
        if let Some(sandbox) = &running.sandbox {
            let stop = api::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            };
            self.call("StopPodSandbox", self.cri.runtime().stop_pod_sandbox(stop))
                .await?;
            let remove = api::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            };
            self.call(
                "RemovePodSandbox",
                self.cri.runtime().remove_pod_sandbox(remove),
            )
            .await?;
        }
        Ok(())
    }
}
