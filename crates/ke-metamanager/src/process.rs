//! What metamanager does with each message: classify, store the batch in one transaction, then
//! acknowledge, forward and answer — in that order, so nothing is ACKed before it is stored.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{content, group, operation, resource_type, source};
use ke_message::resource::WireResource;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::MetaManagerSettings;
use crate::db::DbError;
use crate::store::{Change, Reader, Store};

/// Edge modules that talk to the cloud through metamanager. Messages from anyone else came
/// from the cloud.
const EDGE_SOURCES: &[&str] = &[
    source::EDGED,
    source::TWIN,
    source::META_SERVER,
    source::EVENT_BUS,
    source::SERVICE_BUS,
    source::TASK_MANAGER,
    "edgestream",
];

/// Kinds a query asks the cloud for first (upstream's `requireRemoteQuery`).
const REMOTE_FIRST: &[&str] = &[
    resource_type::CONFIGMAP,
    resource_type::SECRET,
    resource_type::PERSISTENT_VOLUME,
    resource_type::PERSISTENT_VOLUME_CLAIM,
    resource_type::VOLUME_ATTACHMENT,
    resource_type::SERVICE_ACCOUNT_TOKEN,
    resource_type::LEASE,
    resource_type::CERTIFICATE_SIGNING_REQUEST,
    resource_type::KUBE_CA_CERT,
];

/// The module that receives the pods and objects the cloud sends (edged).
const EDGED: &str = "edged";

/// How long a report waits for the cloud's answer before it stays in the outbox for later.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct State {
    settings: MetaManagerSettings,
    store: Mutex<Store>,
    pub changes: broadcast::Sender<Change>,
    connected: AtomicBool,
    /// Resources with a report on its way to the cloud. One at a time per resource, so an older
    /// status can never overtake a newer one; newer reports wait in the outbox meanwhile.
    sending: Mutex<HashSet<String>>,
}

impl State {
    pub fn new(
        settings: MetaManagerSettings,
        store: Mutex<Store>,
        changes: broadcast::Sender<Change>,
    ) -> State {
        State {
            settings,
            store,
            changes,
            connected: AtomicBool::new(false),
            sending: Mutex::default(),
        }
    }

    pub fn reader(&self) -> Result<Reader, DbError> {
        self.lock().reader()
    }

