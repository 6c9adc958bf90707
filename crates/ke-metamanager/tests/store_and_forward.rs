//! metamanager on a real SQLite file and a real bus, with a stand-in for edgehub that plays the
//! cloud: ACK only after storing, reports kept offline and sent on reconnect, queries answered
//! by the cloud when it can and by the local store when it cannot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ke_bus::{Bus, BusRuntime, Module, ModuleContext};
use ke_message::Message;
use ke_message::constants::{content, operation, resource_type};
use ke_metamanager::{MetaManager, MetaManagerSettings, Tables};
use serde_json::{Value, json};

/// Plays edgehub + cloud: records what reaches the cloud, answers what waits for an answer
/// (`ObjectResp` with the request's object), and fails requests while "offline".
#[derive(Clone, Default)]
struct Cloud {
    received: Arc<Mutex<Vec<Message>>>,
    offline: Arc<AtomicBool>,
    /// When set, every stored pod must already be in the database when its ACK arrives.
    database: Option<std::path::PathBuf>,
}

impl Module for Cloud {
    fn name(&self) -> &str {
        "websocket"
    }
    fn group(&self) -> &str {
        "hub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                if is_ack(&message)
                    && let Some(db) = &self.database
                {
                    let stored = rusqlite::Connection::open(db)?.query_row(
                        "SELECT count(*) FROM meta WHERE key = ?1",
                        [&message.router.resource],
                        |row| row.get::<_, i64>(0),
                    )?;
                    assert_eq!(stored, 1, "ACK before the object was stored");
                }
                if message.header.sync {
                    let reply = if self.offline.load(Ordering::Relaxed) {
                        Message::error_for(&message, "not sent to the cloud: offline")
                    } else {
                        let mut reply = Message::response_to(&message, cloud_answer(&message));
                        reply.router.source = "edgecontroller".into();
                        reply
                    };
                    ctx.bus().send_resp(reply);
                }
                if !self.offline.load(Ordering::Relaxed) {
                    self.received.lock().unwrap().push(message);
                }
            }
            Ok(())
        })
    }
}

/// An edge's acknowledgement of something a cloud controller sent.
fn is_ack(message: &Message) -> bool {
    message.router.operation == operation::RESPONSE && message.router.source == "edgecontroller"
}

/// What upstream's edgecontroller answers: a queried ConfigMap itself (golden 16), an
/// `ObjectResp` for everything else (golden 08).
fn cloud_answer(request: &Message) -> Value {
    if request.router.resource.contains("/configmap/") {
        json!({"kind": "ConfigMap", "apiVersion": "v1",
               "metadata": {"name": "cfg", "namespace": "default", "uid": "c1", "resourceVersion": "9"},
               "data": {"from": "cloud"}})
    } else {
        json!({"Object": {"metadata": {"name": "x"}}, "Err": null})
    }
}

async fn start(dir: &std::path::Path, cloud: Cloud) -> (BusRuntime, Bus) {
    let meta = MetaManager::open(MetaManagerSettings {
        database: dir.join("edgecore.db"),
        remote_query_timeout: Duration::from_secs(2),
        tables: Tables {
            device_twin: true,
            event_bus: true,
            service_bus: false,
        },
    })
    .unwrap();
    let mut runtime = BusRuntime::new();
    runtime.register(meta).unwrap();
    runtime.register(cloud).unwrap();
    runtime.start();
    let bus = runtime.bus().clone();
    (runtime, bus)
}

async fn connection(bus: &Bus, status: &str) {
    let event = Message::new()
        .with_route(
            "edgehub",
            "meta",
            resource_type::NODE_CONNECTION,
            operation::CONNECT,
        )
        .with_content(status);
    bus.send("metamanager", event).await.unwrap();
}

async fn edge_request(bus: &Bus, resource: &str, op: &str, content: Value) -> Message {
    let request = Message::new()
        .with_route("edged", "meta", resource, op)
        .with_content(content);
    bus.send_sync("metamanager", request, Duration::from_secs(10))
        .await
        .unwrap()
}

