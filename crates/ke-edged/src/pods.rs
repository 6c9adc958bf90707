//! The node's pods: the set the cloud bound to this node (from metamanager, so it is known
//! offline too), made to run through CRI and reported back as pod status.
//!
//! Level-triggered: every sync compares what should run with what the runtime has (found by
//! kubelet's labels, so a restarted edgecore adopts running containers instead of restarting
//! them) and acts on the difference. What can take long — stopping a pod within its grace
//! period, killing a container that failed its liveness probe — runs as a task, so one slow
//! pod never holds up the others.

use crate::METAMANAGER;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ke_bus::Bus;
use ke_cri::api;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::downward::PodFacts;
use crate::events::{self, Events};
use crate::model::{Container, Pod, RestartPolicy};
use crate::objects::Objects;
use crate::probes::{self, Probes, Verdict};
use crate::resources::Allocatable;
use crate::runtime::{Running, Runtime, Start, StartError};
use crate::static_pods::{self, StaticPods};
use crate::status::{self, Observed, PodView};
use crate::volumes::{self, Prepared, Volumes};

/// kubelet's crash-loop backoff: 10 s, doubling, at most 5 minutes; forgotten once a container
/// has run for 10 minutes.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often written volumes are compared with their ConfigMaps and Secrets even without an
/// update from the cloud (one may have changed while edgecore was down).
const VOLUME_REFRESH: Duration = Duration::from_secs(60);
/// How long a failed image pull waits before the next (`ImagePullBackOff`).
const PULL_BACKOFF: Duration = Duration::from_secs(10);
/// Sandboxes started at once.
const SANDBOX_STARTS: usize = 8;
/// kubelet's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

/// When a container that keeps exiting may be started again.
struct Backoff {
    delay: Duration,
    not_before: Instant,
    /// Whether this wait was told as a `BackOff` event.
    announced: bool,
}

/// (pod UID, container name).
type ContainerKey = (String, String);

/// A finished background task.
pub(crate) enum Done {
    /// A deleted pod was stopped (`ok`) or could not be.
    Terminated { uid: String, ok: bool },
    /// A container that failed its liveness probe was stopped.
    Killed { container_id: String },
    /// An image pull ended.
    Pulled {
        image: String,
        result: Result<(), String>,
    },
}

/// What the node contributes to every pod.
#[derive(Debug, Clone)]
pub(crate) struct NodeFacts {
    pub host_ip: String,
    pub allocatable: Allocatable,
}

pub(crate) struct Pods {
    node: String,
    bus: Bus,
    facts: NodeFacts,
    volumes: Volumes,
    probes: Probes,
    events: Events,
    /// Pods bound to this node, by UID: the cloud's and the static ones.
    desired: HashMap<String, Pod>,
    /// Where static pods come from (`staticPodPath`), if anywhere.
    static_source: Option<StaticPods>,
    /// The mirror pods the API shows of static pods, by `namespace/name`: UID and the static
    /// pod's hash.
    mirrors: HashMap<String, (String, String)>,
    /// A mirror pod went away: make it again soon rather than at the next scan.
    mirror_lost: bool,
    /// When edged learnt of a pod that has not run yet (the cloud's message, or the store at
    /// start), for the "pod started" log line and its latency.
    arrived: HashMap<String, Instant>,
    /// The status last reported per pod, to report only changes.
    reported: HashMap<String, Value>,
    /// Volumes written for a pod since edged started, and when.
    prepared: HashMap<String, (Prepared, Instant)>,
    /// Containers edged could not start, with kubelet's waiting reason and a message.
    held: HashMap<ContainerKey, (String, String)>,
    backoff: HashMap<ContainerKey, Backoff>,
    /// The first attempt of containers whose sandbox had to be replaced.
    next_attempt: HashMap<ContainerKey, u32>,
    /// Deleted pods being stopped, and those whose deletion was confirmed to the cloud.
    terminating: HashSet<String>,
    confirmed: HashSet<String>,
    /// Containers being stopped after failing their liveness probe.
    killing: HashSet<String>,
    /// The containers running at the end of the last sync.
    running: Vec<String>,
    /// Statuses of exited containers, by ID (they no longer change).
    exited: HashMap<String, api::ContainerStatus>,
    /// Images being pulled (in background tasks: a large image over a slow link must not hold
    /// up every other pod), just pulled, and failed pulls with when to try again.
    pulling: HashSet<String>,
    pulled: HashSet<String>,
    pull_failed: HashMap<String, (String, Instant)>,
    tasks: JoinSet<Done>,
}