    pub fn writer(&self) -> Result<rusqlite::Connection, DbError> {
        self.lock().writer()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic mid-transaction rolls the transaction back; the store itself stays usable.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `resource` for sending; false if a report for it is already on its way.
    fn claim(&self, resource: &str) -> bool {
        self.sending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(resource.to_owned())
    }

    /// After `sent` was answered: the newer report for its resource to send next, or `None`
    /// after releasing the claim. Checked under the claim lock, so a report stored meanwhile is
    /// either returned here or finds the resource unclaimed and is sent by its own task.
    fn next_or_release(&self, sent: &Message) -> Option<Message> {
        let mut sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        let next = self
            .lock()
            .outbox_entry(&sent.router.resource)
            .ok()
            .flatten()
            .filter(|next| next.header.id != sent.header.id);
        if next.is_none() {
            sending.remove(&sent.router.resource);
        }
        next
    }

    fn release(&self, resource: &str) {
        self.sending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(resource);
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// What a message asks for.
enum Plan {
    /// The cloud sent an object (insert/update): store, forward to edged, ACK.
    Store(WireResource),
    /// The cloud deleted an object: remove (if it is the same object), forward, ACK.
    Remove(WireResource, Option<String>),
    /// An edge module reports to the cloud (status, patch, deletion): outbox, then send.
    Report,
    /// An edge module creates something in the cloud (registration, lease, event): send if
    /// connected, fail otherwise — the caller retries.
    Forward,
    /// An event from the edge: sent if connected, dropped otherwise. The cloud does not answer
    /// events, so nothing waits for one.
    Event,
    Query(WireResource),
    /// A cloud answer nobody waits for any more (its requester timed out): store and ACK it so
    /// the cloud stops resending.
    LateResponse(Option<WireResource>),
    Connection(bool),
    Ignore(&'static str),
}

fn classify(message: &Message) -> Plan {
    let route = &message.router;
    if route.resource == resource_type::NODE_CONNECTION {
        return match message.content.as_str() {
            Some(content::CLOUD_CONNECTED) => Plan::Connection(true),
            Some(content::CLOUD_DISCONNECTED) => Plan::Connection(false),
            _ => Plan::Ignore("unknown connection event"),
        };
    }
    let resource = WireResource::parse(&route.resource).ok();
    let from_edge = EDGE_SOURCES.contains(&route.source.as_str());
    match (route.operation.as_str(), from_edge, resource) {
        (operation::INSERT | operation::UPDATE | operation::PATCH, true, Some(resource))
            if resource.resource_type == resource_type::EVENT =>
        {
            Plan::Event
        }
        (operation::QUERY, true, Some(resource)) => Plan::Query(resource),
        (operation::INSERT, true, _) => Plan::Forward,
        (operation::UPDATE | operation::PATCH | operation::DELETE, true, _) => Plan::Report,
        (operation::INSERT | operation::UPDATE, false, Some(resource))
            if resource.name.is_some() =>
        {
            Plan::Store(resource)
        }
        (operation::DELETE, false, Some(resource)) if resource.name.is_some() => {
            let uid = message.content["metadata"]["uid"]
                .as_str()
                .map(str::to_owned);
            Plan::Remove(resource, uid)
        }
        (operation::RESPONSE, false, resource) => Plan::LateResponse(resource),
        (_, _, None) => Plan::Ignore("unparsable resource"),
        _ => Plan::Ignore("operation metamanager does not handle"),
    }
}

pub(crate) async fn handle(state: &Arc<State>, bus: &Bus, batch: Vec<Message>) {
    let plans: Vec<(Message, Plan)> = batch
        .into_iter()
        .map(|message| {
            let plan = classify(&message);
            (message, plan)
        })
        .collect();
    let writer = Arc::clone(state);
    let stored = tokio::task::spawn_blocking(move || {
        let result = writer.lock().batch(|b| {
            // Deletions the store refused: the stored object is another one of that name.
            let mut kept = HashSet::new();
            for (message, plan) in &plans {
                match plan {
                    Plan::Store(resource) => {
                        b.upsert(resource, &message.content)?;
                    }
                    Plan::Remove(resource, uid) => {
                        let removed = b.delete(resource, uid.as_deref())?;
                        if !removed {
                            kept.insert(message.header.id.clone());
                        }
                    }
                    Plan::Report => b.record_report(message)?,
                    Plan::LateResponse(Some(resource)) if is_object(&message.content) => {
                        b.upsert(resource, &message.content)?;
                    }
                    _ => {}
                }
            }
            Ok(kept)
        });
        (plans, result)
    })
    .await;
    let (plans, result) = match stored {
        Ok(done) => done,
        Err(err) => {
            tracing::error!(error = %err, "metamanager store task failed; batch not stored");
            return;
        }
    };
    let mut kept = HashSet::new();
    let stored = match result {
        Ok((refused, applied)) => {
            for change in applied.changes {
                // No subscriber is fine: the metaserver may be disabled.
                let _ = state.changes.send(change);
            }
            kept = refused;
            Ok(())
        }
        Err(err) => {
            tracing::error!(error = %err, "storing a batch of messages failed");
            Err(err.to_string())
        }
    };
    for (message, plan) in plans {
        let stale = kept.contains(&message.header.id);
        after_commit(state, bus, message, plan, stored.as_ref().err(), stale).await;
    }
}

async fn after_commit(
    state: &Arc<State>,
    bus: &Bus,
    message: Message,
    plan: Plan,
    store_error: Option<&String>,
    stale_delete: bool,
) {
    match plan {
        Plan::Store(_) | Plan::Remove(..) => {
            if let Some(error) = store_error {
                // Not ACKed: the cloud sends it again. Upstream's error frame (golden 23).
                let mut reply = Message::error_for(&message, format!("store failed: {error}"));
                reply.router.source = source::META_MANAGER.to_owned();
                send_to_hub(bus, reply).await;
                return;
            }
            if bus.contains(EDGED) {
                let _ = bus.send(EDGED, message.clone()).await;
            }
            if !stale_delete {
                forward_to_twin(bus, &message).await;
            }
            send_to_hub(bus, Message::ack_for(&message)).await;
        }
        Plan::Report => {
            if let Some(error) = store_error {
                answer(bus, &message, error_reply(&message, error));
            } else if state.connected() && state.claim(&message.router.resource) {
                tokio::spawn(send_reports(Arc::clone(state), bus.clone(), message));
            } else if state.connected() {
                let queued =
                    "kept: an earlier report for this resource is on its way; this one follows";
                answer(bus, &message, error_reply(&message, queued));
            } else {
                let kept = "the cloud is not connected; the report is kept and sent when it is";
                answer(bus, &message, error_reply(&message, kept));
            }
        }
        Plan::Forward => {
            if state.connected() {
                let (state, bus) = (Arc::clone(state), bus.clone());
                tokio::spawn(async move {
                    let reply = to_cloud(&bus, &message, state.settings.remote_query_timeout)
                        .await
                        .unwrap_or_else(|reason| error_reply(&message, &reason));
                    answer(&bus, &message, reply);
                });
            } else {
                answer(
                    bus,
                    &message,
                    error_reply(&message, "the cloud is not connected"),
                );
            }
        }
        Plan::Event => {
            if state.connected() {
                send_to_hub(bus, message).await;
            } else {
                tracing::debug!(resource = %message.router.resource, "event dropped: the cloud is not connected");
            }
        }
        Plan::Query(resource) => {
            tokio::spawn(query(Arc::clone(state), bus.clone(), message, resource));
        }
        Plan::LateResponse(_) => {
            if store_error.is_none() && message.router.operation != operation::ERROR {
                send_to_hub(bus, Message::ack_for(&message)).await;
            }
        }
        Plan::Connection(connected) => {
            let was = state.connected.swap(connected, Ordering::Relaxed);
            if connected && !was {
                tokio::spawn(flush_outbox(Arc::clone(state), bus.clone()));
            }
        }
        Plan::Ignore(reason) => {
            tracing::debug!(
                msg_id = %message.header.id,
                resource = %message.router.resource,
                operation = %message.router.operation,
                reason,
                "message ignored"
            );
        }
    }
}

/// Devices and device models, once stored, go on to devicetwin (as upstream's metamanager
/// does, with source `meta` and group `twin`).
async fn forward_to_twin(bus: &Bus, message: &Message) {
    let resource_type = WireResource::parse(&message.router.resource)
        .map(|r| r.resource_type)
        .unwrap_or_default();
    let device = [resource_type::DEVICE, resource_type::DEVICE_MODEL];
    if !device.contains(&resource_type.as_str()) || bus.group_members(group::TWIN).is_none() {
        return;
    }
    let mut forwarded = message.clone();
    forwarded.router.source = group::META.to_owned();
    forwarded.router.group = group::TWIN.to_owned();
    if let Err(err) = bus.send_to_group(group::TWIN, forwarded).await {
        tracing::warn!(%err, resource = %message.router.resource, "device not forwarded to devicetwin");
    }
}

/// Sends a stored report, drops it from the outbox once the cloud has answered, and goes on
/// with any newer report for the same resource. The caller has claimed the resource.
async fn send_reports(state: Arc<State>, bus: Bus, first: Message) {
    let mut report = first;
    loop {
        let reply = match to_cloud(&bus, &report, REPORT_TIMEOUT).await {
            Ok(reply) => reply,
            Err(reason) => {
                tracing::debug!(resource = %report.router.resource, reason, "report kept for later");
                answer(&bus, &report, error_reply(&report, &reason));
                state.release(&report.router.resource);
                return;
            }
        };
        let (writer, done) = (Arc::clone(&state), report.clone());
        let next = tokio::task::spawn_blocking(move || {
            if writer.lock().batch(|b| b.report_done(&done)).is_err() {
                tracing::warn!(resource = %done.router.resource, "answered report stays in the outbox");
            }
            writer.next_or_release(&done)
        })
        .await
        .ok()
        .flatten();
        answer(&bus, &report, reply);
        match next {
            // Its requester was answered when it was stored behind this one.
            Some(mut newer) => {
                newer.header.sync = false;
                report = newer;
            }
            None => return,
        }
    }
}

/// Sends everything the outbox holds, oldest first, a few at a time.
async fn flush_outbox(state: Arc<State>, bus: Bus) {
    let reader = Arc::clone(&state);
    let waiting = match tokio::task::spawn_blocking(move || reader.lock().outbox()).await {
        Ok(Ok(waiting)) => waiting,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "reading the outbox failed");
            return;
        }
        Err(_) => return,
    };
    if waiting.is_empty() {
        return;
    }
    tracing::info!(
        reports = waiting.len(),
        "sending reports kept while offline"
    );
    let mut sends = tokio::task::JoinSet::new();
    for report in waiting {
        if !state.connected() {
            break;
        }
        while sends.len() >= 16 {
            sends.join_next().await;
        }
        // The original requester stopped waiting long ago: send without answering it.
        let mut report = report;
        report.header.sync = false;
        if state.claim(&report.router.resource) {
            sends.spawn(send_reports(Arc::clone(&state), bus.clone(), report));
        }
    }
    while sends.join_next().await.is_some() {}
}

async fn query(state: Arc<State>, bus: Bus, request: Message, resource: WireResource) {
    if REMOTE_FIRST.contains(&resource.resource_type.as_str()) && state.connected() {
        match to_cloud(&bus, &request, state.settings.remote_query_timeout).await {
            Ok(reply) if is_object(&reply.content) => {
                let object = reply.content.clone();
                let writer = Arc::clone(&state);
                let key = resource.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    writer.lock().batch(|b| b.upsert(&key, &object))
                })
                .await;
                if let Ok(Ok((_, applied))) = stored {
                    for change in applied.changes {
                        let _ = state.changes.send(change);
                    }
                    // The cloud sent the answer through its reliable queue (golden 16/17).
                    send_to_hub(&bus, Message::ack_for(&reply)).await;
                }
                answer(&bus, &request, reply);
                return;
            }
            // The cloud answered with an error (not found, forbidden): that is the answer.
            Ok(reply) => {
                answer(&bus, &request, reply);
                return;
            }
            Err(reason) => {
                tracing::debug!(resource = %request.router.resource, reason, "answering from the local store");
            }
        }
    }
    let reader = Arc::clone(&state);
    let local = tokio::task::spawn_blocking(move || reader.lock().query(&resource)).await;
    let reply = match local {
        Ok(Ok(values)) => Message::response_to(&request, Value::from(values)),
        Ok(Err(err)) => error_reply(&request, &err.to_string()),
        Err(err) => error_reply(&request, &err.to_string()),
    };
    answer(&bus, &request, reply);
}