/// Polls for up to 30 s: every report costs an fsync, which a loaded CI machine can make slow.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn pod(name: &str, rv: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": rv}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_objects_are_acked_only_once_stored_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud {
        database: Some(dir.path().join("edgecore.db")),
        ..Cloud::default()
    };
    let (runtime, bus) = start(dir.path(), cloud.clone()).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        let insert = Message::new()
            .with_route(
                "edgecontroller",
                "resource",
                format!("default/pod/p{i}"),
                "insert",
            )
            .with_content(pod(&format!("p{i}"), "5"));
        ids.push(insert.header.id.clone());
        bus.send("metamanager", insert).await.unwrap();
    }
    eventually("300 ACKs", || cloud.received.lock().unwrap().len() == 300).await;
    let acked: Vec<String> = cloud
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.header.parent_id.clone())
        .collect();
    assert_eq!(acked, ids, "one ACK per message, in order");
    runtime.shutdown(Duration::from_secs(5)).await;

    // A new process reads what the old one stored.
    let (_runtime, bus) = start(dir.path(), Cloud::default()).await;
    let reply = edge_request(&bus, "default/pod", operation::QUERY, Value::Null).await;
    assert_eq!(
        reply.content.as_array().map(Vec::len),
        Some(300),
        "{:?}",
        reply.content
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_made_offline_are_sent_newest_first_when_the_cloud_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::default();
    cloud.offline.store(true, Ordering::Relaxed);
    let (_runtime, bus) = start(dir.path(), cloud.clone()).await;

    for beat in 1..=3 {
        let patch = json!({"status": {"beat": beat}}).to_string();
        let reply = edge_request(
            &bus,
            "null/nodepatch/edge-1",
            operation::PATCH,
            patch.into(),
        )
        .await;
        assert_eq!(reply.router.operation, operation::ERROR);
        assert!(
            reply.content.as_str().unwrap().contains("kept"),
            "{:?}",
            reply.content
        );
    }
    let status =
        json!({"metadata": {"uid": "uid-web"}, "status": {"phase": "Running"}}).to_string();
    edge_request(
        &bus,
        "default/podpatch/web",
        operation::PATCH,
        status.into(),
    )
    .await;

    cloud.offline.store(false, Ordering::Relaxed);
    connection(&bus, content::CLOUD_CONNECTED).await;
    eventually("both kept reports at the cloud", || {
        cloud.received.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = cloud.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        2,
        "only the newest node status is sent: {received:?}"
    );
    let nodepatch = received
        .iter()
        .find(|m| m.router.resource == "null/nodepatch/edge-1")
        .expect("the node status");
    assert_eq!(
        nodepatch.content,
        json!({"status": {"beat": 3}}).to_string()
    );
    assert!(
        received
            .iter()
            .any(|m| m.router.resource == "default/podpatch/web")
    );

    // Answered reports leave the outbox: a later reconnect sends nothing again.
    connection(&bus, content::CLOUD_DISCONNECTED).await;
    connection(&bus, content::CLOUD_CONNECTED).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cloud.received.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_go_to_the_cloud_when_connected_and_to_the_store_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::default();
    let (_runtime, bus) = start(dir.path(), cloud.clone()).await;
    let local = json!({"metadata": {"name": "cfg", "namespace": "default", "uid": "c1", "resourceVersion": "3"},
                       "data": {"from": "store"}});
    bus.send(
        "metamanager",
        Message::new()
            .with_route(
                "edgecontroller",
                "resource",
                "default/configmap/cfg",
                "insert",
            )
            .with_content(local),
    )
    .await
    .unwrap();
    eventually("the ConfigMap's ACK", || {
        cloud.received.lock().unwrap().len() == 1
    })
    .await;

    // Not connected: the stored copy answers.
    let reply = edge_request(&bus, "default/configmap/cfg", operation::QUERY, Value::Null).await;
    let values = reply
        .content
        .as_array()
        .expect("local answers are lists of values");
    assert!(
        values[0].as_str().unwrap().contains("\"from\":\"store\""),
        "{values:?}"
    );

    // Connected: the cloud answers, its copy is stored, and its answer is acknowledged.
    connection(&bus, content::CLOUD_CONNECTED).await;
    let reply = edge_request(&bus, "default/configmap/cfg", operation::QUERY, Value::Null).await;
    assert_eq!(
        reply.content["data"]["from"], "cloud",
        "{:?}",
        reply.content
    );
    eventually("the query and the ACK of its answer", || {
        cloud.received.lock().unwrap().len() == 3
    })
    .await;
    connection(&bus, content::CLOUD_DISCONNECTED).await;
    let reply = edge_request(&bus, "default/configmap/cfg", operation::QUERY, Value::Null).await;
    assert!(
        reply.content[0]
            .as_str()
            .unwrap()
            .contains("\"from\":\"cloud\""),
        "{:?}",
        reply.content
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_for_one_resource_reach_the_cloud_in_order_and_the_newest_last() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::default();
    let (_runtime, bus) = start(dir.path(), cloud.clone()).await;
    connection(&bus, content::CLOUD_CONNECTED).await;
    for beat in 1..=50 {
        let report = Message::new()
            .with_route("edged", "meta", "null/nodepatch/edge-1", operation::PATCH)
            .with_content(json!({"status": {"beat": beat}}).to_string());
        bus.send("metamanager", report).await.unwrap();
    }
    let beat = |m: &Message| -> u64 {
        serde_json::from_str::<Value>(m.content.as_str().unwrap()).unwrap()["status"]["beat"]
            .as_u64()
            .unwrap()
    };
    eventually("the newest report at the cloud", || {
        cloud
            .received
            .lock()
            .unwrap()
            .last()
            .is_some_and(|m| beat(m) == 50)
    })
    .await;
    let beats: Vec<u64> = cloud.received.lock().unwrap().iter().map(beat).collect();
    assert!(
        beats.windows(2).all(|w| w[0] < w[1]),
        "out of order: {beats:?}"
    );
}