impl Pods {
    pub fn new(
        node: String,
        bus: Bus,
        facts: NodeFacts,
        root_directory: &str,
        static_pod_path: &str,
    ) -> Pods {
        let static_source =
            (!static_pod_path.is_empty()).then(|| StaticPods::new(static_pod_path, &node));
        let events = Events::new(bus.clone(), node.clone());
        Pods {
            events,
            static_source,
            mirrors: HashMap::new(),
            mirror_lost: false,
            arrived: HashMap::new(),
            node,
            bus,
            facts,
            volumes: Volumes::new(root_directory),
            probes: Probes::new(),
            desired: HashMap::new(),
            reported: HashMap::new(),
            prepared: HashMap::new(),
            held: HashMap::new(),
            backoff: HashMap::new(),
            next_attempt: HashMap::new(),
            terminating: HashSet::new(),
            confirmed: HashSet::new(),
            killing: HashSet::new(),
            running: Vec::new(),
            exited: HashMap::new(),
            pulling: HashSet::new(),
            pulled: HashSet::new(),
            pull_failed: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// The pod set from the local store (metamanager answers a type query with every pod).
    /// Until it is loaded edged must not act: every running pod would look like an orphan.
    pub async fn load(&mut self) -> bool {
        let query = Message::new().with_route(
            source::EDGED,
            group::META,
            format!("default/{}", resource_type::POD),
            operation::QUERY,
        );
        let reply = self
            .bus
            .send_sync(METAMANAGER, query, Duration::from_secs(10))
            .await;
        let stored = match &reply {
            Ok(reply) => match reply.content.as_array() {
                Some(stored) => stored,
                None => {
                    tracing::warn!(answer = %reply.content, "pod set not loaded; retrying");
                    return false;
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "pod set not loaded; retrying");
                return false;
            }
        };
        for value in stored {
            if let Some(pod) = value.as_str().and_then(|v| serde_json::from_str(v).ok()) {
                self.upsert(pod);
            }
        }
        tracing::info!(
            pods = self.desired.len(),
            "pod set loaded from the local store"
        );
        true
    }

    /// An object the cloud sent (forwarded by metamanager): a pod, or a ConfigMap or Secret
    /// whose volumes must be rewritten.
    pub fn apply(&mut self, message: &Message) {
        let Ok(resource) = ke_message::resource::WireResource::parse(&message.router.resource)
        else {
            return;
        };
        let Some(name) = &resource.name else { return };
        let kind = resource.resource_type.as_str();
        match (kind, message.router.operation.as_str()) {
            (resource_type::POD, operation::INSERT | operation::UPDATE) => {
                self.upsert(message.content.clone());
            }
            (resource_type::POD, operation::DELETE) => {
                let ours = |pod: &Pod| !static_pods::is_static(&pod.metadata.annotations);
                if let Some(uid) = message.content["metadata"]["uid"].as_str()
                    && self.desired.get(uid).is_some_and(ours)
                {
                    self.desired.remove(uid);
                }
                let key = format!(
                    "{}/{name}",
                    resource.namespace.as_deref().unwrap_or_default()
                );
                let uid = message.content["metadata"]["uid"].as_str();
                if self
                    .mirrors
                    .get(&key)
                    .is_some_and(|(mirror, _)| Some(mirror.as_str()) == uid)
                {
                    self.mirrors.remove(&key);
                    self.mirror_lost = true;
                }
            }
            (resource_type::CONFIGMAP | resource_type::SECRET, _) => {
                let namespace = resource.namespace.as_deref();
                let users: Vec<String> = self
                    .desired
                    .values()
                    .filter(|pod| {
                        namespace == Some(pod.namespace()) && mounts_object(pod, kind, name)
                    })
                    .map(|pod| pod.uid().to_owned())
                    .collect();
                for uid in users {
                    self.prepared.remove(&uid);
                }
            }
            _ => {}
        }
    }

    fn upsert(&mut self, value: Value) {
        if value["spec"]["nodeName"].as_str() != Some(self.node.as_str()) {
            return;
        }
        match Pod::from_value(value) {
            Ok(pod)
                if pod
                    .metadata
                    .annotations
                    .contains_key(static_pods::CONFIG_MIRROR) =>
            {
                self.mirror_seen(&pod);
            }
            Ok(pod) if !pod.uid().is_empty() => {
                if !self.desired.contains_key(pod.uid()) && !pod.deleting() {
                    self.arrived.insert(pod.uid().to_owned(), Instant::now());
                }
                self.desired.insert(pod.uid().to_owned(), pod);
            }
            Ok(_) => tracing::warn!("a pod without a UID was ignored"),
            Err(err) => tracing::warn!(error = %err, "a pod that does not parse was ignored"),
        }
    }

    /// The API's mirror of one of our static pods. A mirror someone deleted is let go (and
    /// created again); its static pod runs on regardless.
    fn mirror_seen(&mut self, mirror: &Pod) {
        let key = format!("{}/{}", mirror.namespace(), mirror.metadata.name);
        let hash = mirror.metadata.annotations[static_pods::CONFIG_MIRROR].clone();
        if mirror.deleting() {
            self.mirrors.remove(&key);
            self.mirror_lost = true;
            let bus = self.bus.clone();
            let resource = wire_resource(mirror, resource_type::POD);
            let options = delete_options(mirror.uid());
            tokio::spawn(async move {
                crate::cloud::request(&bus, &resource, operation::DELETE, options).await;
            });
        } else {
            // A late update of a mirror already replaced for an edited manifest.
            if let Some((_, known)) = self.mirrors.get(&key)
                && *known != hash
                && self.desired.contains_key(known)
            {
                return;
            }
            let known = self.mirrors.get(&key).map(|(uid, _)| uid.as_str());
            if known != Some(mirror.uid()) {
                // A mirror edged did not create (or one created again): report to it afresh.
                self.reported.remove(&hash);
            }
            self.mirrors.insert(key, (mirror.uid().to_owned(), hash));
        }
    }

    /// Takes the static pods from `staticPodPath` (local only: also before the cloud is
    /// reachable); returns the mirror pods they want, by `namespace/name`, with their hash.
    pub fn load_static(&mut self) -> HashMap<String, (Value, String)> {
        let Some(source) = &self.static_source else {
            return HashMap::new();
        };
        let mut wanted: HashMap<String, Value> = HashMap::new();
        for value in source.scan() {
            if let Some(uid) = value["metadata"]["uid"].as_str() {
                wanted.insert(uid.to_owned(), value);
            }
        }
        self.desired.retain(|uid, pod| {
            let keep =
                !static_pods::is_static(&pod.metadata.annotations) || wanted.contains_key(uid);
            if !keep {
                tracing::info!(pod = %pod.full_name(), "static pod manifest removed or changed");
            }
            keep
        });
        let mut mirrors: HashMap<String, (Value, String)> = HashMap::new();
        for (uid, value) in wanted {
            let key = format!(
                "{}/{}",
                value["metadata"]["namespace"].as_str().unwrap_or("default"),
                value["metadata"]["name"].as_str().unwrap_or_default()
            );
            mirrors.insert(key, (static_pods::mirror(&value), uid.clone()));
            if self.desired.contains_key(&uid) {
                continue;
            }
            match Pod::from_value(value) {
                Ok(pod) => {
                    tracing::info!(pod = %pod.full_name(), "static pod added");
                    self.arrived.insert(uid.clone(), Instant::now());
                    self.desired.insert(uid, pod);
                }
                Err(err) => tracing::warn!(error = %err, "static pod does not parse"),
            }
        }
        mirrors
    }

    /// Whether a mirror pod went away since the last call.
    pub fn take_mirror_lost(&mut self) -> bool {
        std::mem::take(&mut self.mirror_lost)
    }

    /// Makes the API's mirror pods match `mirrors` (from [`Pods::load_static`]); what the
    /// cloud cannot take now is tried again on a later call.
    pub async fn sync_mirrors(&mut self, mirrors: HashMap<String, (Value, String)>) {
        for (key, (uid, hash)) in self.mirrors.clone() {
            if mirrors.get(&key).is_none_or(|(_, wanted)| *wanted != hash) {
                let resource = pod_resource(&key);
                let answer = crate::cloud::request(
                    &self.bus,
                    &resource,
                    operation::DELETE,
                    delete_options(&uid),
                )
                .await;
                if !matches!(answer, crate::cloud::Answer::Failed { ref reason, .. } if reason == "Unavailable")
                {
                    self.mirrors.remove(&key);
                }
            }
        }
        for (key, (mirror, hash)) in mirrors {
            if self.mirrors.contains_key(&key) {
                continue;
            }
            match crate::cloud::request(&self.bus, &pod_resource(&key), operation::INSERT, mirror)
                .await
            {
                crate::cloud::Answer::Object(created) => {
                    let uid = created["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    tracing::info!(pod = %key, "mirror pod created");
                    // What was reported before the mirror existed went nowhere.
                    self.reported.remove(&hash);
                    self.mirrors.insert(key, (uid, hash));
                }
                crate::cloud::Answer::Failed { reason, message } => {
                    tracing::debug!(pod = %key, reason, message, "mirror pod not created yet");
                }
            }
        }
    }

    /// The IDs of the containers running at the last sync.
    pub fn running_containers(&self) -> &[String] {
        &self.running
    }

    /// Resolves when some probe verdict changed (then a sync reports it).
    pub fn probes_changed(&self) -> impl Future<Output = ()> + 'static {
        self.probes.changed()
    }

    /// The next finished background task; never resolves while none runs.
    pub async fn next_done(&mut self) -> Done {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(done)) => return done,
                Some(Err(err)) => tracing::error!(error = %err, "edged task failed"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    pub async fn finish(&mut self, done: Done) {
        match done {
            Done::Terminated { uid, ok } => {
                self.terminating.remove(&uid);
                if ok {
                    self.confirmed.insert(uid.clone());
                    self.reported.remove(&uid);
                    self.volumes.remove(&uid).await;
                }
            }
            Done::Killed { container_id } => {
                self.killing.remove(&container_id);
            }
            Done::Pulled { image, result } => {
                self.pulling.remove(&image);
                match result {
                    Ok(()) => {
                        self.pull_failed.remove(&image);
                        self.pulled.insert(image);
                    }
                    Err(message) => {
                        tracing::warn!(%image, message, "image pull failed");
                        let retry = Instant::now() + PULL_BACKOFF;
                        self.pull_failed.insert(image, (message, retry));
                    }
                }
            }
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
        let mut running = running;
        self.start_sandboxes(runtime, &mut running).await;
        let mut live = Vec::new();
        let uids: Vec<String> = self.desired.keys().cloned().collect();
        for uid in uids {
            let Some(pod) = self.desired.get(&uid).cloned() else {
                continue;
            };
            let current = running.get(&uid).cloned().unwrap_or_default();
            if pod.deleting() {
                self.terminate(runtime, &pod, current);
                continue;
            }
            if self.finished(&pod) {
                continue;
            }
            if let Err(err) = self.run(runtime, &pod, &current).await {
                tracing::warn!(pod = %pod.full_name(), error = %err, "pod not started");
            }
            for id in &current.garbage {
                runtime.remove_container(id).await.ok();
            }
            live.push(uid);
        }
        // Reported from one listing taken after every pod has been started.
        if let Ok(mut after) = runtime.running().await {
            let running_ids: HashSet<String> = after
                .values()
                .flat_map(|pod| pod.containers.values())
                .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
                .map(|c| c.id.clone())
                .collect();
            let listed: HashSet<String> = after
                .values()
                .flat_map(|pod| pod.containers.values().chain(pod.previous.values()))
                .map(|c| c.id.clone())
                .collect();
            for uid in live {
                let current = after.remove(&uid).unwrap_or_default();
                if let Some(pod) = self.desired.get(&uid).cloned() {
                    self.report(runtime, &pod, &current).await;
                }
            }
            self.probes.retain(&running_ids);
            self.running = running_ids.into_iter().collect();
            self.exited.retain(|id, _| listed.contains(id));
        }
        for (uid, orphan) in &running {
            if !self.desired.contains_key(uid) && !self.terminating.contains(uid) {
                tracing::info!(%uid, "stopping the containers of a pod no longer on this node");
                if let Err(err) = runtime.kill(orphan, 0).await {
                    // Its volumes stay while anything may still use them; retried next sync.
                    tracing::warn!(%uid, error = %err, "orphaned pod not removed");
                    continue;
                }
                self.reported.remove(uid);
                self.volumes.remove(uid).await;
            }
        }
        let desired = &self.desired;
        self.backoff.retain(|(uid, _), _| desired.contains_key(uid));
        self.next_attempt
            .retain(|(uid, _), _| desired.contains_key(uid));
        self.held.retain(|(uid, _), _| desired.contains_key(uid));
        self.prepared.retain(|uid, _| desired.contains_key(uid));
        self.arrived.retain(|uid, _| desired.contains_key(uid));
        let now = Instant::now();
        self.pull_failed.retain(|_, (_, retry)| *retry > now);
        self.confirmed.retain(|uid| desired.contains_key(uid));
    }

    /// Starts the sandboxes the pods lack, several at once: a sandbox costs a network setup
    /// (CNI), and after a reboot every pod needs one. Each new sandbox goes into `running` as
    /// the pod's, without containers.
    async fn start_sandboxes(&mut self, runtime: &Runtime, running: &mut HashMap<String, Running>) {
        use futures_util::StreamExt as _;
        // Owned, so the futures are `Send` whatever the stream combinators borrow.
        let lacking: Vec<(Pod, Running)> = self
            .desired
            .values()
            .filter(|pod| !pod.deleting() && !self.finished(pod))
            .map(|pod| {
                (
                    pod.clone(),
                    running.get(pod.uid()).cloned().unwrap_or_default(),
                )
            })
            .filter(|(_, current)| sandbox_in_use(current).is_none())
            .collect();
        for (pod, current) in &lacking {
            self.carry_attempts(pod, current);
        }
        let started: Vec<_> = futures_util::stream::iter(lacking)
            .map(|(pod, current)| {
                let runtime = runtime.clone();
                async move {
                    let result = new_sandbox(&runtime, &pod, &current).await;
                    (pod, result)
                }
            })
            .buffer_unordered(SANDBOX_STARTS)
            .collect()
            .await;
        for (pod, result) in started {
            match result {
                Ok((id, attempt)) => {
                    let sandbox = api::PodSandbox {
                        id,
                        state: api::PodSandboxState::SandboxReady as i32,
                        metadata: Some(api::PodSandboxMetadata {
                            attempt,
                            ..Default::default()
                        }),
                        created_at: now_nanos(),
                        ..Default::default()
                    };
                    running.insert(
                        pod.uid().to_owned(),
                        Running {
                            sandbox: Some(sandbox),
                            ..Default::default()
                        },
                    );
                }
                Err(err) => {
                    tracing::warn!(pod = %pod.full_name(), error = %err, "pod sandbox not started");
                }
            }
        }
    }

    async fn run(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        current: &Running,
    ) -> Result<(), ke_cri::CriError> {
        let (sandbox_id, sandbox_attempt) = match sandbox_in_use(current) {
            Some(ready) => ready,
            None => {
                self.carry_attempts(pod, current);
                new_sandbox(runtime, pod, current).await?
            }
        };
        let fresh_sandbox = current.sandbox.as_ref().is_none_or(|s| s.id != sandbox_id);
        let existing = |name: &str| {
            (!fresh_sandbox)
                .then(|| current.containers.get(name))
                .flatten()
        };
        if self
            .prepared
            .get(pod.uid())
            .is_some_and(|(_, at)| at.elapsed() > VOLUME_REFRESH)
        {
            self.prepared.remove(pod.uid());
        }
        let mut sandbox = SandboxRef {
            id: &sandbox_id,
            attempt: sandbox_attempt,
            ip: None,
        };
        if !self.prepared.contains_key(pod.uid())
            && pod
                .spec
                .containers
                .iter()
                .all(|c| existing(&c.name).is_some())
        {
            // Running containers see refreshed ConfigMap and Secret files.
            self.prepare_volumes(runtime, pod, &mut sandbox).await;
        }
        for container in &pod.spec.init_containers {
            match self
                .step(
                    runtime,
                    pod,
                    container,
                    existing(&container.name),
                    &mut sandbox,
                    true,
                )
                .await?
            {
                Step::Done => continue,
                Step::Wait => return Ok(()),
            }
        }
        for container in &pod.spec.containers {
            self.step(
                runtime,
                pod,
                container,
                existing(&container.name),
                &mut sandbox,
                false,
            )
            .await?;
        }
        Ok(())
    }

    /// Brings one container towards running (or, for an init container, completed).
    async fn step(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        container: &Container,
        existing: Option<&api::Container>,
        sandbox: &mut SandboxRef<'_>,
        init: bool,
    ) -> Result<Step, ke_cri::CriError> {
        let key = (pod.uid().to_owned(), container.name.clone());
        let wait = if init { Step::Wait } else { Step::Done };
        let attempt = match existing {
            None => self.next_attempt.remove(&key).unwrap_or(0),
            Some(c) if c.state == api::ContainerState::ContainerRunning as i32 => {
                if self
                    .backoff
                    .get(&key)
                    .is_some_and(|b| b.not_before.elapsed() > BACKOFF_RESET)
                {
                    self.backoff.remove(&key);
                }
                if !init && self.probes.unhealthy(&c.id) {
                    self.kill_unhealthy(runtime, pod, container, &c.id);
                }
                return Ok(wait);
            }
            Some(c) => {
                let status = self
                    .container_status(runtime, pod, container, Some(&c.id))
                    .await?;
                let exit_code = status.as_ref().map_or(0, |s| s.exit_code);
                let exited = status
                    .as_ref()
                    .is_some_and(|s| s.state == api::ContainerState::ContainerExited as i32);
                if init && exited && exit_code == 0 {
                    return Ok(Step::Done);
                }
                // Under `Never` a container runs once, however it ended.
                if pod.spec.restart_policy == RestartPolicy::Never {
                    return Ok(wait);
                }
                // A container left `Created` failed to start: it is retried like an exit.
                if exited && !pod.spec.restart_policy.restarts(exit_code) {
                    return Ok(wait);
                }
                if self.backing_off(&key) {
                    if let Some(backoff) = self.backoff.get_mut(&key)
                        && !std::mem::replace(&mut backoff.announced, true)
                    {
                        let message = format!(
                            "Back-off restarting failed container {} in pod {}",
                            container.name,
                            pod.full_name()
                        );
                        let name = Some(container.name.as_str());
                        self.events
                            .record(pod, name, events::Type::Warning, "BackOff", message);
                    }
                    return Ok(wait);
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
                        announced: false,
                    },
                );
                c.metadata.as_ref().map_or(0, |m| m.attempt) + 1
            }
        };
        let name = Some(container.name.as_str());
        match self.start(runtime, pod, container, sandbox, attempt).await {
            Ok(()) => {
                self.held.remove(&key);
                let created = format!("Created container {}", container.name);
                self.events
                    .record(pod, name, events::Type::Normal, "Created", created);
                let started = format!("Started container {}", container.name);
                self.events
                    .record(pod, name, events::Type::Normal, "Started", started);
            }
            Err(err) => {
                tracing::warn!(pod = %pod.full_name(), container = %container.name, reason = err.reason(), error = %err, "container not started");
                let held = (err.reason().to_owned(), err.to_string());
                // Told once per distinct failure, not on every sync; a pull is not a failure.
                let pulling = matches!(err, StartError::Pulling(_));
                if !pulling && self.held.get(&key) != Some(&held) {
                    let message = format!("Error: {err}");
                    self.events
                        .record(pod, name, events::Type::Warning, "Failed", message);
                }
                self.held.insert(key, held);
            }
        }
        Ok(wait)
    }

    async fn start(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        container: &Container,
        sandbox: &mut SandboxRef<'_>,
        attempt: u32,
    ) -> Result<(), StartError> {
        let image = self.image(runtime, pod, container).await?;
        let facts = self.pod_facts(runtime, pod, sandbox).await;
        let bus = self.bus.clone();
        let mut objects = Objects::new(&bus, pod.namespace());
        let prepared = match self.prepared.get(pod.uid()) {
            Some((prepared, _)) => prepared.clone(),
            None => {
                let prepared = self
                    .volumes
                    .prepare(&mut objects, pod, &facts)
                    .await
                    .map_err(|e| StartError::Config(e.to_string()))?;
                self.prepared
                    .insert(pod.uid().to_owned(), (prepared.clone(), Instant::now()));
                prepared
            }
        };
        let mut mounts = volumes::mounts(pod, container, &prepared)
            .map_err(|e| StartError::Config(e.to_string()))?;
        if !container
            .termination_message_path
            .as_deref()
            .is_some_and(str::is_empty)
        {
            let termination = self
                .volumes
                .termination_mount(pod, container, attempt)
                .map_err(|e| StartError::Config(e.to_string()))?;
            mounts.push(termination);
        }
        let env = crate::env::resolve(&mut objects, pod, container, &facts)
            .await
            .map_err(|e| StartError::Config(e.0))?;
        let expand = |items: &[String]| {
            items
                .iter()
                .map(|item| crate::env::expand(item, &env))
                .collect()
        };
        let start = Start {
            sandbox_id: sandbox.id,
            sandbox_attempt: sandbox.attempt,
            command: expand(&container.command),
            args: expand(&container.args),
            env,
            mounts,
            attempt,
        };
        runtime
            .start_container(pod, container, &image, start)
            .await?;
        Ok(())
    }

    /// The image `container` starts from; a pull it needs is started in the background and
    /// the container waits (`ContainerCreating`) until it is done.
    async fn image(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        container: &Container,
    ) -> Result<api::Image, StartError> {
        let name = &container.image;
        if let Some((message, retry)) = self.pull_failed.get(name)
            && Instant::now() < *retry
        {
            return Err(StartError::Image {
                reason: "ImagePullBackOff",
                message: message.clone(),
            });
        }
        let just_pulled = self.pulled.remove(name);
        if let Some(image) = runtime.usable_image(container, just_pulled).await? {
            return Ok(image);
        }
        if self.pulling.insert(name.clone()) {
            let message = format!("Pulling image {name:?}");
            let container_name = Some(container.name.as_str());
            self.events.record(
                pod,
                container_name,
                events::Type::Normal,
                "Pulling",
                message,
            );
            let (runtime, image) = (runtime.clone(), name.clone());
            self.tasks.spawn(async move {
                let result = runtime.pull(&image).await;
                Done::Pulled { image, result }
            });
        }
        Err(StartError::Pulling(format!("Pulling image {name:?}")))
    }

    async fn prepare_volumes(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        sandbox: &mut SandboxRef<'_>,
    ) {
        let facts = self.pod_facts(runtime, pod, sandbox).await;
        let bus = self.bus.clone();
        let mut objects = Objects::new(&bus, pod.namespace());
        match self.volumes.prepare(&mut objects, pod, &facts).await {
            Ok(prepared) => {
                self.prepared
                    .insert(pod.uid().to_owned(), (prepared, Instant::now()));
            }
            Err(err) => {
                tracing::warn!(pod = %pod.full_name(), error = %err, "volumes not refreshed");
            }
        }
    }

    async fn pod_facts(
        &self,
        runtime: &Runtime,
        pod: &Pod,
        sandbox: &mut SandboxRef<'_>,
    ) -> PodFacts {
        if sandbox.ip.is_none() {
            sandbox.ip = Some(if pod.spec.host_network {
                self.facts.host_ip.clone()
            } else {
                runtime.sandbox_ip(sandbox.id).await.unwrap_or_default()
            });
        }
        PodFacts {
            pod_ip: sandbox.ip.clone().unwrap_or_default(),
            host_ip: self.facts.host_ip.clone(),
            node: self.facts.allocatable,
        }
    }

    /// Remembers the attempts of a dead sandbox's containers, which go with it: the
    /// containers of the new sandbox go on counting (`restartCount`) where they left off.
    fn carry_attempts(&mut self, pod: &Pod, dead: &Running) {
        for (name, container) in &dead.containers {
            let attempt = container.metadata.as_ref().map_or(0, |m| m.attempt);
            self.next_attempt
                .insert((pod.uid().to_owned(), name.clone()), attempt + 1);
        }
    }

    /// Whether the pod is over, as the cloud's copy says or as edged last reported it.
    fn finished(&self, pod: &Pod) -> bool {
        let reported = self
            .reported
            .get(pod.uid())
            .and_then(|s| s["phase"].as_str());
        pod.finished() || matches!(reported, Some("Succeeded" | "Failed"))
    }

    fn backing_off(&self, key: &ContainerKey) -> bool {
        self.backoff
            .get(key)
            .is_some_and(|b| Instant::now() < b.not_before)
    }

    fn grace_period(pod: &Pod) -> i64 {
        pod.metadata
            .deletion_grace_period_seconds
            .or(pod.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE)
    }

    /// Stops a container that failed its liveness probe; the restart policy then applies.
    fn kill_unhealthy(&mut self, runtime: &Runtime, pod: &Pod, container: &Container, id: &str) {
        if !self.killing.insert(id.to_owned()) {
            return;
        }
        tracing::info!(pod = %pod.full_name(), container = %container.name, "container failed its liveness probe; it will be restarted");
        let name = Some(container.name.as_str());
        let unhealthy = format!(
            "Container {} failed its liveness or startup probe",
            container.name
        );
        self.events
            .record(pod, name, events::Type::Warning, "Unhealthy", unhealthy);
        let killing = format!(
            "Container {} failed its probe, will be restarted",
            container.name
        );
        self.events
            .record(pod, name, events::Type::Normal, "Killing", killing);
        let (runtime, id, grace) = (runtime.clone(), id.to_owned(), Self::grace_period(pod));
        self.tasks.spawn(async move {
            if let Err(err) = runtime.stop_container(&id, grace).await {
                tracing::warn!(container = %id, error = %err, "unhealthy container not stopped");
            }
            Done::Killed { container_id: id }
        });
    }

    /// A pod the cloud is deleting: stop it within its grace period, then confirm the deletion
    /// (edgecontroller deletes the API object with grace 0 and the pod's UID as precondition).
    fn terminate(&mut self, runtime: &Runtime, pod: &Pod, current: Running) {
        let uid = pod.uid().to_owned();
        if self.confirmed.contains(&uid) || !self.terminating.insert(uid.clone()) {
            return;
        }
        let grace = Self::grace_period(pod);
        for name in current.containers.keys() {
            let message = format!("Stopping container {name}");
            self.events
                .record(pod, Some(name), events::Type::Normal, "Killing", message);
        }
        let (runtime, bus, name) = (runtime.clone(), self.bus.clone(), pod.full_name());
        let resource = wire_resource(pod, resource_type::POD);
        self.tasks.spawn(async move {
            if let Err(err) = runtime.kill(&current, grace).await {
                tracing::warn!(pod = %name, error = %err, "pod not stopped");
                return Done::Terminated { uid, ok: false };
            }
            let delete = Message::new()
                .with_route(source::EDGED, group::META, resource, operation::DELETE)
                .with_content(delete_options(&uid));
            let ok = bus.send(METAMANAGER, delete).await.is_ok();
            if ok {
                tracing::info!(pod = %name, "pod stopped; deletion confirmed to the cloud");
            }
            Done::Terminated { uid, ok }
        });
    }

    async fn report(&mut self, runtime: &Runtime, pod: &Pod, current: &Running) {
        let pod_ip = match &current.sandbox {
            Some(sandbox) if !pod.spec.host_network => {
                runtime.sandbox_ip(&sandbox.id).await.unwrap_or_default()
            }
            Some(_) => self.facts.host_ip.clone(),
            None => String::new(),
        };
        let mut init = Vec::new();
        for container in &pod.spec.init_containers {
            init.push(
                self.observe(runtime, pod, container, current, &pod_ip, true)
                    .await,
            );
        }
        let mut containers = Vec::new();
        for container in &pod.spec.containers {
            containers.push(
                self.observe(runtime, pod, container, current, &pod_ip, false)
                    .await,
            );
        }
        let view = PodView {
            pod,
            init,
            containers,
            pod_ip,
            host_ip: self.facts.host_ip.clone(),
            start_time: current
                .sandbox
                .as_ref()
                .map(|s| crate::clock::from_unix_nanos(s.created_at)),
        };
        let status = status::build(&view);
        let uid = pod.uid().to_owned();
        if view.containers.iter().all(Observed::running)
            && let Some(arrived) = self.arrived.remove(&uid)
        {
            tracing::info!(pod = %pod.full_name(), took_ms = arrived.elapsed().as_millis() as u64, "pod started");
        }
        if self.reported.get(&uid) == Some(&status) {
            return;
        }
        let resource = wire_resource(pod, resource_type::POD_PATCH);
        // A static pod's status goes to its mirror, which has a UID of its own.
        let patch = if static_pods::is_static(&pod.metadata.annotations) {
            json!({"status": status})
        } else {
            json!({"metadata": {"uid": uid}, "status": status})
        };
        // A JSON string, as upstream's kubelet bridge sends it (golden 11). Not waited for:
        // metamanager keeps it until the cloud has it.
        let message = Message::new()
            .with_route(source::EDGED, group::META, resource, operation::PATCH)
            .with_content(patch.to_string());
        if self.bus.send(METAMANAGER, message).await.is_ok() {
            self.reported.insert(uid, status);
        }
    }

    /// A container's status. An exited container's never changes: it is read once, with its
    /// termination message, and kept while the container exists.
    async fn container_status(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        container: &Container,
        id: Option<&str>,
    ) -> Result<Option<api::ContainerStatus>, ke_cri::CriError> {
        let Some(id) = id else { return Ok(None) };
        if let Some(exited) = self.exited.get(id) {
            return Ok(Some(exited.clone()));
        }
        let Some(mut status) = runtime.container_status(id).await? else {
            return Ok(None);
        };
        if status.state == api::ContainerState::ContainerExited as i32 {
            status.message = termination_message(&self.volumes, pod, container, &status);
            self.exited.insert(id.to_owned(), status.clone());
        }
        Ok(Some(status))
    }

    /// One container as the status reports it; starts the probes of a running one.
    async fn observe(
        &mut self,
        runtime: &Runtime,
        pod: &Pod,
        container: &Container,
        current: &Running,
        pod_ip: &str,
        init: bool,
    ) -> Observed {
        let name = &container.name;
        let key = (pod.uid().to_owned(), name.clone());
        let current_id = current.containers.get(name).map(|c| c.id.as_str());
        let previous_id = current.previous.get(name).map(|c| c.id.as_str());
        let current_status = self
            .container_status(runtime, pod, container, current_id)
            .await
            .ok()
            .flatten();
        let previous = self
            .container_status(runtime, pod, container, previous_id)
            .await
            .ok()
            .flatten();
        let exited = current_status
            .as_ref()
            .is_some_and(|s| s.state == api::ContainerState::ContainerExited as i32);
        let held = if exited && self.backing_off(&key) {
            let message = format!(
                "back-off restarting failed container {name} in pod {}",
                pod.full_name()
            );
            Some(("CrashLoopBackOff".to_owned(), message))
        } else {
            self.held.get(&key).cloned()
        };
        let mut observed = Observed {
            current: current_status,
            previous,
            held,
            ready: true,
            started: true,
        };
        let running = observed
            .current
            .as_ref()
            .filter(|s| s.state == api::ContainerState::ContainerRunning as i32);
        if let (Some(status), false, false) = (running, init, pod_ip.is_empty()) {
            let started_ns = u64::try_from(status.started_at).unwrap_or(0);
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            let target = probes::Target {
                runtime: runtime.clone(),
                container_id: status.id.clone(),
                ip: pod_ip.to_owned(),
                running_for: Duration::from_nanos(now_ns.saturating_sub(started_ns)),
            };
            self.probes.ensure(container, &target);
            let passed = |kind| self.probes.verdict(&status.id, kind) == Verdict::Success;
            observed.ready = container.readiness_probe.is_none() || passed(probes::Kind::Readiness);
            observed.started = container.startup_probe.is_none() || passed(probes::Kind::Startup);
        }
        observed
    }
}

/// The message an exited container leaves: its termination message file, or with
/// `FallbackToLogsOnError` after a failure and no message, the end of its log.
fn termination_message(
    volumes: &Volumes,
    pod: &Pod,
    container: &Container,
    status: &api::ContainerStatus,
) -> String {
    let attempt = status.metadata.as_ref().map_or(0, |m| m.attempt);
    let message = volumes.termination_message(pod.uid(), &container.name, attempt);
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if !message.is_empty() || !fallback || status.exit_code == 0 {
        return if message.is_empty() {
            status.message.clone()
        } else {
            message
        };
    }
    crate::logs::tail(std::path::Path::new(&status.log_path))
}

/// The pod's ready sandbox, if it has one: its ID and attempt.
fn sandbox_in_use(current: &Running) -> Option<(String, u32)> {
    let sandbox = current.sandbox.as_ref()?;
    (sandbox.state == api::PodSandboxState::SandboxReady as i32).then(|| {
        (
            sandbox.id.clone(),
            sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
        )
    })
}

/// A new sandbox for `pod`, after removing a dead one (with its containers); ID and attempt.
async fn new_sandbox(
    runtime: &Runtime,
    pod: &Pod,
    current: &Running,
) -> Result<(String, u32), ke_cri::CriError> {
    let attempt = match &current.sandbox {
        Some(dead) => {
            runtime.kill(current, 0).await.ok();
            dead.metadata.as_ref().map_or(0, |m| m.attempt) + 1
        }
        None => 0,
    };
    Ok((runtime.run_sandbox(pod, attempt).await?, attempt))
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The sandbox a sync works in; its IP is asked for only when something needs it.
struct SandboxRef<'a> {
    id: &'a str,
    attempt: u32,
    ip: Option<String>,
}

/// What a sync does after one container.
enum Step {
    /// Go on with the next container.
    Done,
    /// An init container has not completed: the containers after it wait.
    Wait,
}

/// Whether `pod` mounts ConfigMap or Secret `name` (directly or projected).
fn mounts_object(pod: &Pod, kind: &str, name: &str) -> bool {
    pod.spec.volumes.iter().any(|volume| {
        let direct = match kind {
            resource_type::CONFIGMAP => volume.config_map.as_ref().is_some_and(|c| c.name == name),
            _ => volume
                .secret
                .as_ref()
                .is_some_and(|s| s.secret_name == name),
        };
        let projected = volume
            .projected
            .iter()
            .flat_map(|p| &p.sources)
            .any(|source| match kind {
                resource_type::CONFIGMAP => {
                    source.config_map.as_ref().is_some_and(|c| c.name == name)
                }
                _ => source.secret.as_ref().is_some_and(|s| s.name == name),
            });
        direct || projected
    })
}

/// Deletes at once, and only the object with `uid`.
fn delete_options(uid: &str) -> Value {
    json!({
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    })
}

/// `<namespace>/pod/<name>` of a `namespace/name` key.
fn pod_resource(key: &str) -> String {
    let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
    format!("{namespace}/{}/{name}", resource_type::POD)
}

/// `<namespace>/<type>/<name>` of `pod`.
fn wire_resource(pod: &Pod, resource_type: &str) -> String {
    format!("{}/{resource_type}/{}", pod.namespace(), pod.metadata.name)
}
