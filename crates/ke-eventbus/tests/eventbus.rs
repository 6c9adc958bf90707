//! The eventbus module on a real bus, with real MQTT clients (`mosquitto_pub`/`mosquitto_sub`)
//! and, for the external mode, a real mosquitto broker: device topics reach devicetwin, other
//! topics reach the cloud, publishes reach subscribers, and subscriptions survive a restart.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ke_bus::{BoxFuture, BusRuntime, Module, ModuleContext};
use ke_eventbus::{EventBus, EventBusSettings, Mode, SubTopics};
use ke_message::Message;
use ke_message::resource::topic_of_resource;
use tokio::sync::mpsc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stands in for a module of `group`, handing what it receives to the test.
struct Recorder {
    name: &'static str,
    group: &'static str,
    seen: mpsc::UnboundedSender<Message>,
}

impl Module for Recorder {
    fn name(&self) -> &str {
        self.name
    }
    fn group(&self) -> &str {
        self.group
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            while let Some(message) = ctx.recv().await {
                let _ = self.seen.send(message);
            }
            Ok(())
        })
    }
}

struct Node {
    runtime: BusRuntime,
    twin: mpsc::UnboundedReceiver<Message>,
    hub: mpsc::UnboundedReceiver<Message>,
}

fn settings(mode: Mode, internal: u16, external: u16) -> EventBusSettings {
    EventBusSettings {
        mode,
        internal: format!("127.0.0.1:{internal}"),
        external: format!("127.0.0.1:{external}"),
        retain: false,
        session_queue: 100,
        client_id: format!("hub-client-sub-test-{internal}-{external}"),
        credentials: None,
        tls: None,
        node_name: "edge-node-1".into(),
    }
}

async fn start(settings: EventBusSettings, topics: SubTopics) -> Node {
    let mut runtime = BusRuntime::new();
    let (twin_tx, twin) = mpsc::unbounded_channel();
    let (hub_tx, hub) = mpsc::unbounded_channel();
    runtime
        .register(Recorder {
            name: "twin",
            group: "twin",
            seen: twin_tx,
        })
        .unwrap();
    runtime
        .register(Recorder {
            name: "websocket",
            group: "hub",
            seen: hub_tx,
        })
        .unwrap();
    runtime
        .register(EventBus::bind(settings, topics).await.unwrap())
        .unwrap();
    runtime.start();
    Node { runtime, twin, hub }
}

fn client(program: &str, port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(args);
    command
}

