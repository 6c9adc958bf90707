//! A pod's status from what the runtime and the probes say, computed as kubelet computes it
//! (phase, conditions, container states with their last termination).

use ke_cri::api;
use serde_json::{Value, json};

use crate::clock::from_unix_nanos;
use crate::model::{Container, Pod, Quantity, RestartPolicy};

/// What edged knows of one container.
#[derive(Debug, Default)]
pub struct Observed {
    /// Its newest container in the runtime.
    pub current: Option<api::ContainerStatus>,
    /// The one before.
    pub previous: Option<api::ContainerStatus>,
    /// Why it is not running, when edged holds it back (`CrashLoopBackOff`,
    /// `CreateContainerConfigError`…): reason and message.
    pub held: Option<(String, String)>,
    /// The readiness verdict (true without a readiness probe).
    pub ready: bool,
    /// The startup verdict (true without a startup probe).
    pub started: bool,
}

impl Observed {
    fn state(&self) -> Option<i32> {
        self.current.as_ref().map(|s| s.state)
    }

    pub fn running(&self) -> bool {
        self.state() == Some(api::ContainerState::ContainerRunning as i32)
    }

    fn exit_code(&self) -> Option<i32> {
        self.current
            .as_ref()
            .filter(|s| s.state == api::ContainerState::ContainerExited as i32)
            .map(|s| s.exit_code)
    }
}

pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub init: Vec<Observed>,
    pub containers: Vec<Observed>,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: Option<String>,
}

/// Whether every init container has completed (exit 0).
pub fn initialized(init: &[Observed]) -> bool {
    init.iter().all(|o| o.exit_code() == Some(0))
}

pub fn build(view: &PodView<'_>) -> Value {
    let pod = view.pod;
    let policy = pod.spec.restart_policy;
    let initialized = initialized(&view.init);
    let init_failed = view
        .init
        .iter()
        .any(|o| o.exit_code().is_some_and(|c| c != 0) && o.held.is_none());
    let init_statuses: Vec<Value> = pod
        .spec
        .init_containers
        .iter()
        .zip(&view.init)
        .map(|(spec, observed)| {
            let done = observed.exit_code() == Some(0);
            container_status(spec, observed, done, "PodInitializing")
        })
        .collect();
    let waiting_reason = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .zip(&view.containers)
        .map(|(spec, observed)| {
            let ready = observed.running() && observed.ready && observed.started;
            container_status(spec, observed, ready, waiting_reason)
        })
        .collect();
    let containers_ready =
        initialized && !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    let phase = if !initialized {
        if init_failed && policy == RestartPolicy::Never {
            "Failed"
        } else {
            "Pending"
        }
    } else {
        phase(&view.containers, policy)
    };
    let flag = |b: bool| if b { "True" } else { "False" };
    let condition = |kind: &str, status: bool| json!({"type": kind, "status": flag(status)});
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("Initialized", initialized),
            condition("Ready", containers_ready),
            condition("ContainersReady", containers_ready),
            condition("PodScheduled", true),
        ],
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !view.pod_ip.is_empty() {
        status["podIP"] = json!(view.pod_ip);
        status["podIPs"] = json!([{"ip": view.pod_ip}]);
    }
    if let Some(start) = &view.start_time {
        status["startTime"] = json!(start);
    }
    status
}

