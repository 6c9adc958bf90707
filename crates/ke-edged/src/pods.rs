//! The node's pods: the set the cloud bound to this node (from metamanager, so it is known
//! offline too), made to run through CRI and reported back as pod status.
//!
//! Level-triggered: every sync compares what should run with what the runtime has (found by
//! kubelet's labels, so a restarted edgecore adopts running containers instead of restarting
//! them) and acts on the difference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ke_bus::Bus;
use ke_cri::api;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use serde_json::{Value, json};

use crate::runtime::{Running, Runtime};

const METAMANAGER: &str = "metamanager";

/// kubelet's crash-loop backoff: 10 s, doubling, at most 5 minutes; forgotten once a container
/// has run for 10 minutes.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// When a container that keeps exiting may be started again.
struct Backoff {
    delay: Duration,
    not_before: Instant,
}

pub(crate) struct Pods {
    node: String,
    bus: Bus,
    /// Pods bound to this node, by UID.
    desired: HashMap<String, Value>,
    /// The status last reported per pod, to report only changes.
    reported: HashMap<String, Value>,
    /// Pods being deleted whose deletion was confirmed to the cloud.
    confirmed: HashMap<String, ()>,
    /// Per (pod UID, container name).
    backoff: HashMap<(String, String), Backoff>,
}

impl Pods {
    pub fn new(node: String, bus: Bus) -> Pods {
        Pods {
            node,
            bus,
            desired: HashMap::new(),
            reported: HashMap::new(),
            confirmed: HashMap::new(),
            backoff: HashMap::new(),
        }
    }

    /// The pod set from the local store (metamanager answers a type query with every pod).
    pub async fn load(&mut self) {
        let query = Message::new().with_route(
            source::EDGED,
            group::META,
            format!("default/{}", resource_type::POD),
            operation::QUERY,
        );
        match self
            .bus
            .send_sync(METAMANAGER, query, Duration::from_secs(10))
            .await
        {
            Ok(reply) => {
                for value in reply.content.as_array().into_iter().flatten() {
                    if let Some(pod) = value.as_str().and_then(|v| serde_json::from_str(v).ok()) {
                        self.upsert(pod);
                    }
                }
                tracing::info!(
                    pods = self.desired.len(),
                    "pod set loaded from the local store"
                );
            }
            Err(err) => tracing::warn!(error = %err, "pod set not loaded"),
        }
    }

    /// A pod message the cloud sent (forwarded by metamanager).
    pub fn apply(&mut self, message: &Message) {
        let Ok(resource) = ke_message::resource::WireResource::parse(&message.router.resource)
        else {
            return;
        };
        if resource.resource_type != resource_type::POD || resource.name.is_none() {
            return;
        }
        match message.router.operation.as_str() {
            operation::INSERT | operation::UPDATE => self.upsert(message.content.clone()),
            operation::DELETE => {
                if let Some(uid) = message.content["metadata"]["uid"].as_str() {
                    self.desired.remove(uid);
                }
            }
            _ => {}
        }
    }

    fn upsert(&mut self, pod: Value) {
        if pod["spec"]["nodeName"].as_str() != Some(self.node.as_str()) {
            return;
        }
        if let Some(uid) = pod["metadata"]["uid"].as_str() {
            self.desired.insert(uid.to_owned(), pod);
        }
    }