/// Publishes once the broker listens (the module starts it a moment after `start`).
async fn publish(port: u16, topic: &str, payload: &str) {
    let args = ["-t", topic, "-m", payload];
    let out: Output = tokio::task::spawn_blocking({
        let args = args.map(str::to_owned);
        move || {
            let mut last = None;
            for _ in 0..50 {
                let out = client("mosquitto_pub", port, &args.each_ref().map(String::as_str))
                    .output()
                    .expect("mosquitto_pub (scripts/testenv installs mosquitto-clients)");
                if out.status.success() {
                    return out;
                }
                last = Some(out);
                std::thread::sleep(Duration::from_millis(100));
            }
            last.unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subscriber that prints one message (topic and payload) and exits.
fn subscribe(port: u16, filter: &str) -> Child {
    let child = client(
        "mosquitto_sub",
        port,
        &["-t", filter, "-C", "1", "-W", "10", "-v"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("mosquitto_sub");
    // mosquitto_sub has no "subscribed" signal; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    child
}

async fn output_of(child: Child) -> String {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn next(receiver: &mut mpsc::UnboundedReceiver<Message>, what: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 5 s"))
        .unwrap()
}

/// Device traffic into the bus and publishes out, through one broker.
async fn round_trip(node: &mut Node, pub_port: u16) {
    let topic = "$hw/events/device/default/thermometer-01/twin/update";
    let payload = r#"{"event_id":"","timestamp":0,"twin":{}}"#;
    publish(pub_port, topic, payload).await;
    let to_twin = next(&mut node.twin, "twin message").await;
    assert_eq!(to_twin.router.source, "bus");
    assert_eq!(to_twin.router.operation, "response");
    assert_eq!(
        topic_of_resource(&to_twin.router.resource).as_deref(),
        Some(topic)
    );
    assert_eq!(to_twin.content, serde_json::json!(payload));

    publish(pub_port, "SYS/dis/upload_records", "records").await;
    let to_hub = next(&mut node.hub, "upload").await;
    assert_eq!(to_hub.router.resource, "SYS/dis/upload_records");
    assert_eq!(to_hub.router.operation, "upload");

    let result = "$hw/events/device/default/thermometer-01/twin/update/result";
    let subscriber = subscribe(pub_port, result);
    node.runtime
        .bus()
        .send(
            "eventbus",
            Message::new()
                .with_route("twin", "bus", result, "publish")
                .with_content(r#"{"twin":{}}"#),
        )
        .await
        .unwrap();
    assert_eq!(
        output_of(subscriber).await,
        format!(r#"{result} {{"twin":{{}}}}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_carries_device_traffic_both_ways() {
    let port = free_port();
    let mut node = start(
        settings(Mode::Internal, port, free_port()),
        SubTopics::in_memory(),
    )
    .await;
    round_trip(&mut node, port).await;

    // A request the eventbus cannot perform is refused; the module goes on.
    let bad = Message::new().with_route("twin", "bus", "a/#", "publish");
    node.runtime.bus().send("eventbus", bad).await.unwrap();
    publish(port, "$hw/events/node/edge-node-1/membership/get", "{}").await;
    next(&mut node.twin, "membership get").await;
    assert!(
        node.runtime
            .shutdown(Duration::from_secs(5))
            .await
            .is_clean()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_broker_carries_device_traffic_both_ways() {
    let port = free_port();
    let mut mosquitto = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/testenv installs it)");
    let mut node = start(
        settings(Mode::External, free_port(), port),
        SubTopics::in_memory(),
    )
    .await;
    // The client subscribes once it has connected (it may retry while mosquitto starts):
    // probe until an upload comes through, then drain the probes.
    let mut subscribed = false;
    for _ in 0..30 {
        publish(port, "SYS/dis/upload_records", "probe").await;
        if tokio::time::timeout(Duration::from_millis(500), node.hub.recv())
            .await
            .is_ok()
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the eventbus never subscribed on mosquitto");
    tokio::time::sleep(Duration::from_millis(600)).await;
    while node.hub.try_recv().is_ok() {}
    round_trip(&mut node, port).await;
    assert!(
        node.runtime
            .shutdown(Duration::from_secs(5))
            .await
            .is_clean()
    );
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_kept_in_sub_topics_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edgecore.db");
    let open = || {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection
            .execute(
                "CREATE TABLE IF NOT EXISTS `sub_topics` (`topic` text,PRIMARY KEY (`topic`))",
                [],
            )
            .unwrap();
        SubTopics::new(connection)
    };
    let port = free_port();
    let mut node = start(settings(Mode::Internal, port, free_port()), open()).await;
    let subscribe = Message::new().with_route("router", "bus", "factory/line-1/#", "subscribe");
    node.runtime
        .bus()
        .send("eventbus", subscribe)
        .await
        .unwrap();
    publish(port, "factory/line-1/temperature", "21").await;
    let uploaded = next(&mut node.hub, "upload").await;
    assert_eq!(uploaded.router.resource, "factory/line-1/temperature");
    assert!(
        node.runtime
            .shutdown(Duration::from_secs(5))
            .await
            .is_clean()
    );

    let port = free_port();
    let mut node = start(settings(Mode::Internal, port, free_port()), open()).await;
    publish(port, "factory/line-1/pressure", "3").await;
    let uploaded = next(&mut node.hub, "upload after restart").await;
    assert_eq!(uploaded.router.resource, "factory/line-1/pressure");

    let unsubscribe = Message::new().with_route("router", "bus", "factory/line-1/#", "unsubscribe");
    node.runtime
        .bus()
        .send("eventbus", unsubscribe)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(port, "factory/line-1/pressure", "4").await;
    publish(port, "SYS/dis/upload_records", "marker").await;
    let next_upload = next(&mut node.hub, "marker").await;
    assert_eq!(next_upload.router.resource, "SYS/dis/upload_records");
    let kept: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sub_topics", [], |row| row.get(0))
        .unwrap();
    assert_eq!(kept, 0);
    assert!(
        node.runtime
            .shutdown(Duration::from_secs(5))
            .await
            .is_clean()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_serves_tls_and_checks_credentials() {
    use std::time::SystemTime;

    let dir = tempfile::tempdir().unwrap();
    let ca = ke_pki::CertificateAuthority::generate(SystemTime::now()).unwrap();
    let spec = ke_pki::ServerCertSpec {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns_names: vec![],
    };
    let cert = ke_pki::ServerCert::issue(&ca, &spec, SystemTime::now()).unwrap();
    let files = ke_eventbus::TlsFiles {
        ca: dir.path().join("rootCA.crt"),
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
    };
    std::fs::write(&files.ca, ca.ca_pem()).unwrap();
    cert.save(&files.cert, &files.key).unwrap();

    let port = free_port();
    let mut settings = settings(Mode::Internal, port, free_port());
    settings.tls = Some(files.clone());
    settings.credentials = Some(("mapper".into(), "s3cret".into()));
    let mut node = start(settings, SubTopics::in_memory()).await;
    let ca_file = files.ca.to_str().unwrap().to_owned();
    let publish_with = |args: Vec<&str>| {
        let mut all = vec!["--cafile", ca_file.as_str(), "-t", "$hw/events/upload/x"];
        all.extend(args);
        client("mosquitto_pub", port, &all).output().unwrap()
    };
    // The broker listens a moment after start.
    let mut sealed = publish_with(vec!["-u", "mapper", "-P", "s3cret", "-m", "sealed"]);
    for _ in 0..50 {
        if sealed.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        sealed = publish_with(vec!["-u", "mapper", "-P", "s3cret", "-m", "sealed"]);
    }
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let uploaded = next(&mut node.hub, "the TLS client's message").await;
    assert_eq!(uploaded.content, serde_json::json!("sealed"));
    let wrong = publish_with(vec!["-u", "mapper", "-P", "guess", "-m", "x"]);
    assert!(!wrong.status.success(), "a wrong password was accepted");
    let plain = client("mosquitto_pub", port, &["-t", "a", "-m", "open"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain MQTT on the TLS port was accepted"
    );
    assert!(
        node.runtime
            .shutdown(Duration::from_secs(5))
            .await
            .is_clean()
    );
}