/// Sends `request` to the cloud under a fresh id and waits for the cloud's answer. `Err` when
/// it did not get there or nothing came back.
async fn to_cloud(bus: &Bus, request: &Message, timeout: Duration) -> Result<Message, String> {
    let mut outgoing = request.clone();
    outgoing.header.id = Message::new().header.id;
    outgoing.header.parent_id.clear();
    match bus.send_sync(source::EDGE_HUB, outgoing, timeout).await {
        // edgehub's own "could not send" answer echoes our source; the cloud's carries its own.
        Ok(reply)
            if reply.router.operation == operation::ERROR
                && EDGE_SOURCES.contains(&reply.router.source.as_str()) =>
        {
            Err(reply.content.as_str().unwrap_or("not sent").to_owned())
        }
        Ok(reply) => Ok(reply),
        Err(err) => Err(err.to_string()),
    }
}

/// Hands `reply` to the module waiting on `request`, if it waits.
fn answer(bus: &Bus, request: &Message, mut reply: Message) {
    if request.header.sync {
        reply.header.parent_id = request.header.id.clone();
        bus.send_resp(reply);
    }
}

fn error_reply(request: &Message, reason: &str) -> Message {
    let mut reply = Message::error_for(request, reason);
    reply.router.source = source::META_MANAGER.to_owned();
    reply
}

async fn send_to_hub(bus: &Bus, message: Message) {
    if let Err(err) = bus.send(source::EDGE_HUB, message).await {
        tracing::debug!(error = %err, "edgehub did not take the message");
    }
}

fn is_object(content: &Value) -> bool {
    content["metadata"].is_object()
}