    /// One pass: start what is missing, restart what exited, stop what is no longer wanted,
    /// report what changed.
    pub async fn sync(&mut self, runtime: &Runtime) {
        let running = match runtime.running().await {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(error = %err, "container runtime not readable; pods not synced");
                return;
            }
        };
        let mut live = Vec::new();
        for (uid, pod) in self.desired.clone() {
            let current = running.get(&uid).cloned().unwrap_or_default();
            if pod["metadata"]["deletionTimestamp"].is_string() {
                self.terminate(runtime, &uid, &pod, &current).await;
                continue;
            }
            if let Err(err) = self.run(runtime, &pod, &current).await {
                tracing::warn!(pod = %pod_name(&pod), error = %err, "pod not started");
            }
            live.push((uid, pod));
        }
        // Reported from one listing taken after every pod has been started.
        if !live.is_empty()
            && let Ok(mut after) = runtime.running().await
        {
            for (uid, pod) in live {
                let current = after.remove(&uid).unwrap_or_default();
                self.report(runtime, &pod, &current).await;
            }
        }
        for (uid, orphan) in &running {
            if !self.desired.contains_key(uid) {
                tracing::info!(%uid, "stopping the containers of a pod no longer on this node");
                if let Err(err) = runtime.kill(orphan, 0).await {
                    tracing::warn!(%uid, error = %err, "orphaned pod not removed");
                }
                self.reported.remove(uid);
            }
        }
        let desired = &self.desired;
        self.backoff.retain(|(uid, _), _| desired.contains_key(uid));
    }

    async fn run(
        &mut self,
        runtime: &Runtime,
        pod: &Value,
        current: &Running,
    ) -> Result<(), ke_cri::CriError> {
        let ready = |s: &api::PodSandbox| s.state == api::PodSandboxState::SandboxReady as i32;
        let attempt_of = |s: &api::PodSandbox| s.metadata.as_ref().map_or(0, |m| m.attempt);
        let (sandbox_id, sandbox_attempt) = match &current.sandbox {
            Some(sandbox) if ready(sandbox) => (sandbox.id.clone(), attempt_of(sandbox)),
            other => {
                if let Some(dead) = other {
                    runtime.kill(current, 0).await.ok();
                    let attempt = attempt_of(dead) + 1;
                    (runtime.run_sandbox(pod, attempt).await?, attempt)
                } else {
                    (runtime.run_sandbox(pod, 0).await?, 0)
                }
            }
        };
        let fresh_sandbox = current.sandbox.as_ref().is_none_or(|s| s.id != sandbox_id);
        let restart = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let name = spec["name"].as_str().unwrap_or_default();
            let existing = (!fresh_sandbox)
                .then(|| current.containers.get(name))
                .flatten();
            let key = (
                pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                name.to_owned(),
            );
            let attempt = match existing {
                None => 0,
                Some(c) if c.state == api::ContainerState::ContainerRunning as i32 => {
                    if self
                        .backoff
                        .get(&key)
                        .is_some_and(|b| b.not_before.elapsed() > BACKOFF_RESET)
                    {
                        self.backoff.remove(&key);
                    }
                    continue;
                }
                Some(c) if c.state == api::ContainerState::ContainerCreated as i32 => continue,
                Some(c) => {
                    let exit_code = runtime
                        .container_status(&c.id)
                        .await?
                        .map_or(0, |s| s.exit_code);
                    let again = match restart {
                        "Never" => false,
                        "OnFailure" => exit_code != 0,
                        _ => true,
                    };
                    if !again || self.backing_off(&key) {
                        continue;
                    }
                    let delay = self
                        .backoff
                        .get(&key)
                        .map_or(BACKOFF_FIRST, |b| (b.delay * 2).min(BACKOFF_MAX));
                    self.backoff.insert(
                        key.clone(),
                        Backoff {
                            delay,
                            not_before: Instant::now() + delay,
                        },
                    );
                    runtime.remove_container(&c.id).await?;
                    c.metadata.as_ref().map_or(0, |m| m.attempt) + 1
                }
            };
            let pod_ip = runtime.sandbox_ip(&sandbox_id).await.unwrap_or_default();
            let env = match crate::env::resolve(&self.bus, pod, spec, &pod_ip).await {
                Ok(env) => env,
                Err(err) => {
                    tracing::warn!(pod = %pod_name(pod), container = name, error = %err.0, "container not configured yet");
                    continue;
                }
            };
            runtime
                .start_container(pod, &sandbox_id, sandbox_attempt, spec, env, attempt)
                .await?;
        }
        Ok(())
    }

    fn backing_off(&self, key: &(String, String)) -> bool {
        self.backoff
            .get(key)
            .is_some_and(|b| Instant::now() < b.not_before)
    }

    /// A pod the cloud is deleting: stop it within its grace period, then confirm the deletion
    /// (edgecontroller deletes the API object with grace 0 and the pod's UID as precondition).
    async fn terminate(&mut self, runtime: &Runtime, uid: &str, pod: &Value, current: &Running) {
        if self.confirmed.contains_key(uid) {
            return;
        }
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        if let Err(err) = runtime.kill(current, grace).await {
            tracing::warn!(pod = %pod_name(pod), error = %err, "pod not stopped");
            return;
        }
        let resource = wire_resource(pod, resource_type::POD);
        let delete = Message::new()
            .with_route(source::EDGED, group::META, resource, operation::DELETE)
            .with_content(json!({
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            }));
        if self.bus.send(METAMANAGER, delete).await.is_ok() {
            self.confirmed.insert(uid.to_owned(), ());
            self.reported.remove(uid);
            tracing::info!(pod = %pod_name(pod), "pod stopped; deletion confirmed to the cloud");
        }
    }

    async fn report(&mut self, runtime: &Runtime, pod: &Value, current: &Running) {
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = self.status(runtime, pod, current).await;
        if self.reported.get(&uid) == Some(&status) {
            return;
        }
        let resource = wire_resource(pod, resource_type::POD_PATCH);
        let patch = json!({"metadata": {"uid": uid}, "status": status});
        // A JSON string, as upstream's kubelet bridge sends it (golden 11). Not waited for:
        // metamanager keeps it until the cloud has it.
        let message = Message::new()
            .with_route(source::EDGED, group::META, resource, operation::PATCH)
            .with_content(patch.to_string());
        if self.bus.send(METAMANAGER, message).await.is_ok() {
            self.reported.insert(uid, status);
        }
    }

    async fn status(&self, runtime: &Runtime, pod: &Value, current: &Running) -> Value {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let mut statuses = Vec::new();
        let mut all_running = true;
        let mut all_done_ok = true;
        let mut any_failed = false;
        for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let name = spec["name"].as_str().unwrap_or_default();
            let image = spec["image"].as_str().unwrap_or_default();
            let container = current.containers.get(name);
            let status = match container {
                Some(c) => runtime.container_status(&c.id).await.ok().flatten(),
                None => None,
            };
            let restarts = container
                .and_then(|c| c.metadata.as_ref())
                .map_or(0, |m| m.attempt);
            let (state, ready) = match &status {
                Some(s) if s.state == api::ContainerState::ContainerRunning as i32 => {
                    all_done_ok = false;
                    (
                        json!({"running": {"startedAt": crate::clock::from_unix_nanos(s.started_at)}}),
                        true,
                    )
                }
                Some(s)
                    if s.state == api::ContainerState::ContainerExited as i32
                        && self.backing_off(&(uid.to_owned(), name.to_owned())) =>
                {
                    all_running = false;
                    all_done_ok = false;
                    (
                        json!({"waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": format!("back-off restarting failed container {name}"),
                        }}),
                        false,
                    )
                }
                Some(s) if s.state == api::ContainerState::ContainerExited as i32 => {
                    all_running = false;
                    if s.exit_code != 0 {
                        any_failed = true;
                        all_done_ok = false;
                    }
                    (
                        json!({"terminated": {
                            "exitCode": s.exit_code,
                            "reason": if s.reason.is_empty() { "Completed".to_owned() } else { s.reason.clone() },
                            "startedAt": crate::clock::from_unix_nanos(s.started_at),
                            "finishedAt": crate::clock::from_unix_nanos(s.finished_at),
                            "containerID": format!("containerd://{}", s.id),
                        }}),
                        false,
                    )
                }
                _ => {
                    all_running = false;
                    all_done_ok = false;
                    (json!({"waiting": {"reason": "ContainerCreating"}}), false)
                }
            };
            let mut entry = json!({
                "name": name,
                "state": state,
                "lastState": {},
                "ready": ready,
                "restartCount": restarts,
                "image": image,
                "imageID": status.as_ref().map(|s| s.image_ref.clone()).unwrap_or_default(),
                "started": ready,
            });
            if let Some(s) = &status {
                entry["containerID"] = json!(format!("containerd://{}", s.id));
            }
            statuses.push(entry);
        }
        let restart = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let phase = if all_running && !statuses.is_empty() {
            "Running"
        } else if restart != "Always" && all_done_ok && !statuses.is_empty() {
            "Succeeded"
        } else if restart == "Never" && any_failed {
            "Failed"
        } else {
            "Pending"
        };
        let ready = if all_running { "True" } else { "False" };
        let pod_ip = match &current.sandbox {
            Some(sandbox) => runtime.sandbox_ip(&sandbox.id).await.unwrap_or_default(),
            None => String::new(),
        };
        let condition = |kind: &str, status: &str| json!({"type": kind, "status": status});
        let mut status = json!({
            "phase": phase,
            "conditions": [
                condition("Initialized", "True"),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", "True"),
            ],
            "containerStatuses": statuses,
        });
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        status
    }
}

/// `<namespace>/<type>/<name>` of `pod`.
fn wire_resource(pod: &Value, resource_type: &str) -> String {
    let meta = &pod["metadata"];
    format!(
        "{}/{resource_type}/{}",
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or_default()
    )
}

fn pod_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}