/// kubelet's `getPhase` for a pod whose init containers are done.
fn phase(containers: &[Observed], policy: RestartPolicy) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for observed in containers {
        if observed.running() {
            running += 1;
        } else if let Some(code) = observed.exit_code() {
            // Exited, whether or not a restart is held back: it has run.
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || containers.is_empty() {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if policy == RestartPolicy::Always {
        // Every container exited and will be restarted.
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if policy == RestartPolicy::Never {
        "Failed"
    } else {
        "Running"
    }
}

fn container_status(spec: &Container, observed: &Observed, ready: bool, waiting: &str) -> Value {
    let current = observed.current.as_ref();
    let exited = observed.exit_code().is_some();
    let (state, last) = match (current, &observed.held) {
        (Some(s), _) if observed.running() => (
            json!({"running": {"startedAt": from_unix_nanos(s.started_at)}}),
            observed.previous.as_ref().map(terminated),
        ),
        // Exited and held back: waiting, with the exit as the last state.
        (Some(s), Some((reason, message))) if exited => (
            json!({"waiting": {"reason": reason, "message": message}}),
            Some(terminated(s)),
        ),
        (Some(s), None) if exited => (terminated(s), observed.previous.as_ref().map(terminated)),
        (_, Some((reason, message))) => (
            json!({"waiting": {"reason": reason, "message": message}}),
            None,
        ),
        _ => (json!({"waiting": {"reason": waiting}}), None),
    };
    let mut status = json!({
        "name": spec.name,
        "state": state,
        "lastState": last.unwrap_or_else(|| json!({})),
        "ready": ready,
        "restartCount": current.map_or(0, |s| s.metadata.as_ref().map_or(0, |m| m.attempt)),
        "image": spec.image,
        "imageID": current.map(|s| s.image_ref.clone()).unwrap_or_default(),
        "started": observed.running() && observed.started,
    });
    if let Some(s) = current {
        status["containerID"] = json!(format!("containerd://{}", s.id));
    }
    status
}

fn terminated(s: &api::ContainerStatus) -> Value {
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".to_owned()
    } else {
        "Error".to_owned()
    };
    let mut terminated = json!({
        "exitCode": s.exit_code,
        "reason": reason,
        "startedAt": from_unix_nanos(s.started_at),
        "finishedAt": from_unix_nanos(s.finished_at),
        "containerID": format!("containerd://{}", s.id),
    });
    if !s.message.is_empty() {
        terminated["message"] = json!(s.message);
    }
    json!({ "terminated": terminated })
}

/// Guaranteed when every container limits CPU and memory and requests what it limits;
/// BestEffort when none asks for anything; Burstable otherwise.
fn qos_class(pod: &Pod) -> &'static str {
    let containers: Vec<&Container> = pod.all_containers().collect();
    let asks = |c: &&Container| !c.resources.requests.is_empty() || !c.resources.limits.is_empty();
    if !containers.iter().any(asks) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = c.resources.limits.get(*r).and_then(Quantity::value);
            let request = c
                .resources
                .requests
                .get(*r)
                .and_then(Quantity::value)
                .or(limit);
            limit.is_some() && limit == request
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn exited(code: i32, attempt: u32) -> api::ContainerStatus {
        api::ContainerStatus {
            id: format!("c{attempt}"),
            state: api::ContainerState::ContainerExited as i32,
            exit_code: code,
            metadata: Some(api::ContainerMetadata {
                name: "app".into(),
                attempt,
            }),
            ..Default::default()
        }
    }

    fn running(attempt: u32) -> api::ContainerStatus {
        api::ContainerStatus {
            state: api::ContainerState::ContainerRunning as i32,
            ..exited(0, attempt)
        }
    }

    fn pod(spec: Value) -> Pod {
        Pod::from_value(json!({"spec": spec})).unwrap()
    }

    fn view<'a>(pod: &'a Pod, init: Vec<Observed>, containers: Vec<Observed>) -> PodView<'a> {
        PodView {
            pod,
            init,
            containers,
            pod_ip: "10.88.0.5".into(),
            host_ip: "192.0.2.1".into(),
            start_time: None,
        }
    }

    #[test]
    fn a_restarted_container_reports_its_last_exit_and_readiness() {
        let pod = pod(json!({"containers": [{"name": "app", "image": "busybox"}]}));
        let observed = Observed {
            current: Some(running(1)),
            previous: Some(exited(2, 0)),
            ready: false,
            started: true,
            ..Default::default()
        };
        let status = build(&view(&pod, vec![], vec![observed]));
        assert_eq!(status["phase"], "Running");
        let container = &status["containerStatuses"][0];
        assert_eq!(container["restartCount"], 1);
        assert_eq!(container["ready"], false);
        assert_eq!(container["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(container["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(status["conditions"][1]["status"], "False");
        assert_eq!(status["qosClass"], "BestEffort");
    }

    #[test]
    fn a_crash_loop_waits_with_the_exit_as_last_state() {
        let pod = pod(json!({"containers": [{"name": "app"}]}));
        let observed = Observed {
            current: Some(exited(3, 2)),
            held: Some(("CrashLoopBackOff".into(), "back-off".into())),
            ready: true,
            started: true,
            ..Default::default()
        };
        let status = build(&view(&pod, vec![], vec![observed]));
        let container = &status["containerStatuses"][0];
        assert_eq!(container["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(container["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(status["phase"], "Running");
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let pod = pod(json!({"restartPolicy": "Never",
            "initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]}));
        let pending = build(&view(
            &pod,
            vec![Observed {
                current: Some(running(0)),
                ..Default::default()
            }],
            vec![Observed::default()],
        ));
        assert_eq!(pending["phase"], "Pending");
        assert_eq!(pending["conditions"][0]["status"], "False");
        assert_eq!(
            pending["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        let failed = build(&view(
            &pod,
            vec![Observed {
                current: Some(exited(1, 0)),
                ..Default::default()
            }],
            vec![Observed::default()],
        ));
        assert_eq!(failed["phase"], "Failed");
        let done = build(&view(
            &pod,
            vec![Observed {
                current: Some(exited(0, 0)),
                ..Default::default()
            }],
            vec![Observed {
                current: Some(exited(0, 0)),
                ready: true,
                started: true,
                ..Default::default()
            }],
        ));
        assert_eq!(done["phase"], "Succeeded");
        assert_eq!(done["initContainerStatuses"][0]["ready"], true);
        assert_eq!(done["conditions"][0]["status"], "True");
    }

    #[test]
    fn qos_classes() {
        let guaranteed = pod(json!({"containers": [{"name": "a",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}));
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = pod(json!({"containers": [{"name": "a",
            "resources": {"requests": {"cpu": "100m"}}}]}));
        assert_eq!(qos_class(&burstable), "Burstable");
    }
}
