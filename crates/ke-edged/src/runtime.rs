//! A pod's sandbox and containers in the container runtime, through CRI, labelled as kubelet
//! labels them (`io.kubernetes.pod.uid`…) so that what runs can be found again after a restart.

use std::collections::HashMap;

use ke_cri::{CriClient, CriError, api, image_spec};
use serde_json::Value;

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
}

pub struct Runtime {
    cri: CriClient,
    logs_dir: String,
}

impl Runtime {
    pub fn new(cri: CriClient, logs_dir: String) -> Runtime {
        Runtime { cri, logs_dir }
    }

    /// Everything that runs, by pod UID: sandboxes (ready ones preferred) and their containers.
    pub async fn running(&self) -> Result<HashMap<String, Running>, CriError> {
        let sandboxes = self
            .cri
            .runtime()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| self.cri.call_error("ListPodSandbox", s))?
            .into_inner()
            .items;
        let containers = self
            .cri
            .runtime()
            .list_containers(api::ListContainersRequest { filter: None })
            .await
            .map_err(|s| self.cri.call_error("ListContainers", s))?
            .into_inner()
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
        for container in containers {
            let Some(uid) = container.labels.get(POD_UID).cloned() else {
                continue;
            };
            let Some(pod) = pods.get_mut(&uid) else {
                continue;
            };
            if pod
                .sandbox
                .as_ref()
                .is_none_or(|s| s.id != container.pod_sandbox_id)
            {
                continue;
            }
            let name = container
                .labels
                .get(CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let attempt = |c: &api::Container| c.metadata.as_ref().map_or(0, |m| m.attempt);
            let newer = pod
                .containers
                .get(&name)
                .is_none_or(|old| attempt(old) <= attempt(&container));
            if newer {
                pod.containers.insert(name, container);
            }
        }
        Ok(pods)
    }

    fn sandbox_config(&self, pod: &Value, attempt: u32) -> api::PodSandboxConfig {
        let meta = &pod["metadata"];
        let (name, namespace, uid) = (
            meta["name"].as_str().unwrap_or_default(),
            meta["namespace"].as_str().unwrap_or("default"),
            meta["uid"].as_str().unwrap_or_default(),
        );
        let host_network = pod["spec"]["hostNetwork"].as_bool().unwrap_or(false);
        let network = if host_network {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        };
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt,
            }),
            // runc cannot set a hostname in the node's UTS namespace; kubelet leaves it empty.
            hostname: if host_network {
                String::new()
            } else {
                name.to_owned()
            },
            log_directory: format!("{}/{namespace}_{name}_{uid}", self.logs_dir),
            labels: HashMap::from([
                (POD_UID.to_owned(), uid.to_owned()),
                (POD_NAME.to_owned(), name.to_owned()),
                (POD_NAMESPACE.to_owned(), namespace.to_owned()),
            ]),
            linux: Some(api::LinuxPodSandboxConfig {
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: network as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts a sandbox for `pod`; returns its id.
    pub async fn run_sandbox(&self, pod: &Value, attempt: u32) -> Result<String, CriError> {
        let config = self.sandbox_config(pod, attempt);
        std::fs::create_dir_all(&config.log_directory).ok();
        Ok(self
            .cri
            .runtime()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| self.cri.call_error("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Creates and starts container `spec` of `pod` in `sandbox_id`.
    pub async fn start_container(
        &self,
        pod: &Value,
        sandbox_id: &str,
        sandbox_attempt: u32,
        spec: &Value,
        env: Vec<(String, String)>,
        attempt: u32,
    ) -> Result<String, CriError> {
        let name = spec["name"].as_str().unwrap_or_default();
        let image = spec["image"].as_str().unwrap_or_default();
        if !self.cri.image_present(image).await? {
            self.cri
                .image()
                .pull_image(api::PullImageRequest {
                    image: Some(image_spec(image)),
                    auth: None,
                    sandbox_config: None,
                })
                .await
                .map_err(|s| self.cri.call_error("PullImage", s))?;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let envs = env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.to_owned(),
                attempt,
            }),
            image: Some(image_spec(image)),
            command: strings(&spec["command"]),
            args: strings(&spec["args"]),
            working_dir: spec["workingDir"].as_str().unwrap_or_default().to_owned(),
            envs,
            labels: HashMap::from([
                (POD_UID.to_owned(), uid.to_owned()),
                (CONTAINER_NAME.to_owned(), name.to_owned()),
            ]),
            log_path: format!("{name}/{attempt}.log"),
            linux: Some(api::LinuxContainerConfig::default()),
            ..Default::default()
        };
        std::fs::create_dir_all(format!(
            "{}/{name}",
            self.sandbox_config(pod, sandbox_attempt).log_directory
        ))
        .ok();
        let mut runtime = self.cri.runtime();
        let id = runtime
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(self.sandbox_config(pod, sandbox_attempt)),
            })
            .await
            .map_err(|s| self.cri.call_error("CreateContainer", s))?
            .into_inner()
            .container_id;
        runtime
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|s| self.cri.call_error("StartContainer", s))?;
        Ok(id)
    }

    pub async fn container_status(
        &self,
        id: &str,
    ) -> Result<Option<api::ContainerStatus>, CriError> {
        Ok(self
            .cri
            .runtime()
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|s| self.cri.call_error("ContainerStatus", s))?
            .into_inner()
            .status)
    }

    pub async fn sandbox_ip(&self, id: &str) -> Result<String, CriError> {
        Ok(self
            .cri
            .runtime()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|s| self.cri.call_error("PodSandboxStatus", s))?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.cri
            .runtime()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(|s| self.cri.call_error("RemoveContainer", s))?;
        Ok(())
    }

    /// Stops every container of `running` (giving each `grace_seconds`) and removes the
    /// sandbox with them.
    pub async fn kill(&self, running: &Running, grace_seconds: i64) -> Result<(), CriError> {
        let mut runtime = self.cri.runtime();
        for container in running.containers.values() {
            runtime
                .stop_container(api::StopContainerRequest {
                    container_id: container.id.clone(),
                    timeout: grace_seconds,
                })
                .await
                .map_err(|s| self.cri.call_error("StopContainer", s))?;
        }
        if let Some(sandbox) = &running.sandbox {
            runtime
                .stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await
                .map_err(|s| self.cri.call_error("StopPodSandbox", s))?;
            runtime
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await
                .map_err(|s| self.cri.call_error("RemovePodSandbox", s))?;
        }
        Ok(())
    }
}
